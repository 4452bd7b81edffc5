"""gRPC (grpcio): server interceptors that capture each call's metadata, and client interceptors
that forward it.

Envoy traces a gRPC call like any HTTP/2 request, so a gRPC service in the mesh must copy the
same headers onto its outbound calls, as metadata. Server side::

    server = grpc.server(executor, interceptors=[meshprop.grpc.server_interceptor()])
    server = grpc.aio.server(interceptors=[meshprop.grpc.aio_server_interceptor()])

The handler runs with the call's snapshot in the context, for all four kinds of method; a
streamed response keeps it while each message is produced, and the snapshot is reset once the
stream is exhausted, fails or is cancelled.

Binary (``-bin``) metadata is forwarded only when the Config names it. It arrives as bytes and
is kept as its base64 text, the form it has on the wire and in an HTTP request; a gRPC client
sends the bytes that text stands for, so they leave as they came. ``grpc-trace-bin`` (the
``stackdriver`` preset) is the exception on the way in: grpcio's core keeps it to itself and
never hands it to the application, so only one that came in over HTTP can be forwarded.

Echo: the call's request id goes back as initial metadata, sent once the handler has returned
(a unary response) or produced its first message (a streamed one) — the last moment before
grpc sends its own. Initial metadata is sent once per call, so a handler that sends its own
keeps it as it is (without ``x-request-id`` unless it added one). There is none on a handler
that streams with ``await context.write()`` (its first write sends grpc's), nor on a plain
function served by ``grpc.aio.server``'s thread pool (its context can only send from a
coroutine).

Client side: a channel names its destination once, so the interceptors are given the channel's
target, and the scope is decided on it (``host:port``, ``dns:///host:port``, ``ipv4:``,
``ipv6:``; a ``unix:`` socket counts as ``localhost``; an unreadable target gets nothing)::

    channel = grpc.intercept_channel(
        grpc.insecure_channel(target), meshprop.grpc.client_interceptor(target)
    )
    channel = grpc.aio.insecure_channel(
        target, interceptors=meshprop.grpc.aio_client_interceptors(target)
    )

Metadata the caller set wins (and its own trace metadata makes the trace context its own);
a forwarded header whose name or value gRPC would refuse as metadata is left out.

Deadline: grpc reads a call's ``grpc-timeout`` itself and never hands it to the application,
so the handler's ``meshprop.deadline()`` is what is left of the call's own deadline, or of
``x-envoy-expected-rq-timeout-ms`` where that is nearer. With ``Config(cap_timeouts=True)``
the client interceptors lower a call's timeout to what the caller has left (never raise it),
in or outside the scope, and grpc sends it on; a call made once nothing is left fails at once
with grpc's own ``DEADLINE_EXCEEDED``, before it is sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import inspect
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextvars import copy_context
from typing import Any, NamedTuple

from ._extras import require

require("grpc", "grpc")

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from . import _deadline  # noqa: E402
from ._capture import capture_pairs  # noqa: E402
from ._config import Config  # noqa: E402
from ._grpc_target import target_hosts  # noqa: E402
from ._outbound import (  # noqa: E402
    RECORDERS,
    EncodedCache,
    headers_for_host,
    names_to_add,
    record_call,
    watched_names,
)
from ._plan import Plan, plan_for  # noqa: E402
from ._snapshot import CURRENT, Snapshot, mark_exception  # noqa: E402

__all__ = [
    "aio_client_interceptors",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
]

Metadata = tuple[tuple[str, str | bytes], ...]
Behavior = Callable[..., Any]

_END = object()  # what next() returns once a streamed response is done
_is_metadata_key = re.compile(r"[0-9a-z_.-]+", re.ASCII).fullmatch
_BINARY_SUFFIX = "-bin"


# -- server --------------------------------------------------------------------------------


def server_interceptor(config: Config | None = None) -> grpc.ServerInterceptor:
    """The interceptor for ``grpc.server(..., interceptors=[...])``."""
    return _ServerInterceptor(plan_for(config))


def aio_server_interceptor(config: Config | None = None) -> grpc.aio.ServerInterceptor:
    """The interceptor for ``grpc.aio.server(interceptors=[...])``."""
    return _AioServerInterceptor(plan_for(config))


class _ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._echo_name = _echo_name(plan)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        metadata = handler_call_details.invocation_metadata or ()
        plan, echo_name = self._plan, self._echo_name
        return _rebuilt(
            handler, lambda behavior, streams: _served(behavior, streams, metadata, plan, echo_name)
        )


class _AioServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._echo_name = _echo_name(plan)

    async def intercept_service(
        self,
        continuation: Callable[..., Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler: grpc.RpcMethodHandler[Any, Any] | None = await continuation(handler_call_details)
        if handler is None:
            return None
        metadata = handler_call_details.invocation_metadata or ()
        plan, echo_name = self._plan, self._echo_name

        def wrap(behavior: Behavior, streams: bool) -> Behavior:
            # grpc.aio tells the kinds apart the same way: an async generator streams, a
            # coroutine function is awaited, anything else runs in the server's thread pool.
            if inspect.isasyncgenfunction(behavior):
                return _served_async_stream(behavior, metadata, plan, echo_name)
            if inspect.iscoroutinefunction(behavior):
                return _served_async(behavior, metadata, plan, echo_name)
            return _served(behavior, streams, metadata, plan, None)

        return _rebuilt(handler, wrap)


def _echo_name(plan: Plan) -> str | None:
    name = plan.echo_name
    return name if name is not None and _is_metadata_key(name) else None


def _rebuilt(
    handler: grpc.RpcMethodHandler[Any, Any], wrap: Callable[[Behavior, bool], Behavior]
) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with its behavior wrapped, built with grpc's public constructors."""
    serializers = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        assert handler.stream_stream is not None
        return grpc.stream_stream_rpc_method_handler(
            wrap(handler.stream_stream, True), **serializers
        )
    if handler.request_streaming:
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False), **serializers
        )
    if handler.response_streaming:
        assert handler.unary_stream is not None
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, True), **serializers)
    assert handler.unary_unary is not None
    return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, False), **serializers)


def _capture(
    metadata: Iterable[tuple[str, str | bytes]],
    plan: Plan,
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> Snapshot:
    """The call's snapshot. Its deadline is the call's own (grpc reads ``grpc-timeout`` itself
    and never hands it over as metadata), or ``x-envoy-expected-rq-timeout-ms`` where that is
    nearer."""
    snapshot = capture_pairs(_inbound_pairs(metadata, plan), plan)
    seconds = _call_time_left(context)
    if seconds is not None:
        snapshot.deadline_at = _deadline.nearer(snapshot.deadline_at, seconds)
    return snapshot


def _call_time_left(
    context: grpc.ServicerContext | grpc.aio.ServicerContext[Any, Any],
) -> float | None:
    """Seconds left of the call's deadline, None without one (``grpc.aio`` says None,
    ``grpc.server`` a time longer than any ``grpc-timeout``)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _deadline.LONGEST_GRPC_TIMEOUT:
        return None
    return max(0.0, remaining)


def _inbound_pairs(
    metadata: Iterable[tuple[str, str | bytes]], plan: Plan
) -> Iterator[tuple[str, str]]:
    """The call's metadata as header pairs: a binary value as its base64 text without padding,
    as grpc writes it on the wire, and only for a name the plan forwards (the others are never
    read, so never encoded)."""
    forwarded = plan.forwarded_name_set
    prefixes = plan.prefixes
    for key, value in metadata:
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, bytes) and (
            key in forwarded or (prefixes and key.startswith(prefixes))
        ):
            yield key, _metadata_text(value)


def _served(
    behavior: Behavior,
    streams: bool,
    metadata: Iterable[tuple[str, str | bytes]],
    plan: Plan,
    echo_name: str | None,
) -> Behavior:
    """A plain function's behavior, run with the call's snapshot set.

    A streamed response runs in a copy of the thread's context made for this call (the way
    ``meshprop.wsgi`` runs a streamed body): each message is produced inside it, and the
    thread's own context never changes, whether grpc reads the stream to its end or drops it.
    """
    if streams:

        def serve_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            snapshot = _capture(metadata, plan, context)
            run = copy_context().run
            run(CURRENT.set, snapshot)
            try:
                responses = run(behavior, request, context)
            except BaseException as error:
                mark_exception(error, snapshot)
                snapshot.has_ended = True
                _echo(context, echo_name, snapshot)
                raise
            return _responses_in_context(responses, run, snapshot, context, echo_name)

        return serve_stream

    def serve(request: Any, context: grpc.ServicerContext) -> Any:
        snapshot = _capture(metadata, plan, context)
        token = CURRENT.set(snapshot)
        try:
            return behavior(request, context)
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)
            snapshot.has_ended = True
            _echo(context, echo_name, snapshot)

    return serve


def _responses_in_context(
    responses: Iterable[Any],
    run: Callable[..., Any],
    snapshot: Snapshot,
    context: grpc.ServicerContext,
    echo_name: str | None,
) -> Iterator[Any]:
    """The handler's messages, each produced in the call's context; the handler's iterator is
    closed in it too, so its ``finally`` blocks see the request when the client cancels."""
    iterator: Iterator[Any] | None = None
    echoed = echo_name is None
    try:
        iterator = run(iter, responses)
        while True:
            response = run(next, iterator, _END)
            if not echoed:
                echoed = True
                _echo(context, echo_name, snapshot)
            if response is _END:
                return
            yield response
    except GeneratorExit:
        raise
    except BaseException as error:
        mark_exception(error, snapshot)
        if not echoed:
            _echo(context, echo_name, snapshot)
        raise
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            run(close)
        snapshot.has_ended = True


def _served_async(
    behavior: Behavior,
    metadata: Iterable[tuple[str, str | bytes]],
    plan: Plan,
    echo_name: str | None,
) -> Behavior:
    """A coroutine behavior (a unary response, or a stream sent with ``context.write``)."""

    async def serve(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        snapshot = _capture(metadata, plan, context)
        failure: BaseException | None = None
        token = CURRENT.set(snapshot)
        try:
            return await behavior(request, context)
        except BaseException as error:
            failure = error
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)
            snapshot.has_ended = True
            if not isinstance(failure, asyncio.CancelledError):
                await _echo_async(context, echo_name, snapshot)

    return serve


def _served_async_stream(
    behavior: Behavior,
    metadata: Iterable[tuple[str, str | bytes]],
    plan: Plan,
    echo_name: str | None,
) -> Behavior:
    """An async generator behavior: the snapshot is set while each message is produced (and
    while the generator closes), and reset between them, so every set is reset in the task
    that made it, whichever task finally closes the stream."""

    async def serve_stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        snapshot = _capture(metadata, plan, context)
        responses: AsyncIterator[Any] = behavior(request, context)
        echoed = echo_name is None
        try:
            while True:
                token = CURRENT.set(snapshot)
                try:
                    response = await responses.__anext__()
                except StopAsyncIteration:
                    break
                except BaseException as error:
                    mark_exception(error, snapshot)
                    if not echoed and not isinstance(error, asyncio.CancelledError):
                        echoed = True
                        await _echo_async(context, echo_name, snapshot)
                    raise
                finally:
                    CURRENT.reset(token)
                if not echoed:
                    echoed = True
                    await _echo_async(context, echo_name, snapshot)
                yield response
            if not echoed:
                await _echo_async(context, echo_name, snapshot)
        finally:
            token = CURRENT.set(snapshot)
            try:
                aclose = getattr(responses, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                CURRENT.reset(token)
                snapshot.has_ended = True

    return serve_stream


def _echo(context: grpc.ServicerContext, name: str | None, snapshot: Snapshot) -> None:
    """Send the request id as initial metadata, unless the call has sent its own already."""
    if name is None or snapshot.request_id is None:
        return
    # Refused when the call has sent its own (ValueError) or the client has gone (RpcError).
    with contextlib.suppress(Exception):
        context.send_initial_metadata(((name, snapshot.request_id),))


async def _echo_async(
    context: grpc.aio.ServicerContext[Any, Any], name: str | None, snapshot: Snapshot
) -> None:
    if name is None or snapshot.request_id is None:
        return
    # Refused when the call has sent its own (UsageError) or the client has gone.
    with contextlib.suppress(Exception):
        await context.send_initial_metadata(((name, snapshot.request_id),))


# -- client --------------------------------------------------------------------------------


def client_interceptor(target: str, config: Config | None = None) -> _ClientInterceptor:
    """The interceptor for ``grpc.intercept_channel(grpc.insecure_channel(target), ...)``,
    for all four kinds of method. ``target`` is the channel's: a grpcio channel does not
    expose it, and the scope is decided on it."""
    return _ClientInterceptor(_Forwarding(target, plan_for(config)))


def aio_client_interceptors(
    target: str, config: Config | None = None
) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors for ``grpc.aio.insecure_channel(target, interceptors=...)``: one per
    kind of method, as grpc.aio files each interceptor under one kind only."""
    forwarding = _Forwarding(target, plan_for(config))
    return [
        _AioUnaryUnary(forwarding),
        _AioUnaryStream(forwarding),
        _AioStreamUnary(forwarding),
        _AioStreamStream(forwarding),
    ]


class _Forwarding:
    """What a call on one channel gets: the forwarded headers as metadata, for a target in
    the scope, the caller's metadata first and winning; and its timeout capped to the
    caller's deadline, when the plan says so."""

    __slots__ = ("_host", "in_scope", "plan", "target")

    def __init__(self, target: str, plan: Plan) -> None:
        self.target = target
        self.plan = plan
        hosts = target_hosts(target)
        self.in_scope = hosts is not None and all(plan.scope.includes_host(host) for host in hosts)
        # The host the core is asked about for each call (the scope is already decided).
        self._host = hosts[0] if hosts is not None and self.in_scope else None

    def decide(
        self, details: grpc.ClientCallDetails | grpc.aio.ClientCallDetails
    ) -> tuple[float | None, Metadata | None] | None:
        """The call's timeout and metadata (None: the caller's) as meshprop sends it, or None
        to send the call as it is."""
        metadata = self.metadata(details.metadata)
        if RECORDERS:
            _record(self, details.method, details.metadata, metadata)
        timeout = details.timeout
        if self.plan.cap_timeouts:
            timeout = _timeout_for_call(timeout, self.plan)
            if metadata is None and timeout == details.timeout:
                return None
        elif metadata is None:
            return None
        return timeout, metadata

    def metadata(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> Metadata | None:
        """The call's metadata with the forwarded headers added, or None to leave it as it is."""
        host = self._host
        if host is None:
            return None
        forwarded = headers_for_host(host, self.plan)
        if forwarded is None:
            return None
        encoded = _encoded.get(forwarded)
        if not metadata:
            return encoded.metadata
        caller = tuple(metadata)
        present = {str(key).lower() for key, _ in caller}
        if encoded.watched.isdisjoint(present):
            return (*caller, *encoded.metadata)
        names = names_to_add(forwarded, present)
        return (*caller, *(pair for pair in encoded.metadata if pair[0] in names))


class _Encoded:
    """One snapshot's headers as gRPC metadata: a name gRPC refuses as a key is left out, a
    ``-bin`` value is sent as the bytes its base64 text stands for (or left out if it stands
    for none)."""

    __slots__ = ("metadata", "watched")

    def __init__(self, forwarded: Mapping[str, str]) -> None:
        pairs: list[tuple[str, str | bytes]] = []
        for name, value in forwarded.items():
            if not _is_metadata_key(name):
                continue
            if name.endswith(_BINARY_SUFFIX):
                try:
                    pairs.append(
                        (name, base64.b64decode(value + "=" * (-len(value) % 4), validate=True))
                    )
                except (binascii.Error, ValueError):
                    continue
            else:
                pairs.append((name, value))
        self.metadata: Metadata = tuple(pairs)
        self.watched = watched_names(forwarded)


_encoded = EncodedCache(_Encoded)

#: The timeout of a call made once nothing is left of the caller's deadline: a deadline gone
#: a second ago, which grpc fails at once with its own DEADLINE_EXCEEDED, before the call is
#: sent. A timeout of 0 is not that: grpc rounds it up and usually sends the call anyway.
_DEADLINE_GONE = -1.0


def _timeout_for_call(timeout: float | None, plan: Plan) -> float | None:
    """The call's timeout, capped to what is left of the caller's deadline (never raised),
    whatever the scope: the caller's wait is the caller's wherever the call goes."""
    left = _deadline.time_left_for_call(plan)
    if left is None:
        return timeout
    if left <= 0.0:
        return _DEADLINE_GONE
    return _deadline.capped(timeout, left)


def _record(
    forwarding: _Forwarding,
    method: str | bytes,
    caller_metadata: Iterable[tuple[str, str | bytes]] | None,
    metadata: Metadata | None,
) -> None:
    """Hand the call to the recorders (``meshprop.testing``): what it carries, and the part
    meshprop added (the pairs after the caller's), binary values as their base64 text."""
    caller = tuple(caller_metadata or ())
    sent = caller if metadata is None else metadata
    added = {key: _metadata_text(value) for key, value in sent[len(caller) :]}
    record_call(
        "grpc",
        method.decode("ascii", "replace") if isinstance(method, bytes) else method,
        forwarding.target,
        added,
        forwarding.in_scope,
        tuple((key, _metadata_text(value)) for key, value in sent),
    )


def _metadata_text(value: str | bytes) -> str:
    """A metadata value as header text: a binary one as its base64 text without padding, as
    grpc writes it on the wire."""
    if isinstance(value, str):
        return value
    return base64.b64encode(value).decode("ascii").rstrip("=")


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Metadata | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncCallDetails(_CallDetails, grpc.ClientCallDetails):
    pass


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    @property
    def target(self) -> str:
        return self._forwarding.target

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        decided = self._forwarding.decide(details)
        if decided is None:
            return details
        timeout, metadata = decided
        return _SyncCallDetails(
            details.method,
            timeout,
            details.metadata if metadata is None else metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(
    forwarding: _Forwarding, details: grpc.aio.ClientCallDetails
) -> grpc.aio.ClientCallDetails:
    decided = forwarding.decide(details)
    if decided is None:
        return details
    timeout, metadata = decided
    return grpc.aio.ClientCallDetails(
        details.method,
        timeout,
        details.metadata if metadata is None else grpc.aio.Metadata(*metadata),
        details.credentials,
        details.wait_for_ready,
    )


class _AioUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(self._forwarding, client_call_details), request)


class _AioUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(self._forwarding, client_call_details), request)


class _AioStreamUnary(grpc.aio.StreamUnaryClientInterceptor):
    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(
            _aio_details(self._forwarding, client_call_details), request_iterator
        )


class _AioStreamStream(grpc.aio.StreamStreamClientInterceptor):
    def __init__(self, forwarding: _Forwarding) -> None:
        self._forwarding = forwarding

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(
            _aio_details(self._forwarding, client_call_details), request_iterator
        )
