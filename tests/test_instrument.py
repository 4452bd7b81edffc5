"""``meshprop.instrument()``: code that never imports meshprop forwards the headers, through
every supported client, and ``uninstrument()`` leaves the process as it found it.

``tests.fake_sdk`` stands for a third-party SDK: it makes its own clients, some when it is
imported (here, before ``instrument()`` runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import meshprop
from meshprop import _instrument
from tests import fake_sdk
from tests.recording_server import RecordingServer, recording_server

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INBOUND = {"x-request-id": "req-1", "traceparent": TRACEPARENT}
ALL_CALLS = sorted([*fake_sdk.CALLS, *fake_sdk.ASYNC_CALLS])


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@contextlib.contextmanager
def instrumented_with(config: meshprop.Config | None = None) -> Iterator[None]:
    """``instrument(config)`` for the ``with`` block, undone after it, also when it fails."""
    meshprop.instrument(config)
    try:
        yield
    finally:
        meshprop.uninstrument()


@pytest.fixture
def instrumented() -> Iterator[None]:
    with instrumented_with():
        yield


def call(name: str, url: str) -> int:
    if name in fake_sdk.CALLS:
        status: int = fake_sdk.CALLS[name](url)
        return status
    result: int = asyncio.run(fake_sdk.ASYNC_CALLS[name](url))
    return result


def forwarded(server: RecordingServer, index: int = -1) -> list[tuple[str, str]]:
    """The propagation headers one request carried, repeats kept (a header sent twice shows)."""
    return [
        (n, v) for n, v in server.received[index].headers if n in ("x-request-id", "traceparent")
    ]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("name", ALL_CALLS)
def test_every_client_of_an_sdk_forwards_once(server: RecordingServer, name: str) -> None:
    with meshprop.bind(INBOUND):
        assert call(name, server.url + "/a") == 200
    assert sorted(forwarded(server)) == [("traceparent", TRACEPARENT), ("x-request-id", "req-1")]


@pytest.mark.usefixtures("instrumented")
@pytest.mark.parametrize("name", ALL_CALLS)
def test_outside_a_request_nothing_is_added(server: RecordingServer, name: str) -> None:
    assert call(name, server.url + "/a") == 200
    assert forwarded(server) == []


@pytest.mark.parametrize("name", ALL_CALLS)
def test_a_host_outside_the_scope_gets_nothing(server: RecordingServer, name: str) -> None:
    with instrumented_with(meshprop.Config(scope=["*.svc.cluster.local"])), meshprop.bind(INBOUND):
        assert call(name, server.url + "/a") == 200
    assert forwarded(server) == []


@pytest.mark.parametrize("name", ALL_CALLS)
def test_each_redirect_hop_is_decided_again(server: RecordingServer, name: str) -> None:
    """127.0.0.1 is in the scope and localhost (the same server) is not: the hop there gets
    nothing, the hop back gets the headers again."""
    port = server.url.rsplit(":", 1)[1]
    server.redirects["/out"] = f"http://localhost:{port}/back"
    server.redirects["/back"] = f"{server.url}/end"
    with instrumented_with(meshprop.Config(scope=["127.0.0.1"])), meshprop.bind(INBOUND):
        assert call(name, server.url + "/out") == 200
    paths = [received.path for received in server.received]
    assert paths == ["/out", "/back", "/end"]
    assert len(forwarded(server, 0)) == 2
    assert forwarded(server, 1) == []
    assert len(forwarded(server, 2)) == 2


@pytest.mark.parametrize("name", ALL_CALLS)
def test_after_uninstrument_nothing_is_forwarded(server: RecordingServer, name: str) -> None:
    meshprop.instrument()
    meshprop.uninstrument()
    with meshprop.bind(INBOUND):
        assert call(name, server.url + "/a") == 200
    assert forwarded(server) == []


def _patched_attributes() -> dict[tuple[Any, str], Any]:
    import importlib

    from meshprop import _patches

    seen: dict[tuple[Any, str], Any] = {}
    for patch in _instrument._patches:
        owner: Any = importlib.import_module(patch.module)
        for part in patch.owner.split("."):
            owner = getattr(owner, part)
        seen[(owner, patch.attribute)] = vars(owner).get(patch.attribute, _patches)
    return seen


def test_uninstrument_restores_every_attribute_exactly() -> None:
    meshprop.instrument()  # registers the built-in patches
    meshprop.uninstrument()
    before = _patched_attributes()
    meshprop.instrument()
    during = _patched_attributes()
    meshprop.instrument()  # idempotent: nothing is stacked
    assert _patched_attributes() == during
    meshprop.uninstrument()
    after = _patched_attributes()
    assert after == before
    assert all(during[key] is not before[key] for key in before)


def test_a_meshprop_client_in_an_instrumented_process_adds_each_header_once(
    server: RecordingServer,
) -> None:
    with instrumented_with():
        with meshprop.bind(INBOUND), meshprop.httpx.Client() as client:
            client.get(server.url + "/a")
        with meshprop.bind(INBOUND), meshprop.requests.Session() as session:
            session.trust_env = False
            session.get(server.url + "/b")
    for index in (0, 1):
        assert sorted(forwarded(server, index)) == [
            ("traceparent", TRACEPARENT),
            ("x-request-id", "req-1"),
        ]


def test_threads_and_executors_carry_the_submitters_context() -> None:
    seen: list[str | None] = []
    with instrumented_with():
        with meshprop.bind(INBOUND):
            thread = threading.Thread(target=lambda: seen.append(meshprop.request_id()))
            thread.start()
            thread.join(10)
            with ThreadPoolExecutor(2) as executor:
                seen.append(executor.submit(meshprop.request_id).result(10))

            async def in_executor() -> str | None:
                return await asyncio.get_running_loop().run_in_executor(None, meshprop.request_id)

            seen.append(asyncio.run(in_executor()))
        with ThreadPoolExecutor(1) as executor:
            seen.append(executor.submit(meshprop.request_id).result(10))  # outside: none
    assert seen == ["req-1", "req-1", "req-1", None]


def test_without_instrument_a_thread_starts_empty() -> None:
    seen: list[str | None] = []
    with meshprop.bind(INBOUND):
        thread = threading.Thread(target=lambda: seen.append(meshprop.request_id()))
        thread.start()
        thread.join(10)
    assert seen == [None]


@pytest.mark.usefixtures("instrumented")
def test_a_fastapi_app_gets_meshprop_outermost() -> None:
    from fastapi import FastAPI, Request
    from fastapi.testclient import TestClient

    app = FastAPI()
    seen: dict[str, str | None] = {}

    @app.middleware("http")
    async def user_hook(request: Request, call_next: Any) -> Any:
        seen["hook"] = meshprop.request_id()
        return await call_next(request)

    @app.get("/ok")
    def ok() -> dict[str, str | None]:
        return {"request_id": meshprop.request_id()}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/ok", headers={"x-request-id": "in-1"}).json() == {"request_id": "in-1"}
        assert seen["hook"] == "in-1"
        failed = client.get("/boom", headers={"x-request-id": "in-2"})
        assert failed.status_code == 500 and failed.headers["x-request-id"] == "in-2"


@pytest.mark.usefixtures("instrumented")
def test_an_app_that_adds_the_middleware_itself_gets_one_request_id() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.add_middleware(meshprop.asgi.MeshPropMiddleware)

    @app.get("/")
    def endpoint() -> str | None:
        return meshprop.request_id()

    with TestClient(app) as client:
        response = client.get("/")
    assert response.json() == response.headers["x-request-id"]
    assert response.headers.get_list("x-request-id") == [response.json()]


@pytest.mark.usefixtures("instrumented")
def test_a_flask_app_captures_and_echoes() -> None:
    import flask

    app = flask.Flask(__name__)

    @app.get("/")
    def index() -> dict[str, str | None]:
        return {"request_id": meshprop.request_id()}

    response = app.test_client().get("/", headers={"x-request-id": "in-3"})
    assert response.get_json() == {"request_id": "in-3"}
    assert response.headers.getlist("x-request-id") == ["in-3"]


@pytest.mark.usefixtures("instrumented")
async def test_an_aiohttp_application_is_set_up() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"request_id": meshprop.request_id()})

    app = web.Application()
    app.router.add_get("/", handler)
    meshprop.aiohttp.setup(app)  # an explicit setup beside instrument() changes nothing
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/", headers={"x-request-id": "in-4"})
        assert await response.json() == {"request_id": "in-4"}
        assert response.headers.getall("x-request-id") == ["in-4"]


def test_without_instrument_run_in_executor_loses_the_context() -> None:
    """What the README's table says ``instrument()`` fixes."""

    async def in_executor() -> str | None:
        with meshprop.bind(INBOUND):
            return await asyncio.get_running_loop().run_in_executor(None, meshprop.request_id)

    assert asyncio.run(in_executor()) is None


@pytest.mark.usefixtures("instrumented")
def test_a_header_a_requests_caller_removed_stays_removed(server: RecordingServer) -> None:
    import requests

    session = requests.Session()
    session.trust_env = False
    with meshprop.bind(INBOUND):
        session.get(server.url + "/a", headers={"x-request-id": None})
    assert forwarded(server) == [("traceparent", TRACEPARENT)]
