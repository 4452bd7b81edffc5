"""The aiohttp server middleware, served for real by an AppRunner on 127.0.0.1.

Every behaviour both installs share is checked for both (``middleware()`` in the list and
``setup(app)``); the two places only ``setup`` reaches (a response the handler prepares itself,
aiohttp's own 500) are checked for each install separately.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

import meshprop
import meshprop.aiohttp
from meshprop._snapshot import CURRENT, exception_request_id

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Recorder:
    """What the app saw, in order: the id at each layer, and the context around meshprop."""

    def __init__(self) -> None:
        self.handler_ids: list[str | None] = []
        self.inner_ids: list[str | None] = []
        self.before: list[object] = []  # CURRENT outside meshprop, as a request arrives
        self.after: list[object] = []  # CURRENT outside meshprop, once the request is done
        self.stream_closed = asyncio.Event()


def build_app(install: str, recorder: Recorder, **setup_kwargs: Any) -> web.Application:
    """The test app, meshprop installed one way or the other, with a probe around it."""

    @web.middleware
    async def probe(request: web.Request, handler: Any) -> web.StreamResponse:
        recorder.before.append(CURRENT.get())
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            recorder.after.append(CURRENT.get())

    @web.middleware
    async def inner(request: web.Request, handler: Any) -> web.StreamResponse:
        recorder.inner_ids.append(meshprop.request_id())
        return await handler(request)  # type: ignore[no-any-return]

    async def show_id(request: web.Request) -> web.Response:
        recorder.handler_ids.append(meshprop.request_id())
        return web.json_response({"request_id": meshprop.request_id(), **meshprop.current()})

    async def own_id(request: web.Request) -> web.Response:
        return web.Response(text="mine", headers={"X-Request-ID": "set-by-handler"})

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(str(meshprop.request_id()).encode())
        await response.write_eof()
        return response

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            for _ in range(2000):  # bounded: about 20 s if the client never goes away
                await response.write(b"chunk\n")
                await asyncio.sleep(0.01)
        finally:
            recorder.handler_ids.append(meshprop.request_id())
            recorder.stream_closed.set()
        return response

    async def bad_request(request: web.Request) -> web.Response:
        raise web.HTTPServiceUnavailable(text="later")

    async def conflict_with_own_id(request: web.Request) -> web.Response:
        raise web.HTTPConflict(headers={"x-request-id": "set-on-exception"})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("boom")

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(str(meshprop.request_id()))
        await ws.close()
        return ws

    if install == "middleware":
        app = web.Application(middlewares=[probe, meshprop.aiohttp.middleware(), inner])
    else:
        app = web.Application(middlewares=[inner])
        meshprop.aiohttp.setup(app, **setup_kwargs)
        app.middlewares.insert(0, probe)
    app.router.add_get("/id", show_id)
    app.router.add_get("/own-id", own_id)
    app.router.add_get("/stream", stream)
    app.router.add_get("/endless", endless)
    app.router.add_get("/unavailable", bad_request)
    app.router.add_get("/conflict", conflict_with_own_id)
    app.router.add_get("/boom", boom)
    app.router.add_get("/ws", socket)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yield its base URL; stop it, bounded."""
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture(params=["middleware", "setup"])
def install(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def server(install: str, recorder: Recorder) -> AsyncIterator[str]:
    async with serving(build_app(install, recorder)) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


async def test_handler_and_inner_middleware_see_the_request(
    server: str, client: aiohttp.ClientSession, recorder: Recorder
) -> None:
    headers = {"X-Request-Id": "req-1", "TraceParent": TRACEPARENT, "X-Envoy-Attempt-Count": "1"}
    async with client.get(f"{server}/id", headers=headers) as response:
        body = await response.json()
        echoed = response.headers.getall("x-request-id")
    assert body == {"request_id": "req-1", "x-request-id": "req-1", "traceparent": TRACEPARENT}
    assert recorder.inner_ids == ["req-1"]
    assert recorder.handler_ids == ["req-1"]
    assert echoed == ["req-1"]


@pytest.mark.parametrize(
    ("repeated", "forwarded"),
    [
        # Two traceparent headers are invalid together; tracestate joins; otherwise the first
        # wins. (aiohttp's client sends a repeat only when the name is spelt the same.)
        ([("TraceParent", TRACEPARENT), ("TraceParent", TRACEPARENT)], {}),
        (
            [("traceparent", TRACEPARENT), ("TraceState", "a=1"), ("TraceState", "b=2")],
            {"traceparent": TRACEPARENT, "tracestate": "a=1,b=2"},
        ),
        ([("X-B3-Sampled", "1"), ("X-B3-Sampled", "0")], {"x-b3-sampled": "1"}),
    ],
    ids=["traceparent", "tracestate", "x-b3-sampled"],
)
async def test_repeated_headers_follow_their_spec(
    server: str,
    client: aiohttp.ClientSession,
    repeated: list[tuple[str, str]],
    forwarded: dict[str, str],
) -> None:
    headers = CIMultiDict([("x-request-id", "req-r"), *repeated])
    async with client.get(f"{server}/id", headers=headers) as response:
        body = await response.json()
    assert body == {"request_id": "req-r", "x-request-id": "req-r", **forwarded}


async def test_a_missing_id_is_generated_seen_and_echoed_once(
    server: str, client: aiohttp.ClientSession, recorder: Recorder
) -> None:
    async with client.get(f"{server}/id") as response:
        body = await response.json()
        echoed = response.headers.getall("x-request-id")
    assert len(echoed) == 1
    assert body["request_id"] == echoed[0] == recorder.handler_ids[0]
    assert len(echoed[0]) == 36


async def test_the_id_a_handler_set_is_kept(server: str, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{server}/own-id", headers={"x-request-id": "incoming"}) as response:
        assert response.headers.getall("x-request-id") == ["set-by-handler"]


async def test_router_404_carries_the_id(server: str, client: aiohttp.ClientSession) -> None:
    async with client.get(f"{server}/nowhere", headers={"x-request-id": "lost-1"}) as response:
        assert response.status == 404
        assert response.headers.getall("x-request-id") == ["lost-1"]


async def test_router_405_carries_the_id(server: str, client: aiohttp.ClientSession) -> None:
    async with client.post(f"{server}/id", headers={"x-request-id": "wrong-verb"}) as response:
        assert response.status == 405
        assert response.headers.getall("x-request-id") == ["wrong-verb"]


async def test_raised_http_exception_carries_the_id(
    server: str, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{server}/unavailable", headers={"x-request-id": "r-503"}) as response:
        assert response.status == 503
        assert await response.text() == "later"
        assert response.headers.getall("x-request-id") == ["r-503"]


async def test_raised_http_exception_keeps_its_own_id(
    server: str, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{server}/conflict", headers={"x-request-id": "r-409"}) as response:
        assert response.status == 409
        assert response.headers.getall("x-request-id") == ["set-on-exception"]


async def test_an_unhandled_exception_is_logged_with_its_request_id(
    server: str, client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="aiohttp.server"):
        async with client.get(f"{server}/boom", headers={"x-request-id": "r-500"}) as response:
            assert response.status == 500
    errors = [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], RuntimeError)]
    assert len(errors) == 1
    assert errors[0].exc_info is not None and errors[0].exc_info[1] is not None
    assert exception_request_id(errors[0].exc_info[1]) == "r-500"


async def test_aiohttp_500_carries_the_id_only_with_setup(
    install: str, server: str, client: aiohttp.ClientSession
) -> None:
    # The middleware lets the exception through and aiohttp builds the 500 afterwards; only
    # the on_response_prepare handler of setup() still reaches that response.
    async with client.get(f"{server}/boom", headers={"x-request-id": "r-500"}) as response:
        assert response.status == 500
        echoed = response.headers.getall("x-request-id", [])
    assert echoed == (["r-500"] if install == "setup" else [])


async def test_a_prepared_stream_sees_the_id_and_carries_it_only_with_setup(
    install: str, server: str, client: aiohttp.ClientSession
) -> None:
    async with client.get(f"{server}/stream", headers={"x-request-id": "s-1"}) as response:
        assert await response.text() == "s-1"
        echoed = response.headers.getall("x-request-id", [])
    assert echoed == (["s-1"] if install == "setup" else [])


async def test_a_websocket_handshake_sees_the_id(
    install: str, server: str, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(f"{server}/ws", headers={"x-request-id": "ws-1"}) as ws:
        message = await ws.receive_str(timeout=5)
        echoed = ws._response.headers.getall("x-request-id", [])
    assert message == "ws-1"
    assert echoed == (["ws-1"] if install == "setup" else [])


async def test_nothing_is_left_in_the_context_between_requests(
    server: str, client: aiohttp.ClientSession, recorder: Recorder
) -> None:
    # One keep-alive connection: aiohttp serves its requests one after the other in one task,
    # so a snapshot left behind would be seen by the next request's probe.
    paths = ["/id", "/own-id", "/nowhere", "/unavailable", "/boom", "/stream", "/id"]
    for number, path in enumerate(paths):
        async with client.get(f"{server}{path}", headers={"x-request-id": f"k-{number}"}) as r:
            await r.read()
    assert recorder.before == [None] * len(paths)
    assert recorder.after == [None] * len(paths)
    assert recorder.handler_ids == ["k-0", "k-6"]


async def test_a_client_closing_a_stream_early_ends_the_request_context(
    server: str, recorder: Recorder
) -> None:
    async with aiohttp.ClientSession() as session:
        response = await session.get(f"{server}/endless", headers={"x-request-id": "gone-1"})
        assert await response.content.readline() == b"chunk\n"
        response.close()  # drops the connection mid-body
    await asyncio.wait_for(recorder.stream_closed.wait(), timeout=10)
    for _ in range(100):  # the probe records once the handler's exception has unwound
        if recorder.after:
            break
        await asyncio.sleep(0.01)
    assert recorder.handler_ids == ["gone-1"]  # the handler's finally still had its request
    assert recorder.after == [None]


async def test_echo_off_sends_no_id_but_still_captures(recorder: Recorder) -> None:
    app = build_app("setup", recorder, config=meshprop.Config(echo_header=None))
    async with serving(app) as url, aiohttp.ClientSession() as session:
        for path in ("/id", "/boom", "/nowhere"):
            async with session.get(f"{url}{path}", headers={"x-request-id": "quiet"}) as r:
                assert "x-request-id" not in r.headers
    assert recorder.handler_ids == ["quiet"]


async def test_a_configured_echo_header(recorder: Recorder) -> None:
    config = meshprop.Config(echo_header="X-Correlation-Id")
    app = web.Application(middlewares=[meshprop.aiohttp.middleware(config)])
    app.router.add_get("/", ok)
    async with (
        serving(app) as url,
        aiohttp.ClientSession() as session,
        session.get(url, headers={"x-request-id": "c-1"}) as response,
    ):
        assert response.headers.getall("x-correlation-id") == ["c-1"]
        assert "x-request-id" not in response.headers


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def test_without_aiohttp_the_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # what an uninstalled package looks like
    monkeypatch.delitem(sys.modules, "meshprop.aiohttp")
    with pytest.raises(ImportError, match=r'pip install "meshprop\[aiohttp\]"'):
        importlib.import_module("meshprop.aiohttp")
