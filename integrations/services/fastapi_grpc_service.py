"""The FastAPI hop in front of a gRPC one: meshprop's ASGI middleware in, a ``grpc.aio`` channel
with ``meshprop.grpc.aio_client_interceptors(target)`` out. ``--next`` is the gRPC target."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import grpc.aio
import uvicorn
from fastapi import FastAPI, Request

import meshprop.asgi
import meshprop.grpc

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record
from .grpc_service import CHAIN_METHOD


def build_front(name: str, target: str) -> FastAPI:
    channel: grpc.aio.Channel | None = None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One channel for every request, as a real service keeps one.
        nonlocal channel
        interceptors = meshprop.grpc.aio_client_interceptors(target)
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(meshprop.asgi.MeshPropMiddleware)

    @app.get(HEALTH_PATH)
    async def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    async def chain(request: Request) -> list[HopRecord]:
        record = hop_record(name, "FastAPI", "uvicorn", request.headers.items())
        assert channel is not None
        call: Any = channel.unary_unary(CHAIN_METHOD)
        reply = await call(json.dumps(dict(request.query_params)).encode(), timeout=10.0)
        return finish_record(record, json.loads(reply))

    return app


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    if next_url is None:
        raise SystemExit("fastapi-grpc needs --next, the gRPC hop's target")
    config = uvicorn.Config(
        build_front(name, next_url), log_level="warning", access_log=False, lifespan="on"
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))
