"""The app variants the ASGI tests run over.

The same routes written once for Starlette and once for FastAPI (each in its own idiom: plain
route functions there, path operations, ``BackgroundTasks`` and ``Depends`` here), with
``MeshPropMiddleware`` installed either way a user would. Each route reports what it saw of
``meshprop.request_id()``, so one test checks every variant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import fastapi
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import meshprop
from meshprop._config import Config
from meshprop._snapshot import exception_request_id
from meshprop.asgi import ASGIApp, MeshPropMiddleware

FRAMEWORKS = ("starlette", "fastapi")
INSTALLS = ("add_middleware", "wrap")

#: What the app sets itself on /own-id, in mixed case as app code often writes it.
APP_SET_ID = "set-by-the-app"
#: The response header the inner http middleware reports its view of the request id in.
INNER_HEADER = "x-seen-by-inner-middleware"


@dataclass
class Seen:
    """What the app saw outside a response body: background tasks and lifespan."""

    background: list[str | None] = field(default_factory=list)
    lifespan: list[str | None] = field(default_factory=list)


def seen_now() -> dict[str, Any]:
    return {"request_id": meshprop.request_id(), "current": dict(meshprop.current())}


async def _chunks() -> AsyncIterator[str]:
    for index in range(3):
        await asyncio.sleep(0)
        yield f"{index}:{meshprop.request_id()}\n"


def _sync_chunks() -> Iterator[str]:  # Starlette iterates it in the threadpool
    for index in range(3):
        yield f"{index}:{meshprop.request_id()}\n"


async def _on_exception(request: Request, exc: Exception) -> Response:
    """The app's own 500 handler, as a user would write it to echo the id in both installs.

    Installed outermost, the handler runs while the request's context is set; installed with
    ``add_middleware`` it runs after, and the id is on the exception.
    """
    request_id = meshprop.request_id() or exception_request_id(exc)
    return JSONResponse(
        {"in_context": meshprop.request_id(), "on_exception": exception_request_id(exc)},
        status_code=500,
        headers={"X-Request-ID": request_id} if request_id else None,
    )


async def _inner_dispatch(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    seen = meshprop.request_id()
    response = await call_next(request)
    response.headers[INNER_HEADER] = str(seen)
    return response


def _lifespan(seen: Seen) -> Callable[[Any], Any]:
    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        seen.lifespan.append(meshprop.request_id())
        yield

    return lifespan


def build(
    framework: str,
    install: str,
    config: Config | None = None,
    *,
    exception_handler: bool = False,
) -> tuple[ASGIApp, Seen]:
    """One app variant, with the middleware installed, and the record of what it saw."""
    seen = Seen()
    app: Any = _starlette_app(seen) if framework == "starlette" else _fastapi_app(seen)
    if exception_handler:
        app.add_exception_handler(Exception, _on_exception)
    if install == "add_middleware":
        app.add_middleware(MeshPropMiddleware, config=config)
        return app, seen
    return MeshPropMiddleware(app, config=config), seen


def _starlette_app(seen: Seen) -> Starlette:
    async def show(request: Request) -> Response:
        return JSONResponse(seen_now())

    def show_sync(request: Request) -> Response:
        return JSONResponse(seen_now())

    async def own_id(request: Request) -> Response:
        return PlainTextResponse("own", headers={"X-Request-ID": APP_SET_ID})

    async def stream(request: Request) -> Response:
        return StreamingResponse(_chunks())

    async def stream_sync(request: Request) -> Response:
        return StreamingResponse(_sync_chunks())

    async def background(request: Request) -> Response:
        def record() -> None:
            seen.background.append(meshprop.request_id())

        return JSONResponse({}, background=BackgroundTask(record))

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(meshprop.request_id()))
        await websocket.close()

    async def ws_deny(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no", status_code=403))

    return Starlette(
        routes=[
            Route("/id", show),
            Route("/sync", show_sync),
            Route("/own-id", own_id),
            Route("/stream", stream),
            Route("/stream-sync", stream_sync),
            Route("/background", background),
            Route("/boom", boom),
            WebSocketRoute("/ws", ws),
            WebSocketRoute("/ws-deny", ws_deny),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_inner_dispatch)],
        lifespan=_lifespan(seen),
    )


def _fastapi_app(seen: Seen) -> fastapi.FastAPI:
    app = fastapi.FastAPI(lifespan=_lifespan(seen))
    app.middleware("http")(_inner_dispatch)

    @app.get("/id")
    async def show() -> dict[str, Any]:
        return seen_now()

    @app.get("/sync")
    def show_sync() -> dict[str, Any]:
        return seen_now()

    @app.get("/own-id")
    async def own_id() -> Response:
        return PlainTextResponse("own", headers={"X-Request-ID": APP_SET_ID})

    @app.get("/stream")
    async def stream() -> Response:
        return StreamingResponse(_chunks())

    @app.get("/stream-sync")
    async def stream_sync() -> Response:
        return StreamingResponse(_sync_chunks())

    @app.get("/background")
    async def background(tasks: fastapi.BackgroundTasks) -> dict[str, Any]:
        tasks.add_task(lambda: seen.background.append(meshprop.request_id()))
        return {}

    def sync_dependency() -> str | None:
        return meshprop.request_id()

    async def async_dependency() -> str | None:
        return meshprop.request_id()

    @app.get("/dependency")
    async def dependency(
        from_sync: str | None = fastapi.Depends(sync_dependency),
        from_async: str | None = fastapi.Depends(async_dependency),
    ) -> dict[str, Any]:
        return {"sync": from_sync, "async": from_async}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.websocket("/ws")
    async def ws(websocket: fastapi.WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(meshprop.request_id()))
        await websocket.close()

    @app.websocket("/ws-deny")
    async def ws_deny(websocket: fastapi.WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no", status_code=403))

    return app
