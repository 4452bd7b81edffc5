"""DESIGN.md §3, the deadline, for the aiohttp client: with ``Config(cap_timeouts=True)`` a call
gets no more than what is left of the caller's deadline, and fails with aiohttp's own timeout
errors (``asyncio.TimeoutError`` subclasses); without the option, or without a deadline,
nothing changes.

Each way that caps is tested: the client middleware, ``meshprop.aiohttp.ClientSession`` (which
uses it) and a plain ``aiohttp.ClientSession`` under ``instrument()``. The calls go to the
recording server, which answers ``/slow`` after 30 s and ``/late`` after 1 s, and to an aiohttp
server whose ``/stalled-body`` sends its headers and then stalls the body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import meshprop
import meshprop.aiohttp
from meshprop import Config
from tests.recording_server import RecordingServer, recording_server

CAP = Config(cap_timeouts=True)
EXPECTED = "x-envoy-expected-rq-timeout-ms"
MARGIN = 1.5  # seconds a failing call may take beyond the time that was left

Session = Callable[[Config], aiohttp.ClientSession]


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server(delays={"/slow": 30, "/late": 1}) as running:
        yield running


@pytest.fixture(params=["client_middleware", "ClientSession", "instrument"])
def session_for(request: pytest.FixtureRequest) -> Iterator[Session]:
    """Makes a session that follows a Config, the way under test; under ``instrument`` the
    Config is the process's, undone after the test."""
    way = request.param
    instrumented: list[Config] = []

    def make(config: Config) -> aiohttp.ClientSession:
        if way == "client_middleware":
            return aiohttp.ClientSession(middlewares=[meshprop.aiohttp.client_middleware(config)])
        if way == "ClientSession":
            return meshprop.aiohttp.ClientSession(config=config)
        meshprop.instrument(config)
        instrumented.append(config)
        return aiohttp.ClientSession()

    try:
        yield make
    finally:
        if instrumented:
            meshprop.uninstrument()


async def _fails_with(
    error: type[BaseException], session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> float:
    """Call ``url``, expect ``error``, and return how long the call took to fail."""
    started = time.monotonic()
    with pytest.raises(error):
        async with session.get(url, **kwargs) as response:
            await response.read()
    return time.monotonic() - started


async def test_a_call_gets_only_what_is_left_of_the_deadline(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "400"}):
            took = await _fails_with(aiohttp.ServerTimeoutError, session, server.url + "/slow")
    assert took < 0.4 + MARGIN  # the server would have answered after 30 s
    assert [received.path for received in server.received] == ["/slow"]


async def test_the_deadline_error_is_an_asyncio_timeout_as_aiohttps_own_are(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "300"}):
            await _fails_with(asyncio.TimeoutError, session, server.url + "/slow")


async def test_a_shorter_timeout_of_the_callers_own_is_kept(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "5000"}):
            timeout = aiohttp.ClientTimeout(total=0.3)
            took = await _fails_with(
                asyncio.TimeoutError, session, server.url + "/slow", timeout=timeout
            )
    assert took < 0.3 + MARGIN  # not the 5 s left of the deadline


async def test_without_cap_timeouts_the_callers_timeout_stays(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(Config()) as session:
        with meshprop.bind({EXPECTED: "200"}):
            timeout = aiohttp.ClientTimeout(total=3)
            async with session.get(server.url + "/late", timeout=timeout) as response:
                assert await response.read() == b"ok"


async def test_without_a_deadline_the_callers_timeout_stays(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({"x-request-id": "no-deadline"}):
            timeout = aiohttp.ClientTimeout(total=3)
            async with session.get(server.url + "/late", timeout=timeout) as response:
                assert await response.read() == b"ok"


async def test_a_call_made_when_nothing_is_left_fails_before_it_is_sent(
    server: RecordingServer, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "1"}):
            await asyncio.sleep(0.01)
            took = await _fails_with(aiohttp.ConnectionTimeoutError, session, server.url + "/slow")
    assert took < MARGIN
    assert server.received == []


async def test_each_redirect_hop_gets_what_is_left(
    server: RecordingServer, session_for: Session
) -> None:
    server.redirects["/hop"] = "/slow"
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "400"}):
            took = await _fails_with(aiohttp.ServerTimeoutError, session, server.url + "/hop")
    assert took < 0.4 + MARGIN
    assert [received.path for received in server.received] == ["/hop", "/slow"]


# -- the body -----------------------------------------------------------------------------------


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    """An aiohttp server whose ``/stalled-body`` sends its headers and a first chunk, then waits
    (until the server stops) before the rest; ``/quick`` answers at once."""
    stop = asyncio.Event()

    async def stalled_body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": "10"})
        await response.prepare(request)
        await response.write(b"first")
        await asyncio.wait_for(stop.wait(), timeout=30)
        await response.write(b"-rest")
        return response

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="whole body")

    app = web.Application()
    app.router.add_get("/stalled-body", stalled_body)
    app.router.add_get("/quick", quick)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        stop.set()
        await runner.cleanup()


async def test_a_body_still_arriving_at_the_deadline_fails_with_aiohttps_timeout(
    stalling: str, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "400"}):
            started = time.monotonic()
            async with session.get(stalling + "/stalled-body") as response:
                assert response.status == 200  # the headers came in time
                with pytest.raises(aiohttp.ServerTimeoutError):
                    await response.read()
    assert time.monotonic() - started < 0.4 + MARGIN


async def test_a_streamed_body_read_fails_the_same_way(stalling: str, session_for: Session) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "400"}):
            async with session.get(stalling + "/stalled-body") as response:
                assert await response.content.readexactly(5) == b"first"
                with pytest.raises(aiohttp.ServerTimeoutError):
                    await response.content.read()


async def test_a_body_received_in_time_stays_readable_after_the_deadline(
    stalling: str, session_for: Session
) -> None:
    async with session_for(CAP) as session:
        with meshprop.bind({EXPECTED: "300"}):
            async with session.get(stalling + "/quick") as response:
                await asyncio.sleep(0.5)  # the deadline passes before the body is read
                assert await response.text() == "whole body"
