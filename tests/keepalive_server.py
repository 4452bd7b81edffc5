"""The service ``test_asgi_keepalive`` runs in a subprocess, on a socket the test listens on.

``python -m tests.keepalive_server SERVER INSTALL FD``: SERVER is ``uvicorn-h11``,
``uvicorn-httptools`` or ``hypercorn``; INSTALL is ``wrap`` or ``add_middleware``; FD is the
inherited listening socket. Every log record goes to stderr as ``<request_id> <message>``,
through ``meshprop.logging.ContextFilter``, as a service would log it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import meshprop
from meshprop.asgi import ASGIApp, MeshPropMiddleware
from meshprop.logging import ContextFilter

LOG_FORMAT = "%(request_id)s %(message)s"


async def show_id(request: Request) -> Response:
    return PlainTextResponse(str(meshprop.request_id()))


async def upload(request: Request) -> Response:
    return PlainTextResponse(str(len(await request.body())))


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def on_error(request: Request, exc: Exception) -> Response:
    """The README's handler, which echoes the id on the 500 under either install."""
    request_id = meshprop.request_id() or meshprop.exception_request_id(exc)
    return JSONResponse(
        {"error": "internal"},
        status_code=500,
        headers={"x-request-id": request_id} if request_id else None,
    )


def build(install: str) -> ASGIApp:
    routes = [
        Route("/id", show_id),
        Route("/upload", upload, methods=["POST"]),
        Route("/boom", boom),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(Exception, on_error)
    if install == "add_middleware":
        app.add_middleware(MeshPropMiddleware)
        return app
    return MeshPropMiddleware(app)


def serve(server: str, app: ASGIApp, listening: socket.socket) -> None:
    if server == "hypercorn":
        import hypercorn.asyncio
        import hypercorn.config

        hypercorn_config = hypercorn.config.Config()
        hypercorn_config.bind = [f"fd://{listening.fileno()}"]
        hypercorn_config.errorlog = logging.getLogger("hypercorn.error")
        asyncio.run(hypercorn.asyncio.serve(app, hypercorn_config))  # type: ignore[arg-type]
        return
    import uvicorn

    http = server.removeprefix("uvicorn-")
    config = uvicorn.Config(app, http=http, log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[listening])


def main() -> None:
    server, install, fd = sys.argv[1:]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    serve(server, build(install), socket.socket(fileno=int(fd)))


if __name__ == "__main__":
    main()
