"""In-process ASGI: Starlette and FastAPI called directly with a uvicorn-shaped scope.

No sockets and no server: the app is awaited with a scope, a ``receive`` that hands over an empty
body and a ``send`` that drops the response, so what is left is the framework and the middleware
under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from . import _zero_code
from ._handwritten import CopyAndEchoMiddleware, http_middleware
from ._harness import Batch, Variant, async_batch
from ._otel import sdk_tracer_provider
from ._workload import (
    INSTRUMENTED_DESCRIPTION,
    INSTRUMENTED_READ_DESCRIPTION,
    ISTIO_HEADERS,
    PATH,
    READ_DESCRIPTION,
    asgi_scope,
    check_handler_read,
    forget_handler_read,
    read_forwarded_headers,
)

Middleware = tuple[Any, dict[str, Any]]

_TEMPLATE = asgi_scope()
_HEADERS = tuple(_TEMPLATE["headers"])
_REQUEST_BODY = {"type": "http.request", "body": b"", "more_body": False}
_INCOMING_ID = dict(ISTIO_HEADERS)["x-request-id"].encode("latin-1")


async def _receive() -> dict[str, Any]:
    return _REQUEST_BODY


async def _drop(message: Any) -> None:
    return None


def _starlette_app(middleware: list[Middleware], reads_context: bool = False) -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware as StarletteMiddleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def orders(request: Any) -> Any:
        if reads_context:
            read_forwarded_headers()
        return JSONResponse({"order": 42, "status": "paid"})

    return Starlette(
        routes=[Route(PATH, orders)],
        middleware=[StarletteMiddleware(cls, **options) for cls, options in middleware],
    )


def _fastapi_app(middleware: list[Middleware], reads_context: bool = False) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(PATH)
    async def orders() -> dict[str, Any]:
        if reads_context:
            read_forwarded_headers()
        return {"order": 42, "status": "paid"}

    for cls, options in reversed(middleware):
        app.add_middleware(cls, **options)
    return app


def _with_http_middleware(framework: str) -> Any:
    if framework == "fastapi":
        app = _fastapi_app([])
        app.middleware("http")(http_middleware)
        return app
    # Starlette 1.0 dropped the decorator; it was this, and the function is written the same way.
    from starlette.middleware.base import BaseHTTPMiddleware

    return _starlette_app([(BaseHTTPMiddleware, {"dispatch": http_middleware})])


def _check_response(
    loop: asyncio.AbstractEventLoop, app: Any, expect_echo: bool, expect_read: bool, name: str
) -> None:
    """One request with the response kept: a variant that answers wrongly is not timed."""
    sent: list[Any] = []

    async def keep(message: Any) -> None:
        sent.append(message)

    forget_handler_read()
    loop.run_until_complete(app(_fresh_scope(), _receive, keep))
    if expect_read:
        check_handler_read(name)
    start = sent[0]
    if start["status"] != 200:
        raise RuntimeError(f"{name}: the app answered {start['status']}, not 200")
    echoed = dict(start.get("headers", ())).get(b"x-request-id")
    if expect_echo and echoed != _INCOMING_ID:
        raise RuntimeError(f"{name}: x-request-id was not echoed (got {echoed!r})")


def _fresh_scope() -> dict[str, Any]:
    # Middlewares and frameworks write into the scope (and asgi-correlation-id into its header
    # list), so every request gets its own, as from a server.
    scope = dict(_TEMPLATE)
    scope["headers"] = list(_HEADERS)
    scope["state"] = {}
    return scope


def _batch(
    loop: asyncio.AbstractEventLoop,
    build_app: Callable[[], Any],
    name: str,
    expect_echo: bool,
    expect_read: bool,
) -> Callable[[], Batch]:
    def build() -> Batch:
        app = build_app()
        _check_response(loop, app, expect_echo, expect_read, name)
        fresh_scope = _fresh_scope

        async def call() -> None:
            await app(fresh_scope(), _receive, _drop)

        return async_batch(loop, call)

    return build


def variants(loop: asyncio.AbstractEventLoop, framework: str) -> list[Variant]:
    """The ASGI variants for ``framework`` ("starlette" or "fastapi")."""
    app_factory = _starlette_app if framework == "starlette" else _fastapi_app

    def with_middleware(*middleware: Middleware) -> Callable[[], Any]:
        return lambda: app_factory(list(middleware))

    def meshprop_app() -> Any:
        import meshprop.asgi

        return app_factory([(meshprop.asgi.MeshPropMiddleware, {})])

    def meshprop_read_app() -> Any:
        import meshprop.asgi

        return app_factory([(meshprop.asgi.MeshPropMiddleware, {})], reads_context=True)

    def correlation_id_app() -> Any:
        from asgi_correlation_id import CorrelationIdMiddleware

        class WithoutSentry(CorrelationIdMiddleware):
            """As in a service without sentry-sdk (the dev install has it): the middleware
            otherwise tags Sentry's scope on every request, which is no part of the reference."""

            def __post_init__(self) -> None:
                self.sentry_extension = _no_sentry

        return app_factory([(WithoutSentry, {})])

    def starlette_context_app() -> Any:
        from starlette_context import plugins
        from starlette_context.middleware import RawContextMiddleware

        options = {"plugins": (plugins.RequestIdPlugin(), plugins.CorrelationIdPlugin())}
        return app_factory([(RawContextMiddleware, options)])

    def otel_app(provider: Any) -> Callable[[], Any]:
        def build() -> Any:
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

            return app_factory([(OpenTelemetryMiddleware, {"tracer_provider": provider})])

        return build

    def otel_sdk_app() -> Any:
        return otel_app(sdk_tracer_provider())()

    table: list[tuple[str, Callable[[], Any], bool, str | None]] = [
        ("bare", with_middleware(), False, None),
        ("floor", with_middleware((CopyAndEchoMiddleware, {})), True, None),
        ("meshprop", meshprop_app, True, "meshprop.asgi"),
        ("meshprop-read", meshprop_read_app, True, "meshprop.asgi"),
        ("instrumented", with_middleware(), True, "meshprop.asgi"),
        ("instrumented-read", lambda: app_factory([], reads_context=True), True, "meshprop.asgi"),
        ("asgi-correlation-id", correlation_id_app, True, None),
        ("starlette-context", starlette_context_app, False, None),
        ("http-middleware", lambda: _with_http_middleware(framework), True, None),
        ("otel-api", otel_app(None), False, None),
        ("otel-sdk", otel_sdk_app, False, None),
    ]
    zero_code = _zero_code.around("meshprop.asgi")
    return [
        Variant(
            name,
            _batch(loop, build_app, name, expect_echo, name.endswith("-read")),
            needs,
            around=zero_code if name.startswith("instrumented") else nullcontext,
        )
        for name, build_app, expect_echo, needs in table
    ]


DESCRIPTIONS = {
    "bare": "no middleware",
    "floor": "hand-written pure-ASGI copy + echo (the floor)",
    "meshprop": "meshprop.asgi.MeshPropMiddleware via add_middleware",
    "meshprop-read": READ_DESCRIPTION,
    "instrumented": INSTRUMENTED_DESCRIPTION,
    "instrumented-read": INSTRUMENTED_READ_DESCRIPTION,
    "asgi-correlation-id": "asgi-correlation-id CorrelationIdMiddleware (defaults)",
    "starlette-context": "starlette-context RawContextMiddleware (request id + correlation id)",
    "http-middleware": '@app.middleware("http") copy into a ContextVar + echo (Starlette: '
    "BaseHTTPMiddleware, what the decorator was)",
    "otel-api": "OpenTelemetry ASGI middleware, API only (no SDK provider)",
    "otel-sdk": "OpenTelemetry ASGI middleware, SDK spans to a discarding exporter",
}


def _no_sentry(correlation_id: str) -> None:
    return None
