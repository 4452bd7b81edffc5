"""In-process aiohttp server: the application's request handling without a socket.

Each call clones a prepared request (aiohttp's own ``make_mocked_request``, built once) and
hands it to ``Application._handle``: routing, the middleware chain and the handler, which is what
differs between the variants. aiohttp offers no public entry point below the socket, so this one
private method is used; response serialization is left out for every variant alike.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

from . import _zero_code
from ._harness import Batch, Variant, async_batch
from ._otel import sdk_tracer_provider
from ._workload import (
    INSTRUMENTED_DESCRIPTION,
    INSTRUMENTED_READ_DESCRIPTION,
    ISTIO_HEADERS,
    PATH,
    READ_DESCRIPTION,
    REQUEST_HEADERS,
    check_handler_read,
    forget_handler_read,
    read_forwarded_headers,
)

_INCOMING_ID = dict(ISTIO_HEADERS)["x-request-id"]


def _application(middlewares: list[Any], reads_context: bool = False) -> Any:
    from aiohttp import web

    async def orders(request: web.Request) -> web.Response:
        if reads_context:
            read_forwarded_headers()
        return web.json_response({"order": 42, "status": "paid"})

    app = web.Application(middlewares=middlewares)
    app.router.add_get(PATH, orders)
    app.freeze()
    return app


class _Transport:
    """A connection's transport, as far as a request asks: its addresses, still open."""

    _extra: ClassVar[dict[str, tuple[str, int]]] = {
        "peername": ("10.0.3.17", 43210),
        "sockname": ("10.0.3.20", 8080),
    }

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def is_closing(self) -> bool:
        return False


class _Writer:
    """A response writer that writes nowhere."""

    def __init__(self, transport: _Transport) -> None:
        self.transport = transport

    async def write_headers(self, *args: Any) -> None:
        return None

    async def write(self, *args: Any) -> None:
        return None

    async def write_eof(self, *args: Any) -> None:
        return None

    async def drain(self) -> None:
        return None


class _Protocol:
    """The server protocol attributes a request reads (limits, addresses, TLS)."""

    max_field_size = 8190
    max_line_length = 8190
    max_headers = 128
    ssl_context = None

    def __init__(self, transport: _Transport, writer: _Writer) -> None:
        self.transport = transport
        self.writer = writer
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")


def _prototype(loop: asyncio.AbstractEventLoop, app: Any) -> Any:
    """A request built by ``make_mocked_request``, with plain stubs instead of its default
    ``Mock`` objects: a Mock records every call made on it, which would be slow and would grow
    memory on every request for every variant."""
    from aiohttp.test_utils import make_mocked_request

    transport = _Transport()
    writer = _Writer(transport)
    protocol = _Protocol(transport, writer)

    async def make() -> Any:
        return make_mocked_request(
            "GET",
            PATH,
            headers=list(REQUEST_HEADERS),
            app=app,
            transport=transport,
            writer=writer,
            protocol=protocol,
        )

    return loop.run_until_complete(make())


def _batch(
    loop: asyncio.AbstractEventLoop,
    middlewares: Callable[[], list[Any]],
    name: str,
    expect_echo: bool,
    expect_read: bool = False,
) -> Callable[[], Batch]:
    def build() -> Batch:
        app = _application(middlewares(), reads_context=expect_read)
        prototype = _prototype(loop, app)
        forget_handler_read()
        response = loop.run_until_complete(app._handle(prototype.clone()))
        if expect_read:
            check_handler_read(name)
        if response.status != 200:
            raise RuntimeError(f"{name}: the app answered {response.status}, not 200")
        echoed = response.headers.get("x-request-id")
        if expect_echo and echoed != _INCOMING_ID:
            raise RuntimeError(f"{name}: x-request-id was not echoed (got {echoed!r})")
        handle = app._handle
        clone = prototype.clone

        async def call() -> None:
            await handle(clone())

        return async_batch(loop, call)

    return build


def variants(loop: asyncio.AbstractEventLoop) -> list[Variant]:
    def meshprop_middlewares() -> list[Any]:
        import meshprop.aiohttp

        return [meshprop.aiohttp.middleware()]

    def otel_middlewares(sdk: bool) -> Callable[[], list[Any]]:
        def build() -> list[Any]:
            from opentelemetry.instrumentation.aiohttp_server import (
                AioHttpServerInstrumentor,
                create_aiohttp_middleware,
            )

            # The middleware reads module globals (excluded URLs, meters) that only
            # instrument() sets; instrument() also swaps web.Application for every app, so it is
            # undone at once: the globals stay, and only the apps given the middleware use it.
            instrumentor = AioHttpServerInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                with warnings.catch_warnings():
                    # It subclasses web.Application, which aiohttp warns about.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    instrumentor.instrument()
                instrumentor.uninstrument()
            provider = sdk_tracer_provider() if sdk else None
            return [create_aiohttp_middleware(tracer_provider=provider)]

        return build

    return [
        Variant("bare", _batch(loop, list, "bare", False)),
        Variant(
            "meshprop",
            _batch(loop, meshprop_middlewares, "meshprop", True),
            needs="meshprop.aiohttp",
        ),
        Variant(
            "meshprop-read",
            _batch(loop, meshprop_middlewares, "meshprop-read", True, expect_read=True),
            needs="meshprop.aiohttp",
        ),
        Variant(
            "instrumented",
            _batch(loop, list, "instrumented", True),
            needs="meshprop.aiohttp",
            around=_zero_code.around("meshprop.aiohttp"),
        ),
        Variant(
            "instrumented-read",
            _batch(loop, list, "instrumented-read", True, expect_read=True),
            needs="meshprop.aiohttp",
            around=_zero_code.around("meshprop.aiohttp"),
        ),
        Variant("otel-api", _batch(loop, otel_middlewares(sdk=False), "otel-api", False)),
        Variant("otel-sdk", _batch(loop, otel_middlewares(sdk=True), "otel-sdk", False)),
    ]


DESCRIPTIONS = {
    "bare": "aiohttp web.Application, no middleware",
    "meshprop": "web.Application(middlewares=[meshprop.aiohttp.middleware()])",
    "meshprop-read": READ_DESCRIPTION,
    "instrumented": INSTRUMENTED_DESCRIPTION,
    "instrumented-read": INSTRUMENTED_READ_DESCRIPTION,
    "otel-api": "opentelemetry-instrumentation-aiohttp-server middleware, API only",
    "otel-sdk": "the same with SDK spans to a discarding exporter",
}
