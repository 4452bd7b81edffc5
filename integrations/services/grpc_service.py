"""The gRPC hop: a ``grpc.server`` with ``meshprop.grpc.server_interceptor()`` in; its ``Chain``
method records the metadata it received and calls the next hop over HTTP with
``meshprop.httpx.Client``. ``fastapi_grpc_service`` is the HTTP hop that calls it.

gRPC cannot serve on a socket it is handed, so the launcher hands the ``grpc`` hop a socket
that is bound with ``SO_REUSEPORT`` and not listening: the port is reserved before the process
starts, grpc binds the same port beside it (grpc sets ``SO_REUSEPORT`` too), and the reserving
socket, which never accepts, is closed once grpc listens.
"""

from __future__ import annotations

import json
import socket
from concurrent import futures
from typing import Any

import grpc

import meshprop.grpc
import meshprop.httpx

from ._record import CHAIN_PATH, HopRecord, finish_record, hop_record

SERVICE = "meshprop.chain.Hop"
CHAIN_METHOD = f"/{SERVICE}/Chain"
HEALTH_METHOD = f"/{SERVICE}/Health"


def build_grpc_server(name: str, next_url: str | None) -> grpc.Server:
    http_client = meshprop.httpx.Client(timeout=10.0, trust_env=False)

    def chain(request: bytes, context: grpc.ServicerContext) -> bytes:
        received = [
            (key, value) for key, value in context.invocation_metadata() if isinstance(value, str)
        ]
        record = hop_record(name, "gRPC", "grpc.server", received)
        downstream: list[HopRecord] = []
        if next_url is not None:
            reply = http_client.get(next_url + CHAIN_PATH, params=json.loads(request or b"{}"))
            reply.raise_for_status()
            downstream = reply.json()
        return json.dumps(finish_record(record, downstream)).encode()

    def health(request: bytes, context: grpc.ServicerContext) -> bytes:
        return b"ok"

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        interceptors=[meshprop.grpc.server_interceptor()],
    )
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Chain": grpc.unary_unary_rpc_method_handler(chain),
        "Health": grpc.unary_unary_rpc_method_handler(health),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    return server


def serve(name: str, next_url: str | None, reserved: socket.socket) -> None:
    host, port = reserved.getsockname()[:2]
    server = build_grpc_server(name, next_url)
    if server.add_insecure_port(f"{host}:{port}") != port:
        raise RuntimeError(f"grpc could not bind {host}:{port}")
    server.start()
    reserved.close()
    server.wait_for_termination()
