"""The aiohttp hop: ``meshprop.aiohttp.middleware()`` in, a ``ClientSession`` with
``meshprop.aiohttp.trace_config()`` out."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

import meshprop.aiohttp

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record

_SESSION = web.AppKey("session", aiohttp.ClientSession)


def build_app(name: str, next_url: str | None) -> web.Application:
    async def client_session(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            trace_configs=[meshprop.aiohttp.trace_config()],
            timeout=aiohttp.ClientTimeout(total=10.0),
        ) as session:
            app[_SESSION] = session
            yield

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def chain(request: web.Request) -> web.Response:
        record = hop_record(name, "aiohttp", "aiohttp.web", request.headers.items())
        downstream: list[HopRecord] = []
        if next_url is not None:
            session = request.app[_SESSION]
            async with session.get(next_url + CHAIN_PATH, params=request.query) as reply:
                reply.raise_for_status()
                downstream = await reply.json()
        return web.json_response(finish_record(record, downstream))

    app = web.Application(middlewares=[meshprop.aiohttp.middleware()])
    app.cleanup_ctx.append(client_session)
    app.router.add_get(HEALTH_PATH, health)
    app.router.add_get(CHAIN_PATH, chain)
    return app


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    web.run_app(build_app(name, next_url), sock=listener, print=None, access_log=None)
