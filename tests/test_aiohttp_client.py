"""The aiohttp client tracing, against real aiohttp servers on 127.0.0.1.

``api.example.com`` stands for a host outside the mesh: a resolver maps it to 127.0.0.1, so the
out-of-scope calls never leave the machine.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import meshprop
import meshprop.aiohttp
from meshprop._snapshot import CURRENT

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
INCOMING = {"x-request-id": "req-1", "traceparent": TRACEPARENT, "x-b3-sampled": "1"}
OUTSIDE = "api.example.com"
SESSION = web.AppKey("outbound_session", aiohttp.ClientSession)
Session = Callable[..., aiohttp.ClientSession]


class LoopbackResolver(AbstractResolver):
    """Resolves the outside name (and localhost) to 127.0.0.1 and refuses every other name."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in (OUTSIDE, "localhost"):
            raise OSError(f"the tests resolve only {OUTSIDE} and localhost, not {host}")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


@asynccontextmanager
async def serving(app: web.Application, backlog: int = 128) -> AsyncIterator[int]:
    """Serve ``app`` on a free loopback port; yield the port; stop it, bounded."""
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=backlog)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


class Downstream:
    """A plain aiohttp server that records the headers of every request it gets, per hop."""

    def __init__(self) -> None:
        self.hops: list[tuple[str, str, list[tuple[str, str]]]] = []
        self.port = 0

    def app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            headers = [
                (name.decode().lower(), value.decode()) for name, value in request.raw_headers
            ]
            self.hops.append((request.host.split(":")[0], request.path, headers))
            if request.path == "/redirect":
                raise web.HTTPFound(request.query["to"])
            return web.json_response(request.headers.getall("x-request-id", []))

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def sent(self, hop: int, name: str) -> list[str]:
        """Every value of header ``name`` that request number ``hop`` carried."""
        return [value for key, value in self.hops[hop][2] if key == name]

    def propagated(self, hop: int) -> dict[str, list[str]]:
        """The propagation headers request number ``hop`` carried."""
        names = ("x-request-id", "traceparent", "x-b3-sampled")
        return {name: self.sent(hop, name) for name in names if self.sent(hop, name)}


@pytest.fixture
async def downstream() -> AsyncIterator[Downstream]:
    server = Downstream()
    async with serving(server.app()) as port:
        server.port = port
        yield server


WAYS = ("trace_config", "client_middleware", "ClientSession")


@pytest.fixture(params=WAYS)
def way(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def traced_session(way: str) -> Callable[..., aiohttp.ClientSession]:
    """Makes a session that forwards, built the way under test, resolving the outside name."""

    def make(config: meshprop.Config | None = None, **kwargs: Any) -> aiohttp.ClientSession:
        kwargs["connector"] = aiohttp.TCPConnector(resolver=LoopbackResolver())
        kwargs["timeout"] = aiohttp.ClientTimeout(total=20)
        if way == "trace_config":
            return aiohttp.ClientSession(
                trace_configs=[meshprop.aiohttp.trace_config(config)], **kwargs
            )
        if way == "client_middleware":
            return aiohttp.ClientSession(
                middlewares=[meshprop.aiohttp.client_middleware(config)], **kwargs
            )
        return meshprop.aiohttp.ClientSession(config=config, **kwargs)

    return make


async def test_forwards_the_request_headers_within_bind(
    downstream: Downstream, traced_session: Session
) -> None:
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            async with session.get(downstream.url("127.0.0.1", "/a")) as response:
                assert response.status == 200
    assert downstream.propagated(0) == {name: [value] for name, value in INCOMING.items()}


async def test_forwards_nothing_outside_a_request(
    downstream: Downstream, traced_session: Session
) -> None:
    async with traced_session() as session, session.get(downstream.url("localhost", "/a")) as r:
        assert r.status == 200
    assert downstream.propagated(0) == {}


async def test_the_caller_wins_whatever_the_case(
    downstream: Downstream, traced_session: Session
) -> None:
    """A trace header the caller set (here on the session) makes the whole trace context the
    caller's: no forwarded trace header travels beside it."""
    session_headers = {"TraceParent": "set-on-session"}
    async with traced_session(headers=session_headers) as session:
        with meshprop.bind(INCOMING):
            call = session.get(downstream.url("127.0.0.1", "/a"), headers={"X-REQUEST-ID": "mine"})
            async with call as response:
                assert await response.json() == ["mine"]
    assert downstream.propagated(0) == {
        "x-request-id": ["mine"],
        "traceparent": ["set-on-session"],
    }


async def test_a_host_outside_the_scope_gets_nothing(
    downstream: Downstream, traced_session: Session
) -> None:
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            async with session.get(downstream.url(OUTSIDE, "/a")) as response:
                assert response.status == 200
    assert downstream.hops[0][0] == OUTSIDE
    assert downstream.propagated(0) == {}


async def test_a_widened_scope_reaches_that_host(
    downstream: Downstream, traced_session: Session
) -> None:
    config = meshprop.Config(scope=["mesh", OUTSIDE])
    async with traced_session(config) as session:
        with meshprop.bind(INCOMING):
            async with session.get(downstream.url(OUTSIDE, "/a")) as response:
                assert response.status == 200
    assert downstream.propagated(0)["x-request-id"] == ["req-1"]


async def test_a_redirect_out_of_the_scope_drops_what_meshprop_added(
    downstream: Downstream, traced_session: Session
) -> None:
    target = downstream.url(OUTSIDE, "/final")
    start = downstream.url("127.0.0.1", f"/redirect?to={target}")
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            headers = {"x-b3-sampled": "0"}  # the caller's own header follows the redirect
            async with session.get(start, headers=headers) as response:
                assert response.status == 200
    assert [hop[:2] for hop in downstream.hops] == [
        ("127.0.0.1", "/redirect"),
        (OUTSIDE, "/final"),
    ]
    assert downstream.propagated(0) == {
        "x-request-id": ["req-1"],
        "traceparent": [TRACEPARENT],
        "x-b3-sampled": ["0"],
    }
    assert downstream.propagated(1) == {"x-b3-sampled": ["0"]}


async def test_a_redirect_into_the_scope_adds_them(
    downstream: Downstream, traced_session: Session
) -> None:
    target = downstream.url("127.0.0.1", "/final")
    start = downstream.url(OUTSIDE, f"/redirect?to={target}")
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            async with session.get(start) as response:
                assert await response.json() == ["req-1"]
    assert downstream.propagated(0) == {}
    assert downstream.propagated(1) == {name: [value] for name, value in INCOMING.items()}


async def test_hops_in_out_and_back_in(downstream: Downstream, traced_session: Session) -> None:
    back_in = downstream.url("127.0.0.1", "/final")
    out = downstream.url(OUTSIDE, f"/redirect?to={back_in}")
    start = downstream.url("localhost", "/redirect")
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            async with session.get(start, params={"to": out}) as response:
                assert response.status == 200
    assert [bool(downstream.propagated(hop)) for hop in range(3)] == [True, False, True]
    assert downstream.sent(2, "x-request-id") == ["req-1"]


async def test_a_relative_redirect_stays_in_scope(
    downstream: Downstream, traced_session: Session
) -> None:
    start = downstream.url("127.0.0.1", "/redirect?to=/final")
    async with traced_session() as session:
        with meshprop.bind(INCOMING):
            async with session.get(start) as response:
                assert response.status == 200
    assert downstream.propagated(1) == downstream.propagated(0) != {}
    assert downstream.sent(1, "x-request-id") == ["req-1"]


async def test_client_session_helper_keeps_the_callers_trace_configs(
    downstream: Downstream,
) -> None:
    started: list[str | None] = []

    async def on_request_start(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: Any
    ) -> None:
        started.append(meshprop.request_id())  # tracing runs in the calling task

    own = aiohttp.TraceConfig()
    own.on_request_start.append(on_request_start)
    async with meshprop.aiohttp.ClientSession(trace_configs=[own]) as session:
        with meshprop.bind({"x-request-id": "helper-1"}):
            async with session.get(downstream.url("127.0.0.1", "/a")) as response:
                assert await response.json() == ["helper-1"]
    assert started == ["helper-1"]


async def test_client_session_helper_runs_after_the_callers_middlewares(
    downstream: Downstream,
) -> None:
    async def own_id(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        request.headers["X-Request-Id"] = "from-callers-middleware"
        return await handler(request)  # type: ignore[no-any-return]

    async with meshprop.aiohttp.ClientSession(middlewares=[own_id]) as session:
        with meshprop.bind(INCOMING):
            async with session.get(downstream.url("127.0.0.1", "/a")) as response:
                assert await response.json() == ["from-callers-middleware"]
    assert downstream.sent(0, "traceparent") == [TRACEPARENT]


async def test_concurrent_tasks_forward_their_own_ids(
    downstream: Downstream, traced_session: Session
) -> None:
    async def call(number: int, session: aiohttp.ClientSession) -> list[str]:
        with meshprop.bind({"x-request-id": f"task-{number}"}):
            await asyncio.sleep(0)
            async with session.get(downstream.url("127.0.0.1", "/a")) as response:
                return list(await response.json())

    async with traced_session() as session:
        answers = await asyncio.gather(*(call(number, session) for number in range(50)))
    assert answers == [[f"task-{number}"] for number in range(50)]


async def test_under_load_every_id_arrives_once_where_it_belongs(
    downstream: Downstream, traced_session: Session
) -> None:
    """500 concurrent requests into a meshprop server, each calling on through a traced session:
    each id reaches the downstream server exactly once and on its own request."""
    leftovers: list[object] = []
    in_flight = [0, 0]  # now, most at once

    async def relay(request: web.Request) -> web.Response:
        in_flight[0] += 1
        in_flight[1] = max(in_flight)
        session: aiohttp.ClientSession = request.app[SESSION]
        async with session.get(downstream.url("127.0.0.1", "/b")) as response:
            seen_downstream = await response.json()
        in_flight[0] -= 1
        return web.json_response({"here": meshprop.request_id(), "downstream": seen_downstream})

    @web.middleware
    async def probe(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            leftovers.append(CURRENT.get())

    app = web.Application()
    meshprop.aiohttp.setup(app)
    app.middlewares.insert(0, probe)
    app.router.add_get("/a", relay)
    total = 500
    async with traced_session() as outbound:
        app[SESSION] = outbound
        # No connection limit: all 500 requests are in flight in A at once.
        inbound = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with serving(app, backlog=1024) as port, inbound:

            async def call(number: int) -> tuple[str, Any]:
                request_id = f"load-{number}"
                url = f"http://127.0.0.1:{port}/a"
                async with inbound.get(url, headers={"x-request-id": request_id}) as response:
                    assert response.headers.getall("x-request-id") == [request_id]
                    return request_id, await response.json()

            results = await asyncio.wait_for(
                asyncio.gather(*(call(number) for number in range(total))), timeout=90
            )
    for request_id, body in results:
        assert body == {"here": request_id, "downstream": [request_id]}
    arrived = sorted(
        value for hop in range(total) for value in downstream.sent(hop, "x-request-id")
    )
    assert arrived == sorted(f"load-{number}" for number in range(total))
    assert leftovers == [None] * total
    assert in_flight[1] > 100  # the requests really overlapped
