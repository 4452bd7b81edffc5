"""Outbound calls from inside a request: httpx (sync and async) on ``MockTransport``, requests on
an in-memory adapter and, for ``instrument()`` (which patches ``http.client``), through urllib3
and ``http.client`` onto an in-memory socket, aiohttp against a local aiohttp server on
127.0.0.1.

Every batch runs inside a request context (``meshprop.bind`` and the hand-written ContextVar
both set to the Istio headers), so each variant has headers to forward; the bare client simply
ignores them. The destination is an in-mesh host, so meshprop does forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from typing import Any

from meshprop._snapshot import CURRENT

from . import _zero_code
from ._handwritten import TEAM_HEADERS, copy_into
from ._harness import Batch, Variant, async_batch, sync_batch
from ._otel import sdk_tracer_provider
from ._workload import ISTIO_HEADERS, OUTBOUND_URL

Around = Callable[[], AbstractContextManager[object]]
_HTTPX, _AIOHTTP = "meshprop.httpx", "meshprop.aiohttp"

_INCOMING_ID = dict(ISTIO_HEADERS)["x-request-id"]
#: The same headers as a literal ``headers=`` argument: what carrying them costs the client
#: itself, with no context lookup and no decision (a reference point, not an alternative).
_EXPLICIT = dict(ISTIO_HEADERS)
#: The same headers pre-encoded once, the way each client stores them, for the ``carry``
#: variants: attached at meshprop's hook point with no context lookup, no scope decision and no
#: check, so ``meshprop - carry`` is meshprop's own work and ``carry - bare`` the client's price
#: for carrying seven more headers (a reference point, not an alternative).
_CARRY_HTTPX_ENTRIES = tuple(
    (name.encode("latin-1"), name.encode("latin-1"), value.encode("latin-1"))
    for name, value in ISTIO_HEADERS
)
_CARRY_REQUESTS_STORE = {name: (name, value) for name, value in ISTIO_HEADERS}


def in_request(batch: Batch) -> Batch:
    """Run a batch as the code of an inbound request would: its headers in the context."""
    import meshprop

    def run(n: int) -> int:
        token = TEAM_HEADERS.set(dict(ISTIO_HEADERS))
        try:
            with meshprop.bind(ISTIO_HEADERS):
                return batch(n)
        finally:
            TEAM_HEADERS.reset(token)

    return run


class _Seen:
    """What the fake server saw last, to check a variant really forwards before timing it: the
    last request's headers as the server got them (kept, not read, while timing), or the bytes
    they came as (the in-memory socket)."""

    headers: Any = None
    sent: bytes | None = None
    #: Whether the local server's handler ran inside a meshprop request of its own: it is no
    #: part of the client under test, so it must never be (a server started under instrument()
    #: would be).
    server_captured = False

    def received(self, name: str) -> list[str]:
        """Every value of header ``name`` the last request carried."""
        if self.sent is not None:
            head = self.sent.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
            fields = (line.partition(b":") for line in head)
            wanted = name.lower().encode("latin-1")
            return [
                value.strip().decode("latin-1")
                for field, _, value in fields
                if field.strip().lower() == wanted
            ]
        headers = self.headers
        if headers is None:
            return []
        if hasattr(headers, "get_list"):  # httpx
            return list(headers.get_list(name))
        if hasattr(headers, "getall"):  # multidict (aiohttp)
            return list(headers.getall(name, ()))
        value = headers.get(name)  # requests' CaseInsensitiveDict: one value a name
        return [] if value is None else [value]


def _checked(name: str, batch: Batch, seen: _Seen, forwards: bool) -> Batch:
    """``batch``, once it has run one call: a variant that forwards must have sent the incoming
    x-request-id exactly once, and the fake server must not have captured a request of its own;
    a variant that fails either is not timed."""
    batch(1)
    received = seen.received("x-request-id")
    if forwards and received != [_INCOMING_ID]:
        raise RuntimeError(f"{name}: x-request-id was not forwarded once (got {received!r})")
    if seen.server_captured:
        raise RuntimeError(f"{name}: the server the client calls is instrumented too")
    return batch


# --- httpx -------------------------------------------------------------------------------------


def _httpx_transport(seen: _Seen) -> Any:
    import httpx

    def answer(request: httpx.Request) -> httpx.Response:
        seen.headers = request.headers
        return httpx.Response(200, json={"charge": "ok"})

    return httpx.MockTransport(answer)


def httpx_sync_variants(stack: ExitStack) -> list[Variant]:
    return _httpx_variants(stack, None)


def httpx_async_variants(stack: ExitStack, loop: asyncio.AbstractEventLoop) -> list[Variant]:
    return _httpx_variants(stack, loop)


def _httpx_variants(stack: ExitStack, loop: asyncio.AbstractEventLoop | None) -> list[Variant]:
    """The httpx variants, for ``httpx.Client`` without a loop and ``AsyncClient`` with one."""
    import httpx

    asynchronous = loop is not None
    plain_client: Any = httpx.AsyncClient if asynchronous else httpx.Client
    request_hook = _async_hook if asynchronous else _sync_hook

    def variant(
        name: str,
        make_client: Callable[[Any], Any],
        forwards: bool,
        needs: str | None = None,
        headers: dict[str, str] | None = None,
        around: Around = nullcontext,
    ) -> Variant:
        def build() -> Batch:
            seen = _Seen()
            client = make_client(_httpx_transport(seen))

            def call() -> Any:
                return client.get(OUTBOUND_URL, headers=headers)

            if loop is None:
                stack.callback(client.close)
                timed = sync_batch(call)
            else:
                stack.callback(lambda: loop.run_until_complete(client.aclose()))
                timed = async_batch(loop, call)
            return _checked(name, in_request(timed), seen, forwards)

        return Variant(name, build, needs=needs, around=around)

    def bare(transport: Any) -> Any:
        return plain_client(transport=transport)

    def hook(transport: Any) -> Any:
        return plain_client(transport=transport, event_hooks={"request": [request_hook]})

    def carry(transport: Any) -> Any:
        return carrying_httpx_client(plain_client)(transport=transport)

    def meshprop_client(transport: Any) -> Any:
        import meshprop.httpx

        client_class = meshprop.httpx.AsyncClient if asynchronous else meshprop.httpx.Client
        return client_class(transport=transport)

    def otel(transport: Any) -> Any:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        client = plain_client(transport=transport)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=sdk_tracer_provider())
        return client

    return [
        variant("bare", bare, False),
        variant("explicit", bare, True, headers=_EXPLICIT),
        variant("carry", carry, True),
        variant("hook", hook, True),
        variant("meshprop", meshprop_client, True, "meshprop.httpx"),
        variant("patched", bare, True, "meshprop.httpx", around=_zero_code.around(_HTTPX)),
        variant("otel-sdk", otel, False),
    ]


def carrying_httpx_client(client_class: Any) -> Any:
    """``client_class`` with the carry headers appended in ``build_request``, where meshprop
    adds its own: straight onto the (raw name, lower-case name, value) list ``Headers`` keeps."""

    class CarryingClient(client_class):  # type: ignore[misc]
        def build_request(self, *args: Any, **kwargs: Any) -> Any:
            request = super().build_request(*args, **kwargs)
            request.headers._list += _CARRY_HTTPX_ENTRIES
            return request

    return CarryingClient


def httpx_otel_variants(stack: ExitStack) -> list[Variant]:
    """The OpenTelemetry bridge: every call is made inside a fresh SDK span, as a handler of an
    instrumented server makes it, so the baseline pays for the span and each variant adds only
    what it does on top: meshprop sending that span's ids, the stock instrumentation's client
    span, or both together."""
    import httpx

    provider = sdk_tracer_provider()
    tracer = provider.get_tracer("benchmarks")

    def variant(
        name: str, client_class: Callable[[], Any], instrumented: bool, needs: str | None = None
    ) -> Variant:
        def build() -> Batch:
            seen = _Seen()
            client = stack.enter_context(client_class()(transport=_httpx_transport(seen)))
            if instrumented:
                from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

                HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)

            def call() -> Any:
                with tracer.start_as_current_span("handler"):
                    return client.get(OUTBOUND_URL)

            batch = in_request(sync_batch(call))
            batch(1)
            return batch

        return Variant(name, build, needs=needs)

    def plain() -> Any:
        return httpx.Client

    def meshprop_class() -> Any:
        import meshprop.httpx

        return meshprop.httpx.Client

    return [
        variant("bare", plain, False),
        variant("meshprop", meshprop_class, False, "meshprop.httpx"),
        variant("otel-sdk", plain, True),
        variant("meshprop+otel-sdk", meshprop_class, True, "meshprop.httpx"),
    ]


def _sync_hook(request: Any) -> None:
    copy_into(request.headers)


async def _async_hook(request: Any) -> None:
    copy_into(request.headers)


# --- requests ----------------------------------------------------------------------------------


def _requests_adapter(seen: _Seen) -> Any:
    import requests
    from requests.adapters import BaseAdapter
    from requests.structures import CaseInsensitiveDict

    class InMemoryAdapter(BaseAdapter):
        """Answers every request at once, as a fast upstream would, without a socket."""

        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            seen.headers = request.headers
            response = requests.Response()
            response.status_code = 200
            response.headers = CaseInsensitiveDict({"content-type": "application/json"})
            response._content = b'{"charge": "ok"}'
            response.encoding = "utf-8"
            response.url = request.url
            response.request = request
            return response

        def close(self) -> None:
            return None

    return InMemoryAdapter()


def requests_variants(stack: ExitStack) -> list[Variant]:
    """requests on an adapter that answers at once: the client down to ``HTTPAdapter.send``."""
    return _requests_variants(stack, _requests_adapter, through_http_client=False)


def requests_urllib3_variants(stack: ExitStack) -> list[Variant]:
    """requests through its real ``HTTPAdapter``, urllib3 and ``http.client`` onto an in-memory
    socket: where ``instrument()`` adds the headers, so its ``patched`` variant is timed here."""
    return _requests_variants(stack, _in_memory_socket_adapter, through_http_client=True)


def _requests_variants(
    stack: ExitStack, make_adapter: Callable[[_Seen], Any], through_http_client: bool
) -> list[Variant]:
    def variant(
        name: str,
        make_session: Callable[[], Any],
        call: Callable[[Any], object],
        forwards: bool,
        needs: str | None = None,
        instrument: bool = False,
        around: Around = nullcontext,
    ) -> Variant:
        def build() -> Batch:
            seen = _Seen()
            session = stack.enter_context(make_session())
            session.mount("http://", make_adapter(seen))
            batch = in_request(sync_batch(lambda: call(session)))
            if instrument:
                batch = _instrumented_requests(batch)
            return _checked(name, batch, seen, forwards)

        return Variant(name, build, needs=needs, around=around)

    def plain_session() -> Any:
        import requests

        return requests.Session()

    def meshprop_session() -> Any:
        import meshprop.requests

        return meshprop.requests.Session()

    def carrying_session() -> Any:
        return carrying_requests_session()

    def get(session: Any) -> object:
        return session.get(OUTBOUND_URL)

    def get_explicit(session: Any) -> object:
        return session.get(OUTBOUND_URL, headers=_EXPLICIT)

    def get_with_copy(session: Any) -> object:
        # requests has no request hook: teams pass the headers on each call.
        return session.get(OUTBOUND_URL, headers=TEAM_HEADERS.get({}))

    # instrument() patches http.client, which the answer-at-once adapter never reaches.
    patched = (
        [
            variant(
                "patched",
                plain_session,
                get,
                True,
                "meshprop._http_client",
                around=_zero_code.around("meshprop._http_client"),
            )
        ]
        if through_http_client
        else []
    )
    return [
        variant("bare", plain_session, get, False),
        variant("explicit", plain_session, get_explicit, True),
        variant("carry", carrying_session, get, True),
        variant("hook", plain_session, get_with_copy, True),
        variant("meshprop", meshprop_session, get, True, "meshprop.requests"),
        *patched,
        variant("otel-sdk", plain_session, get, False, instrument=True),
    ]


_CANNED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n"
    b'{"charge": "ok"}'
)


def _in_memory_socket_adapter(seen: _Seen) -> Any:
    """requests' own ``HTTPAdapter``, whose urllib3 connections write to a socket that keeps
    the request's bytes and reads back a canned keep-alive response: everything down to
    ``http.client`` runs, and no packet is sent."""
    import io

    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection
    from urllib3.connectionpool import HTTPConnectionPool

    class InMemorySocket:
        def sendall(self, data: bytes) -> None:
            seen.sent = data

        def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BytesIO:
            return io.BytesIO(_CANNED_RESPONSE)

        def settimeout(self, timeout: float | None) -> None:
            return None

        def close(self) -> None:
            return None

    class InMemoryConnection(HTTPConnection):
        def _new_conn(self) -> Any:
            return InMemorySocket()

        @property
        def is_connected(self) -> bool:  # urllib3 would poll the socket's file descriptor
            return self.sock is not None

    class InMemoryPool(HTTPConnectionPool):
        ConnectionCls = InMemoryConnection

    class InMemoryAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": InMemoryPool}

    return InMemoryAdapter()


def carrying_requests_session() -> Any:
    """A ``requests.Session`` whose ``send`` (meshprop's hook point) puts the carry headers
    straight into the prepared request's ``CaseInsensitiveDict`` store."""
    import requests

    class CarryingSession(requests.Session):
        def send(self, request: Any, **kwargs: Any) -> Any:
            request.headers._store.update(_CARRY_REQUESTS_STORE)
            return super().send(request, **kwargs)

    return CarryingSession()


def _instrumented_requests(batch: Batch) -> Batch:
    """OpenTelemetry's requests instrumentation patches ``Session.send`` for every session, so it
    is switched on only around this variant's own batches (outside the timed loop)."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    provider = sdk_tracer_provider()

    def run(n: int) -> int:
        instrumentor = RequestsInstrumentor()
        instrumentor.instrument(tracer_provider=provider)
        try:
            return batch(n)
        finally:
            instrumentor.uninstrument()

    return run


# --- aiohttp -----------------------------------------------------------------------------------


def aiohttp_variants(stack: ExitStack, loop: asyncio.AbstractEventLoop) -> list[Variant]:
    server: dict[str, Any] = {}
    seen = _Seen()

    def url() -> str:
        if "url" not in server:
            server["url"] = _start_server(stack, loop, seen)
        return str(server["url"])

    def variant(
        name: str,
        session_options: Callable[[], dict[str, Any]],
        forwards: bool,
        needs: str | None = None,
        headers: dict[str, str] | None = None,
        around: Around = nullcontext,
    ) -> Variant:
        def build() -> Batch:
            import aiohttp

            target = url()
            options = session_options()

            async def open_session() -> Any:
                return aiohttp.ClientSession(**options)

            session = loop.run_until_complete(open_session())
            stack.callback(lambda: loop.run_until_complete(session.close()))

            async def call() -> None:
                async with session.get(target, headers=headers) as response:
                    await response.read()

            return _checked(name, in_request(async_batch(loop, call)), seen, forwards)

        return Variant(name, build, needs=needs, around=around)

    def server_then_instrumented() -> AbstractContextManager[object]:
        # The server is started before instrument(), so that only the client is patched.
        url()
        return _zero_code.instrumented(_AIOHTTP)

    def hook() -> dict[str, Any]:
        import aiohttp

        async def copy_headers(session: Any, context: Any, params: Any) -> None:
            copy_into(params.headers)

        tracing = aiohttp.TraceConfig()
        tracing.on_request_start.append(copy_headers)
        return {"trace_configs": [tracing]}

    def meshprop_middleware() -> dict[str, Any]:
        import meshprop.aiohttp

        return {"middlewares": [meshprop.aiohttp.client_middleware()]}

    def carry() -> dict[str, Any]:
        return {"middlewares": [carrying_aiohttp_middleware()]}

    def meshprop_trace_config() -> dict[str, Any]:
        import meshprop.aiohttp

        return {"trace_configs": [meshprop.aiohttp.trace_config()]}

    def otel() -> dict[str, Any]:
        from opentelemetry.instrumentation.aiohttp_client import create_trace_config

        return {"trace_configs": [create_trace_config(tracer_provider=sdk_tracer_provider())]}

    return [
        variant("bare", dict, False),
        variant("explicit", dict, True, headers=_EXPLICIT),
        variant("carry", carry, True),
        variant("hook", hook, True),
        variant("meshprop", meshprop_middleware, True, "meshprop.aiohttp"),
        variant("meshprop-trace-config", meshprop_trace_config, True, "meshprop.aiohttp"),
        variant("patched", dict, True, _AIOHTTP, around=server_then_instrumented),
        variant("otel-sdk", otel, False),
    ]


def carrying_aiohttp_middleware() -> Any:
    """A client middleware (meshprop's hook point) extending each hop's headers with the carry
    headers, held in a ``CIMultiDict`` built once."""
    from multidict import CIMultiDict

    carried = CIMultiDict(ISTIO_HEADERS)

    async def carry_headers(request: Any, handler: Any) -> Any:
        request.headers.extend(carried)
        return await handler(request)

    return carry_headers


def _start_server(stack: ExitStack, loop: asyncio.AbstractEventLoop, seen: _Seen) -> str:
    """An aiohttp server on 127.0.0.1 (a free port) in this loop; stopped with the stack."""
    from aiohttp import web

    async def charge(request: web.Request) -> web.Response:
        seen.headers = request.headers
        seen.server_captured = CURRENT.get() is not None
        return web.json_response({"charge": "ok"})

    app = web.Application()
    app.router.add_get("/api/charges", charge)
    runner = web.AppRunner(app, access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return int(runner.addresses[0][1])

    port = loop.run_until_complete(start())
    stack.callback(lambda: loop.run_until_complete(runner.cleanup()))
    return f"http://127.0.0.1:{port}/api/charges"


_OTEL = "the OpenTelemetry instrumentation, SDK spans to a discarding exporter"
_PATCHED = "made and called after meshprop.instrument() (zero code)"
_CARRY = (
    "the same headers pre-encoded once; no context lookup, scope decision or check (what the "
    "client itself charges for carrying them)"
)

#: What each variant is, per client suite.
DESCRIPTIONS = {
    "httpx-otel": {
        "bare": "httpx.Client, each call inside an SDK span",
        "meshprop": "meshprop.httpx.Client: sends the active span's ids (the bridge)",
        "otel-sdk": f"httpx.Client + HTTPXClientInstrumentor.instrument_client: {_OTEL}",
        "meshprop+otel-sdk": "meshprop.httpx.Client + the same instrumentation",
    },
    "httpx-sync": {
        "bare": "httpx.Client",
        "explicit": "the same headers as a literal headers= (what carrying them costs)",
        "carry": f"httpx.Client subclass: build_request appends {_CARRY}",
        "hook": "event_hooks={'request': [copy from a ContextVar]}",
        "meshprop": "meshprop.httpx.Client",
        "patched": f"httpx.Client {_PATCHED}",
        "otel-sdk": f"HTTPXClientInstrumentor.instrument_client: {_OTEL}",
    },
    "httpx-async": {
        "bare": "httpx.AsyncClient",
        "explicit": "the same headers as a literal headers= (what carrying them costs)",
        "carry": f"httpx.AsyncClient subclass: build_request appends {_CARRY}",
        "hook": "event_hooks={'request': [async copy from a ContextVar]}",
        "meshprop": "meshprop.httpx.AsyncClient",
        "patched": f"httpx.AsyncClient {_PATCHED}",
        "otel-sdk": f"HTTPXClientInstrumentor.instrument_client: {_OTEL}",
    },
    "requests": {
        "bare": "requests.Session",
        "explicit": "the same headers as a literal headers= (what carrying them costs)",
        "carry": f"requests.Session subclass: send puts in {_CARRY}",
        "hook": "headers= copied from a ContextVar on each call (requests has no request hook)",
        "meshprop": "meshprop.requests.Session",
        "otel-sdk": f"RequestsInstrumentor: {_OTEL}",
    },
    "requests-urllib3": {
        "bare": "requests.Session → HTTPAdapter → urllib3 → http.client, in-memory socket",
        "explicit": "the same headers as a literal headers= (what carrying them costs)",
        "carry": f"requests.Session subclass: send puts in {_CARRY}",
        "hook": "headers= copied from a ContextVar on each call (requests has no request hook)",
        "meshprop": "meshprop.requests.Session",
        "patched": f"requests.Session {_PATCHED}: http.client adds the headers",
        "otel-sdk": f"RequestsInstrumentor: {_OTEL}",
    },
    "aiohttp-client": {
        "bare": "aiohttp.ClientSession",
        "explicit": "the same headers as a literal headers= (what carrying them costs)",
        "carry": f"middlewares=[a client middleware extending the headers with {_CARRY}]",
        "hook": "TraceConfig on_request_start copy from a ContextVar",
        "meshprop": "meshprop.aiohttp.ClientSession(): middlewares=[client_middleware()]",
        "meshprop-trace-config": "trace_configs=[meshprop.aiohttp.trace_config()]",
        "patched": f"aiohttp.ClientSession {_PATCHED}",
        "otel-sdk": f"aiohttp_client.create_trace_config: {_OTEL}",
    },
}
