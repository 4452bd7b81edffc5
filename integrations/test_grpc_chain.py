"""HTTP -> gRPC -> HTTP, three processes on 127.0.0.1: one request id and one trace throughout.

FastAPI on uvicorn calls a ``grpc.server`` through a ``grpc.aio`` channel with meshprop's client
interceptors; the gRPC handler calls an aiohttp service with ``meshprop.httpx.Client``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from ._assertions import assert_generated_request_id_travels, assert_one_request_id_and_one_trace
from ._mesh import (
    HOST,
    STARTUP_TIMEOUT,
    Chain,
    Hop,
    _Processes,
    call_chain,
    listening_socket,
    running_processes,
    start_hop,
    wait_until_healthy,
)
from ._report import ISTIO_HEADERS
from .services._record import HEALTH_PATH
from .services.grpc_service import HEALTH_METHOD

NAMES = ("productpage", "reviews", "ratings")


def reserved_port() -> socket.socket:
    """A loopback port held for the gRPC hop: bound with SO_REUSEPORT, never listening, so
    grpc in the child can bind it too and no other process can take it meanwhile."""
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reserved.bind((HOST, 0))
    reserved.set_inheritable(True)
    return reserved


def wait_until_grpc_answers(target: str, processes: _Processes, timeout: float) -> None:
    """Call the gRPC hop's Health method until it answers; bounded, and failing early if a
    process dies."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health: Any = channel.unary_unary(HEALTH_METHOD)
        while True:
            processes.check_alive()
            try:
                health(b"", timeout=1.0)
                return
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{target} did not answer within {timeout} s") from None
                time.sleep(0.05)


@pytest.fixture(scope="module")
def grpc_chain() -> Iterator[Chain]:
    front, last = listening_socket(), listening_socket()
    reserved = reserved_port()
    try:
        front_url = f"http://{HOST}:{front.getsockname()[1]}"
        target = f"{HOST}:{reserved.getsockname()[1]}"
        last_url = f"http://{HOST}:{last.getsockname()[1]}"
        hops = (
            (Hop(NAMES[0], "fastapi-grpc", front_url), front, target),
            (Hop(NAMES[1], "grpc", target), reserved, last_url),
            (Hop(NAMES[2], "aiohttp", last_url), last, None),
        )
        with running_processes() as processes:
            for hop, held, next_hop in hops:
                start_hop(processes, hop, held, next_hop)
            for _, held, _ in hops:
                held.close()
            wait_until_grpc_answers(target, processes, STARTUP_TIMEOUT)
            wait_until_healthy(
                [front_url + HEALTH_PATH, last_url + HEALTH_PATH], processes, STARTUP_TIMEOUT
            )
            yield Chain(tuple(hop for hop, _, _ in hops))
    finally:
        for held in (front, last, reserved):
            held.close()


def test_one_request_id_and_one_trace_across_http_grpc_http(
    grpc_chain: Chain, client: httpx.Client
) -> None:
    response, hops = call_chain(client, grpc_chain.entry_url, ISTIO_HEADERS)

    assert [hop["service"] for hop in hops] == list(NAMES)
    assert [hop["framework"] for hop in hops] == ["FastAPI", "gRPC", "aiohttp"]
    assert_one_request_id_and_one_trace(ISTIO_HEADERS, response, hops)


def test_a_request_id_generated_at_the_edge_crosses_grpc(
    grpc_chain: Chain, client: httpx.Client
) -> None:
    response, hops = call_chain(client, grpc_chain.entry_url, {})

    assert_generated_request_id_travels(response, hops)


async def test_concurrent_requests_never_cross_through_grpc(grpc_chain: Chain) -> None:
    def headers_for(number: int) -> dict[str, str]:
        return {
            "x-request-id": f"grpc-concurrent-{number}",
            "traceparent": f"00-{number + 1:032x}-{number + 1:016x}-01",
        }

    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as outside_client:

        async def one(number: int) -> tuple[dict[str, str], httpx.Response]:
            sent = headers_for(number)
            return sent, await outside_client.get(grpc_chain.entry_url, headers=sent)

        results = await asyncio.gather(*(one(number) for number in range(30)))

    for sent, response in results:
        assert response.status_code == 200
        hops = response.json()
        assert len(hops) == 3
        assert_one_request_id_and_one_trace(sent, response, hops)
