"""The FastAPI hop in front of a gRPC one: meshprop's ASGI middleware in, a ``grpc.aio`` channel
with ``meshprop.grpc.aio_client_interceptors(target)`` out. ``--next`` is the gRPC target."""

from __future__ import annotations

import json
import socket
from typing import Any

import grpc
import grpc.aio
from fastapi import FastAPI, Request

import meshprop.grpc

from ._record import HopRecord
from .fastapi_service import build_hop, serve_app
from .grpc_service import CHAIN_METHOD


def build_front(name: str, target: str) -> FastAPI:
    """The hop that calls the gRPC one through a channel with meshprop's client interceptors."""

    async def call_grpc_hop(channel: grpc.aio.Channel, request: Request) -> list[HopRecord]:
        call: Any = channel.unary_unary(CHAIN_METHOD)
        reply = await call(json.dumps(dict(request.query_params)).encode(), timeout=10.0)
        downstream: list[HopRecord] = json.loads(reply)
        return downstream

    def open_channel() -> grpc.aio.Channel:
        interceptors = meshprop.grpc.aio_client_interceptors(target)
        return grpc.aio.insecure_channel(target, interceptors=interceptors)

    return build_hop(name, open_channel, call_grpc_hop)


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    if next_url is None:
        raise SystemExit("fastapi-grpc needs --next, the gRPC hop's target")
    serve_app(build_front(name, next_url), listener)
