"""MeshPropMiddleware behind a real uvicorn server, over real sockets on 127.0.0.1.

The concurrency test is the bug this package exists to prevent: many requests in flight on one
event loop, each forwarding its id to a second server through ``meshprop.httpx.AsyncClient``;
every call the second server records must carry the id of the request that made it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import parse_qs

import fastapi
import httpx
import pytest
import uvicorn
import websockets

import meshprop
import meshprop.httpx
from meshprop._snapshot import exception_request_id
from meshprop.asgi import ASGIApp, MeshPropMiddleware, Receive, Scope, Send
from tests import asgi_apps
from tests.asgi_apps import INSTALLS

CONCURRENT_REQUESTS = 500
STARTUP_SECONDS = 15.0


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Run ``app`` on uvicorn in a thread, on a free loopback port; yield ``host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, access_log=False, backlog=2048)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_SECONDS)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


class Recorder:
    """The downstream service: records which request id each call carried."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        made_for = parse_qs(scope["query_string"].decode())["for"][0]
        carried = [value.decode() for name, value in scope["headers"] if name == b"x-request-id"]
        await asyncio.sleep(0.005)  # keep many calls in flight at once
        self.calls.append((made_for, carried))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def forwarding_app(install: str, recorder_address: str) -> tuple[ASGIApp, dict[str, int]]:
    """A FastAPI service whose endpoint calls the recorder, naming the id it was called with."""
    in_flight = {"now": 0, "peak": 0}
    clients: list[meshprop.httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with meshprop.httpx.AsyncClient(
            base_url=f"http://{recorder_address}",
            limits=httpx.Limits(max_connections=50),
            timeout=60,
        ) as client:
            clients.append(client)
            yield

    app = fastapi.FastAPI(lifespan=lifespan)

    @app.get("/forward")
    async def forward(request: fastapi.Request) -> dict[str, Any]:
        in_flight["now"] += 1
        in_flight["peak"] = max(in_flight["peak"], in_flight["now"])
        called_with = request.headers["x-request-id"]  # read without meshprop
        await asyncio.sleep(0)
        await clients[0].get("/record", params={"for": called_with})
        in_flight["now"] -= 1
        return {"seen": meshprop.request_id()}

    if install == "add_middleware":
        app.add_middleware(MeshPropMiddleware)
        return app, in_flight
    return MeshPropMiddleware(app), in_flight


async def test_concurrent_requests_forward_only_their_own_id() -> None:
    recorder = Recorder()
    with serving(recorder) as recorder_address:
        app, in_flight = forwarding_app("add_middleware", recorder_address)
        with serving(app) as address:
            async with httpx.AsyncClient(
                base_url=f"http://{address}",
                limits=httpx.Limits(max_connections=CONCURRENT_REQUESTS),
                timeout=120,
            ) as client:
                ids = [f"req-{index:04d}" for index in range(CONCURRENT_REQUESTS)]
                responses = await asyncio.gather(
                    *(client.get("/forward", headers={"x-request-id": id_}) for id_ in ids)
                )

    for id_, response in zip(ids, responses, strict=True):
        assert response.status_code == 200
        assert response.json() == {"seen": id_}
        assert response.headers.get_list("x-request-id") == [id_]
    assert len(recorder.calls) == CONCURRENT_REQUESTS
    assert sorted(made_for for made_for, _ in recorder.calls) == ids
    for made_for, carried in recorder.calls:
        assert carried == [made_for]
    assert in_flight["peak"] > 1  # the requests really overlapped


class _Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def uvicorn_errors() -> Iterator[list[logging.LogRecord]]:
    """The records uvicorn logs, such as its "Exception in ASGI application"."""
    handler = _Collecting()
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("install", INSTALLS)
async def test_500_and_uvicorns_log_record_carry_the_id(install: str) -> None:
    app, _ = asgi_apps.build("fastapi", install)
    with uvicorn_errors() as records, serving(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            response = await client.get("/boom", headers={"x-request-id": "boom-1"})
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            # uvicorn closed the failed request's connection; a new one is served as usual.
            assert (await client.get("/id")).status_code == 200

    assert response.status_code == 500
    # Outermost, the 500 Starlette builds leaves through the middleware; inside, it cannot.
    expected_echo = ["boom-1"] if install == "wrap" else []
    assert response.headers.get_list("x-request-id") == expected_echo

    logged = [r for r in records if r.getMessage().startswith("Exception in ASGI application")]
    assert len(logged) == 1
    assert logged[0].exc_info is not None
    error = logged[0].exc_info[1]
    assert isinstance(error, RuntimeError)
    assert exception_request_id(error) == "boom-1"


async def test_apps_exception_handler_echoes_the_id_over_uvicorn() -> None:
    app, _ = asgi_apps.build("fastapi", "add_middleware", exception_handler=True)
    with uvicorn_errors(), serving(app) as address:
        async with httpx.AsyncClient(base_url=f"http://{address}") as client:
            response = await client.get("/boom", headers={"x-request-id": "boom-2"})
    assert response.status_code == 500
    assert response.json() == {"in_context": None, "on_exception": "boom-2"}
    assert response.headers.get_list("x-request-id") == ["boom-2"]


@pytest.mark.parametrize("install", INSTALLS)
async def test_websocket_over_uvicorn(install: str) -> None:
    app, _ = asgi_apps.build("starlette", install)
    with serving(app) as address:
        async with websockets.connect(
            f"ws://{address}/ws", additional_headers={"x-request-id": "ws-real"}
        ) as connection:
            assert await connection.recv() == "ws-real"
            assert connection.response is not None
            assert connection.response.headers.get_all("x-request-id") == ["ws-real"]
