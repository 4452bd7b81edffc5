"""The hops of the interop test; each answers ``GET /chain`` with what it received and what
the next hop answered, and ``GET /health`` for the readiness wait.

- ``fastapi``: stock OTel FastAPI + httpx instrumentations, meshprop ASGI middleware and
  ``meshprop.httpx.AsyncClient`` (service A);
- ``flask``: stock OTel Flask instrumentation, meshprop WSGI middleware and
  ``meshprop.requests.Session`` (service B);
- ``aiohttp``: meshprop only, no OpenTelemetry (service C);
- ``plain-fastapi``: OpenTelemetry only, no meshprop (the reverse direction).
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations at runtime.

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

CHAIN_PATH = "/chain"
HEALTH_PATH = "/health"


def _tracer_provider(spans_path: str, with_meshprop: bool) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from ._spans import JsonLinesExporter

    provider = TracerProvider()
    if with_meshprop:
        from meshprop.otel import RequestIdSpanProcessor

        provider.add_span_processor(RequestIdSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans_path)))
    trace.set_tracer_provider(provider)
    return provider


def _answer(kind: str, headers: Any, downstream: Any) -> dict[str, Any]:
    import meshprop

    return {
        "service": kind,
        "received": {name.lower(): value for name, value in headers.items()},
        "request_id": meshprop.request_id(),
        "downstream": downstream,
    }


def _fastapi_app(kind: str, next_url: str | None, provider: Any) -> Any:
    import httpx
    from fastapi import FastAPI, Request
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    with_meshprop = kind == "fastapi"
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal client
        if with_meshprop:
            import meshprop.httpx

            client = meshprop.httpx.AsyncClient(timeout=10.0, trust_env=False)
        else:
            client = httpx.AsyncClient(timeout=10.0, trust_env=False)
        async with client:
            yield

    app = FastAPI(lifespan=lifespan)
    if with_meshprop:
        import meshprop.asgi

        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

    @app.get(HEALTH_PATH)
    async def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    async def chain(request: Request) -> dict[str, Any]:
        downstream = None
        if next_url is not None and client is not None:
            response = await client.get(next_url + CHAIN_PATH)
            response.raise_for_status()
            downstream = response.json()
        return _answer(kind, request.headers, downstream)

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    return app


def _flask_app(next_url: str | None, provider: Any) -> Any:
    from flask import Flask, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor

    import meshprop.requests
    import meshprop.wsgi

    app = Flask("flask-hop")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)  # type: ignore[no-untyped-call]
    app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    session = meshprop.requests.Session()

    @app.get(HEALTH_PATH)
    def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    def chain() -> dict[str, Any]:
        downstream = None
        if next_url is not None:
            response = session.get(next_url + CHAIN_PATH, timeout=10)
            response.raise_for_status()
            downstream = response.json()
        return _answer("flask", request.headers, downstream)

    return app


def _aiohttp_app(next_url: str | None) -> Any:
    from aiohttp import web

    import meshprop.aiohttp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def chain(request: web.Request) -> web.Response:
        downstream = None
        if next_url is not None:
            async with (
                meshprop.aiohttp.ClientSession() as session,
                session.get(next_url + CHAIN_PATH) as response,
            ):
                downstream = await response.json()
        return web.json_response(_answer("aiohttp", request.headers, downstream))

    app = web.Application(middlewares=[meshprop.aiohttp.middleware()])
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(CHAIN_PATH, chain)
    return app


def serve(kind: str, next_url: str | None, spans_path: str | None, listener: socket.socket) -> None:
    if kind == "aiohttp":
        from aiohttp import web

        web.run_app(_aiohttp_app(next_url), sock=listener, print=None, access_log=None)
        return
    assert spans_path is not None, f"{kind} runs with OpenTelemetry: --spans is required"
    provider = _tracer_provider(spans_path, with_meshprop=kind != "plain-fastapi")
    if kind == "flask":
        import waitress  # type: ignore[import-untyped]

        waitress.serve(_flask_app(next_url, provider), sockets=[listener], threads=4, _quiet=True)
        return
    import uvicorn

    config = uvicorn.Config(
        _fastapi_app(kind, next_url, provider), log_level="warning", access_log=False
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))
