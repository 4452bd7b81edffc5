"""In-process WSGI: a Flask app called directly with a fresh environ per request.

The response body is iterated and closed, as a server does, so Flask's teardown runs inside the
measured call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _zero_code
from ._handwritten import flask_before_request
from ._harness import Batch, Variant, sync_batch
from ._otel import sdk_tracer_provider
from ._workload import (
    INSTRUMENTED_DESCRIPTION,
    INSTRUMENTED_READ_DESCRIPTION,
    ISTIO_HEADERS,
    PATH,
    READ_DESCRIPTION,
    check_handler_read,
    forget_handler_read,
    read_forwarded_headers,
    wsgi_environ,
)

_INCOMING_ID = dict(ISTIO_HEADERS)["x-request-id"]


def _flask_app(reads_context: bool = False) -> Any:
    from flask import Flask

    app = Flask("orders")

    @app.get(PATH)
    def orders() -> dict[str, Any]:
        if reads_context:
            read_forwarded_headers()
        return {"order": 42, "status": "paid"}

    return app


def _serve(app: Any, keep: list[Any] | None = None) -> None:
    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if keep is not None:
            keep.append((status, headers))
        return None

    body = app(wsgi_environ(), start_response)
    try:
        for _chunk in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _batch(
    build_app: Callable[[], Any], name: str, expect_echo: bool, expect_read: bool = False
) -> Callable[[], Batch]:
    def build() -> Batch:
        app = build_app()
        kept: list[Any] = []
        forget_handler_read()
        _serve(app, kept)
        if expect_read:
            check_handler_read(name)
        status, headers = kept[0]
        if not status.startswith("200"):
            raise RuntimeError(f"{name}: the app answered {status}, not 200")
        echoed = dict((key.lower(), value) for key, value in headers).get("x-request-id")
        if expect_echo and echoed != _INCOMING_ID:
            raise RuntimeError(f"{name}: x-request-id was not echoed (got {echoed!r})")
        return sync_batch(lambda: _serve(app))

    return build


def variants() -> list[Variant]:
    def bare() -> Any:
        return _flask_app()

    def before_request() -> Any:
        app = _flask_app()
        app.before_request(flask_before_request)
        return app

    def meshprop_app(reads_context: bool = False) -> Any:
        import meshprop.wsgi

        app = _flask_app(reads_context)
        app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)
        return app

    def meshprop_read_app() -> Any:
        return meshprop_app(reads_context=True)

    def otel_app(sdk: bool) -> Callable[[], Any]:
        def build() -> Any:
            from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware

            app = _flask_app()
            provider = sdk_tracer_provider() if sdk else None
            app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=provider)
            return app

        return build

    return [
        Variant("bare", _batch(bare, "bare", False)),
        Variant("before_request", _batch(before_request, "before_request", False)),
        Variant("meshprop", _batch(meshprop_app, "meshprop", True), needs="meshprop.wsgi"),
        Variant(
            "meshprop-read",
            _batch(meshprop_read_app, "meshprop-read", True, expect_read=True),
            needs="meshprop.wsgi",
        ),
        Variant(
            "instrumented",
            _batch(bare, "instrumented", True),
            needs="meshprop.wsgi",
            around=_zero_code.around("meshprop.wsgi"),
        ),
        Variant(
            "instrumented-read",
            _batch(lambda: _flask_app(reads_context=True), "instrumented-read", True, True),
            needs="meshprop.wsgi",
            around=_zero_code.around("meshprop.wsgi"),
        ),
        Variant("otel-api", _batch(otel_app(sdk=False), "otel-api", False)),
        Variant("otel-sdk", _batch(otel_app(sdk=True), "otel-sdk", False)),
    ]


DESCRIPTIONS = {
    "bare": "Flask, no middleware",
    "before_request": "@app.before_request copy into flask.g (no echo)",
    "meshprop": "app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)",
    "meshprop-read": READ_DESCRIPTION,
    "instrumented": INSTRUMENTED_DESCRIPTION,
    "instrumented-read": INSTRUMENTED_READ_DESCRIPTION,
    "otel-api": "OpenTelemetry WSGI middleware, API only",
    "otel-sdk": "OpenTelemetry WSGI middleware, SDK spans to a discarding exporter",
}
