"""The gRPC service the tests serve for real, on ``grpc.server`` and on ``grpc.aio.server``.

No protoc: generic handlers with JSON bytes. Each method answers with what its handler saw
(``meshprop.request_id()``, ``trace_id()``, ``current()``, ``deadline()``); ``Metadata``
answers with the metadata it received, for the client tests; the ``Wait`` methods hold the call
(up to ``{"seconds": ...}``, else ``HOLD``) until the server stops. A probe interceptor sits
outside meshprop's and records each call that reaches the application, and what grpc's side of
the call sees between and after the handler's messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

import meshprop
import meshprop.grpc
from meshprop._snapshot import CURRENT, exception_request_id

SERVICE = "meshprop.test.Probe"
WAIT = 10.0  # seconds a handler waits for its concurrent peers: a bound, never a timing
HOLD = 30.0  # seconds a Wait method holds its call, unless the server stops first

View = dict[str, Any]


def method(name: str) -> str:
    return f"/{SERVICE}/{name}"


def rpc(channel: Any, kind: str, name: str) -> Any:
    """The callable of one method on ``channel`` (sync or aio): ``kind`` is ``unary_unary``,
    ``unary_stream``, ``stream_unary`` or ``stream_stream``. Bytes in, bytes out."""
    return getattr(channel, kind)(method(name))


def view() -> View:
    return {
        "request_id": meshprop.request_id(),
        "trace_id": meshprop.trace_id(),
        "current": dict(meshprop.current()),
        "deadline": meshprop.deadline(),
    }


def metadata_view(metadata: Iterable[tuple[str, str | bytes]]) -> list[list[str]]:
    """Received metadata as JSON, sorted (grpc moves the keys it knows, such as
    ``traceparent``, to the front): a binary value as ``b64:`` and its base64 text."""
    return sorted(
        [key, value if isinstance(value, str) else "b64:" + base64.b64encode(value).decode()]
        for key, value in metadata
        if key != "user-agent"
    )


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def loads(data: bytes) -> Any:
    return json.loads(data or b"{}")


@dataclass
class Probe:
    """What grpc's side of each call sees, outside meshprop's interceptor."""

    between: list[object] = field(default_factory=list)  # CURRENT between streamed messages
    after: list[object] = field(default_factory=list)  # CURRENT once the handler is done
    error_ids: list[str | None] = field(default_factory=list)  # ids marked on escaping errors
    closed_ids: list[str | None] = field(default_factory=list)  # ids a cancelled stream saw
    stream_closed: threading.Event = field(default_factory=threading.Event)
    methods: list[str] = field(default_factory=list)  # every call that reached the app


@dataclass
class Served:
    target: str
    probe: Probe
    config: meshprop.Config | None
    release: threading.Event = field(default_factory=threading.Event)  # ends the Wait methods


class Rendezvous:
    """Holds each of ``parties`` concurrent calls until all of them are in their handlers."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=WAIT)
        self.parties = parties
        self.arrived = 0
        self.event: asyncio.Event | None = None

    async def wait_async(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        self.arrived += 1
        if self.arrived == self.parties:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), WAIT)


def _sync_handlers(served: Served, rendezvous: dict[str, Rendezvous]) -> dict[str, Any]:
    probe = served.probe

    def downstream(order: dict[str, Any]) -> Any:
        target = order["call"]
        caller_metadata = tuple(tuple(pair) for pair in order.get("metadata", ()))
        interceptor = meshprop.grpc.client_interceptor(target, served.config)
        with grpc.insecure_channel(target) as plain:
            channel = grpc.intercept_channel(plain, interceptor)
            reply = rpc(channel, "unary_unary", order.get("method", "Metadata"))(
                b"{}", metadata=caller_metadata, timeout=WAIT
            )
        return loads(reply)

    def hold(order: dict[str, Any]) -> View:
        seen = view()
        served.release.wait(order.get("seconds", HOLD))
        return seen

    def wait(request: bytes, context: grpc.ServicerContext) -> bytes:
        return dumps(hold(loads(request)))

    def wait_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield dumps(hold(loads(request)))

    def wait_collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        return dumps(hold(loads(next(requests, b""))))

    def wait_chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        yield dumps(hold(loads(next(requests, b""))))

    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        order = loads(request)
        seen = view()
        if "rendezvous" in order:
            rendezvous[order["rendezvous"]].barrier.wait()
            seen["after_wait"] = view()
        if "call" in order:
            seen["downstream"] = downstream(order)
        return dumps(seen)

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in range(3):
            yield dumps(view())

    def endless(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        try:
            for _ in range(100_000):
                yield dumps(view())
        finally:
            probe.closed_ids.append(meshprop.request_id())
            probe.stream_closed.set()

    def collect(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        seen = [view() for _ in requests]
        return dumps({"while_reading": seen, **view()})

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        for _ in requests:
            yield dumps(view())

    def metadata(request: bytes, context: grpc.ServicerContext) -> bytes:
        return dumps(metadata_view(context.invocation_metadata()))

    def own_metadata(request: bytes, context: grpc.ServicerContext) -> bytes:
        context.send_initial_metadata((("x-app", "own"),))
        return b"{}"

    def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("the handler failed")

    return {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
        "OwnMetadata": grpc.unary_unary_rpc_method_handler(own_metadata),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        **_wait_methods(wait, wait_stream, wait_collect, wait_chat),
    }


def _wait_methods(*behaviors: Any) -> dict[str, Any]:
    """The Wait methods, one of each kind."""
    unary_unary, unary_stream, stream_unary, stream_stream = behaviors
    return {
        "Wait": grpc.unary_unary_rpc_method_handler(unary_unary),
        "WaitStream": grpc.unary_stream_rpc_method_handler(unary_stream),
        "WaitCollect": grpc.stream_unary_rpc_method_handler(stream_unary),
        "WaitChat": grpc.stream_stream_rpc_method_handler(stream_stream),
    }


def _aio_handlers(served: Served, rendezvous: dict[str, Rendezvous]) -> dict[str, Any]:
    probe = served.probe

    async def downstream(order: dict[str, Any]) -> Any:
        target = order["call"]
        caller_metadata = tuple(tuple(pair) for pair in order.get("metadata", ()))
        interceptors = meshprop.grpc.aio_client_interceptors(target, served.config)
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            reply = await rpc(channel, "unary_unary", order.get("method", "Metadata"))(
                b"{}", metadata=caller_metadata, timeout=WAIT
            )
        return loads(reply)

    async def hold(order: dict[str, Any]) -> View:
        seen = view()
        await asyncio.to_thread(served.release.wait, order.get("seconds", HOLD))
        return seen

    async def first(requests: AsyncIterator[bytes]) -> Any:
        async for request in requests:
            return loads(request)
        return {}

    async def wait(request: bytes, context: Any) -> bytes:
        return dumps(await hold(loads(request)))

    async def wait_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield dumps(await hold(loads(request)))

    async def wait_collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        return dumps(await hold(await first(requests)))

    async def wait_chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        yield dumps(await hold(await first(requests)))

    async def unary(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        order = loads(request)
        seen = view()
        if "rendezvous" in order:
            await rendezvous[order["rendezvous"]].wait_async()
            seen["after_wait"] = view()
        if "call" in order:
            seen["downstream"] = await downstream(order)
        return dumps(seen)

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(3):
            await asyncio.sleep(0)
            yield dumps(view())

    async def endless(request: bytes, context: Any) -> AsyncIterator[bytes]:
        try:
            for _ in range(100_000):
                yield dumps(view())
        finally:
            probe.closed_ids.append(meshprop.request_id())
            probe.stream_closed.set()

    async def write_stream(request: bytes, context: Any) -> None:
        for _ in range(3):
            await context.write(dumps(view()))

    async def collect(requests: AsyncIterator[bytes], context: Any) -> bytes:
        seen = [view() async for _ in requests]
        return dumps({"while_reading": seen, **view()})

    async def chat(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
        async for _ in requests:
            yield dumps(view())

    async def metadata(request: bytes, context: Any) -> bytes:
        return dumps(metadata_view(context.invocation_metadata()))

    async def own_metadata(request: bytes, context: Any) -> bytes:
        await context.send_initial_metadata((("x-app", "own"),))
        return b"{}"

    async def fail(request: bytes, context: Any) -> bytes:
        raise RuntimeError("the handler failed")

    def threaded(request: bytes, context: Any) -> bytes:
        return dumps(view())  # a plain function: grpc.aio runs it in its thread pool

    return {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
        "WriteStream": grpc.unary_stream_rpc_method_handler(write_stream),
        "Collect": grpc.stream_unary_rpc_method_handler(collect),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
        "OwnMetadata": grpc.unary_unary_rpc_method_handler(own_metadata),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Threaded": grpc.unary_unary_rpc_method_handler(threaded),
        **_wait_methods(wait, wait_stream, wait_collect, wait_chat),
    }


class _SyncProbe(grpc.ServerInterceptor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.probe.methods.append(details.method)
        handler = continuation(details)
        return None if handler is None else _probed(handler, self.probe)


class _AioProbe(grpc.aio.ServerInterceptor):
    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        self.probe.methods.append(details.method)
        handler = await continuation(details)
        return None if handler is None else _probed(handler, self.probe)


def _probed(handler: Any, probe: Probe) -> Any:
    """``handler`` with each behavior wrapped to record CURRENT around it (not its id: what
    grpc's side would see), keeping the behavior's kind as grpc tells kinds apart."""
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    behavior = getattr(handler, kind)

    def record_error(error: BaseException) -> None:
        probe.error_ids.append(exception_request_id(error))

    if inspect.isasyncgenfunction(behavior):

        async def probed_async_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request, context):
                    probe.between.append(CURRENT.get())
                    yield response
            finally:
                probe.after.append(CURRENT.get())

        wrapped: Any = probed_async_stream
    elif inspect.iscoroutinefunction(behavior):

        async def probed_async(request: Any, context: Any) -> Any:
            try:
                return await behavior(request, context)
            except BaseException as error:
                record_error(error)
                raise
            finally:
                probe.after.append(CURRENT.get())

        wrapped = probed_async
    elif handler.response_streaming:

        def probed_stream(request: Any, context: Any) -> Iterator[Any]:
            responses = behavior(request, context)
            try:
                for response in responses:
                    probe.between.append(CURRENT.get())
                    yield response
            finally:
                with contextlib.suppress(AttributeError):
                    responses.close()
                probe.after.append(CURRENT.get())

        wrapped = probed_stream
    else:

        def probed(request: Any, context: Any) -> Any:
            try:
                return behavior(request, context)
            except BaseException as error:
                record_error(error)
                raise
            finally:
                probe.after.append(CURRENT.get())

        wrapped = probed
    build = getattr(grpc, f"{kind}_rpc_method_handler")
    return build(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


@contextlib.contextmanager
def serving_sync(
    config: meshprop.Config | None = None, rendezvous: dict[str, Rendezvous] | None = None
) -> Iterator[Served]:
    """A ``grpc.server`` on 127.0.0.1 (a free port), meshprop's interceptor inside the probe."""
    served = Served("", Probe(), config)
    executor = futures.ThreadPoolExecutor(max_workers=16)
    server = grpc.server(
        executor,
        interceptors=[_SyncProbe(served.probe), meshprop.grpc.server_interceptor(config)],
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE, _sync_handlers(served, rendezvous or {})),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    served.target = f"127.0.0.1:{port}"
    server.start()
    try:
        yield served
    finally:
        served.release.set()
        server.stop(None).wait(WAIT)
        executor.shutdown(wait=True)


@contextlib.contextmanager
def serving_aio(
    config: meshprop.Config | None = None, rendezvous: dict[str, Rendezvous] | None = None
) -> Iterator[Served]:
    """A ``grpc.aio.server`` on 127.0.0.1, on an event loop of its own in a thread, so the
    same synchronous test code calls both servers."""
    served = Served("", Probe(), config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-aio-server", daemon=True)
    thread.start()

    async def start() -> grpc.aio.Server:
        server = grpc.aio.server(
            interceptors=[_AioProbe(served.probe), meshprop.grpc.aio_server_interceptor(config)],
            migration_thread_pool=futures.ThreadPoolExecutor(max_workers=4),
        )
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE, _aio_handlers(served, rendezvous or {})
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        served.target = f"127.0.0.1:{port}"
        await server.start()
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(WAIT)
    try:
        yield served
    finally:
        served.release.set()
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(WAIT)
        asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(WAIT)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT)
        loop.close()


SERVERS = {"grpc.server": serving_sync, "grpc.aio.server": serving_aio}


@contextlib.contextmanager
def recording_http2() -> Iterator[tuple[str, list[dict[bytes, bytes]]]]:
    """A bare HTTP/2 listener on 127.0.0.1 that records the headers of the first request on
    its one connection and hangs up: what a gRPC client put on the wire."""
    import socket

    import h2.config
    import h2.connection
    import h2.events

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(WAIT)
    requests: list[dict[bytes, bytes]] = []

    def serve() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as connection:
            connection.settimeout(WAIT)
            settings = h2.config.H2Configuration(client_side=False, header_encoding=None)
            http2 = h2.connection.H2Connection(settings)
            http2.initiate_connection()
            connection.sendall(http2.data_to_send())
            for _ in range(100):
                data = connection.recv(65536)
                if not data:
                    return
                for event in http2.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        requests.append(dict(event.headers or ()))
                        return
                connection.sendall(http2.data_to_send())

    thread = threading.Thread(target=serve, name="http2-recorder", daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        thread.join(WAIT)
        listener.close()
