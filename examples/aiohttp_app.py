"""aiohttp + meshprop: one setup line in, one client session out.

DOWNSTREAM_URL=http://reviews:9080 python -m aiohttp.web -P 9080 examples.aiohttp_app:make_app
"""

import os
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

import meshprop
import meshprop.aiohttp

DOWNSTREAM_URL = os.environ.get("DOWNSTREAM_URL", "http://reviews:9080")
HTTP = web.AppKey("http", aiohttp.ClientSession)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    async with meshprop.aiohttp.ClientSession() as session:  # forwards the mesh headers
        app[HTTP] = session
        yield


async def index(request: web.Request) -> web.Response:
    return web.json_response({"request_id": meshprop.request_id(), "trace_id": meshprop.trace_id()})


async def call(request: web.Request) -> web.Response:
    async with request.app[HTTP].get(f"{DOWNSTREAM_URL}/") as reply:
        downstream = await reply.json()
    return web.json_response({"request_id": meshprop.request_id(), "downstream": downstream})


def make_app(argv: list[str] | None = None) -> web.Application:
    app = web.Application()
    meshprop.aiohttp.setup(app)  # the one line
    app.cleanup_ctx.append(client_session)
    app.add_routes([web.get("/", index), web.get("/call", call)])
    return app
