"""The FastAPI hop: meshprop's ASGI middleware in, ``meshprop.httpx.AsyncClient`` out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeVar

import httpx
import uvicorn
from fastapi import FastAPI, Request

import meshprop.asgi
import meshprop.httpx

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record

#: What a hop keeps open to call the next one: an HTTP client, a gRPC channel.
Downstream = TypeVar("Downstream")


def build_hop(
    name: str,
    open_downstream: Callable[[], AbstractAsyncContextManager[Downstream]],
    call_downstream: Callable[[Downstream, Request], Awaitable[list[HopRecord]]],
) -> FastAPI:
    """A FastAPI hop behind meshprop's ASGI middleware: ``/chain`` records what it received and
    appends what ``call_downstream`` got from the next hop through the one connection
    ``open_downstream`` opened at startup. A real service keeps one client for every request:
    what it forwards must come from the request's context, never from the client."""
    opened: list[Downstream] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_downstream() as connection:
            opened.append(connection)
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(meshprop.asgi.MeshPropMiddleware)

    @app.get(HEALTH_PATH)
    async def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    async def chain(request: Request) -> list[HopRecord]:
        record = hop_record(name, "FastAPI", "uvicorn", request.headers.items())
        return finish_record(record, await call_downstream(opened[0], request))

    return app


def serve_app(app: FastAPI, listener: socket.socket) -> None:
    """Serve ``app`` on uvicorn from the listening socket the launcher handed over."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))


def build_app(name: str, next_url: str | None) -> FastAPI:
    """The hop that calls the next one over HTTP with ``meshprop.httpx.AsyncClient``."""

    async def call_next(client: httpx.AsyncClient, request: Request) -> list[HopRecord]:
        if next_url is None:
            return []
        response = await client.get(next_url + CHAIN_PATH, params=request.query_params)
        response.raise_for_status()
        downstream: list[HopRecord] = response.json()
        return downstream

    def open_client() -> httpx.AsyncClient:
        return meshprop.httpx.AsyncClient(timeout=10.0, trust_env=False)

    return build_hop(name, open_client, call_next)


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    serve_app(build_app(name, next_url), listener)
