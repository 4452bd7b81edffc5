"""The FastAPI hop: meshprop's ASGI middleware in, ``meshprop.httpx.AsyncClient`` out."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request

import meshprop.asgi
import meshprop.httpx

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record


def build_app(name: str, next_url: str | None) -> FastAPI:
    client: httpx.AsyncClient | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client for every request, as a real service keeps one: what it forwards must
        # come from the request's context, never from the client.
        nonlocal client
        async with meshprop.httpx.AsyncClient(timeout=10.0, trust_env=False) as client:
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(meshprop.asgi.MeshPropMiddleware)

    @app.get(HEALTH_PATH)
    async def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    async def chain(request: Request) -> list[HopRecord]:
        record = hop_record(name, "FastAPI", "uvicorn", request.headers.items())
        downstream: list[HopRecord] = []
        if next_url is not None and client is not None:
            response = await client.get(next_url + CHAIN_PATH, params=request.query_params)
            response.raise_for_status()
            downstream = response.json()
        return finish_record(record, downstream)

    return app


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    config = uvicorn.Config(
        build_app(name, next_url), log_level="warning", access_log=False, lifespan="on"
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))
