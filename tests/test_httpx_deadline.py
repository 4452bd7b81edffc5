"""meshprop.httpx under ``Config(cap_timeouts=True)``: each call's timeout is capped to what is
left of the caller's deadline, never raised, and a call made when nothing is left fails at once.

Every behaviour is checked four ways, against a real local server that answers too late: the
sync and the async client, each as meshprop's drop-in and as a plain httpx client under
``meshprop.instrument()``. The timing assertions give the client a generous margin over the
time it was allowed; the server would have waited 30 s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import meshprop
import meshprop.httpx as mhttpx
from tests.recording_server import RecordingServer, recording_server

EXPECTED = "x-envoy-expected-rq-timeout-ms"
CAP = meshprop.Config(cap_timeouts=True)
MARGIN = 1.5  # seconds a failing call may take beyond the time it was allowed


class Caller:
    """One way of making httpx calls: sync or async, meshprop's client or a plain one under
    ``instrument()``. Sync calls run as they are, async calls are awaited."""

    def __init__(self, kind: str, way: str) -> None:
        self.is_async = kind == "async"
        self.is_drop_in = way == "drop-in"
        self._clients: list[httpx.Client | httpx.AsyncClient] = []
        self._instrumented = False

    def client(self, config: meshprop.Config, **kwargs: Any) -> Any:
        """A client that follows ``config`` (given to the drop-in, or to ``instrument()``)."""
        kwargs.setdefault("trust_env", False)  # no proxy from the environment before 127.0.0.1
        if self.is_drop_in:
            cls: Any = mhttpx.AsyncClient if self.is_async else mhttpx.Client
            client = cls(config=config, **kwargs)
        else:
            meshprop.instrument(config)
            self._instrumented = True
            client = (httpx.AsyncClient if self.is_async else httpx.Client)(**kwargs)
        self._clients.append(client)
        return client

    async def get(self, client: Any, url: str, **kwargs: Any) -> httpx.Response:
        if self.is_async:
            return await client.get(url, **kwargs)  # type: ignore[no-any-return]
        return client.get(url, **kwargs)  # type: ignore[no-any-return]

    def hook(self, fn: Callable[[Any], None], async_fn: Callable[[Any], Any]) -> Any:
        """An event hook of the kind the client takes."""
        return async_fn if self.is_async else fn

    async def close(self) -> None:
        try:
            for client in self._clients:
                if isinstance(client, httpx.AsyncClient):
                    await client.aclose()
                else:
                    client.close()
        finally:
            if self._instrumented:
                meshprop.uninstrument()


@pytest.fixture(
    params=[
        ("sync", "drop-in"),
        ("async", "drop-in"),
        ("sync", "instrument"),
        ("async", "instrument"),
    ],
    ids=lambda param: "-".join(param),
)
async def caller(request: pytest.FixtureRequest) -> AsyncIterator[Caller]:
    caller = Caller(*request.param)
    try:
        yield caller
    finally:
        await caller.close()


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    delays = {"/slow": 30, "/late": 1, "/slow-redirect": 2.4}
    redirects = {"/redirect": "/slow", "/slow-redirect": "/slow", "/bounce": "/landed"}
    with recording_server(delays=delays, redirects=redirects) as running:
        yield running


def _paths(server: RecordingServer) -> list[str]:
    return [received.path for received in server.received]


def _wait_until_nothing_is_left() -> None:
    for _ in range(100):  # the deadline is 1 ms: this loop ends after the first sleep
        if meshprop.deadline() == 0.0:
            return
        time.sleep(0.01)
    raise AssertionError("the deadline never passed")


# -- capped -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "own_timeout",
    [None, 10.0, httpx.Timeout(10.0, connect=5.0)],
    ids=["no timeout", "10 s", "httpx.Timeout"],
)
async def test_a_longer_timeout_is_lowered_to_what_is_left(
    caller: Caller, server: RecordingServer, own_timeout: Any
) -> None:
    client = caller.client(CAP, timeout=own_timeout)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await caller.get(client, server.url + "/slow")
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert _paths(server) == ["/slow"]  # it was sent: the server was too slow to answer


async def test_a_shorter_timeout_is_kept(caller: Caller, server: RecordingServer) -> None:
    client = caller.client(CAP, timeout=0.3)
    with meshprop.bind({EXPECTED: "30000"}):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await caller.get(client, server.url + "/slow")
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + MARGIN  # its own 0.3 s, not the 30 s left


async def test_a_destination_outside_the_scope_is_capped_too(
    caller: Caller, server: RecordingServer
) -> None:
    # The deadline is how long the caller waits, wherever this service calls.
    config = meshprop.Config(cap_timeouts=True, scope=("*.svc",))
    client = caller.client(config, timeout=10)
    with meshprop.bind({EXPECTED: "400", "x-request-id": "req-1"}):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await caller.get(client, server.url + "/slow")
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert "x-request-id" not in server.headers()


# -- nothing left ---------------------------------------------------------------------------------


async def test_nothing_left_fails_at_once_and_sends_nothing(
    caller: Caller, server: RecordingServer
) -> None:
    client = caller.client(CAP, timeout=10)
    with meshprop.bind({EXPECTED: "1"}):
        _wait_until_nothing_is_left()
        started = time.monotonic()
        with pytest.raises(httpx.ConnectTimeout, match="deadline"):
            await caller.get(client, server.url + "/slow")
        elapsed = time.monotonic() - started
    assert elapsed < MARGIN
    assert server.received == []


# -- redirect hops --------------------------------------------------------------------------------


async def test_a_redirect_hop_is_capped(caller: Caller, server: RecordingServer) -> None:
    client = caller.client(CAP, timeout=10, follow_redirects=True)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await caller.get(client, server.url + "/redirect")
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert _paths(server) == ["/redirect", "/slow"]


async def test_a_redirect_hop_gets_what_is_left_when_it_leaves(
    caller: Caller, server: RecordingServer
) -> None:
    # The first hop answers after 2.4 s of the 3 s: the second gets the 0.6 s left then, so
    # the call fails at about 3 s (a cap decided once, at the start, would let it run to 5.4 s).
    client = caller.client(CAP, timeout=10, follow_redirects=True)
    with meshprop.bind({EXPECTED: "3000"}):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await caller.get(client, server.url + "/slow-redirect")
        elapsed = time.monotonic() - started
    assert elapsed < 3.0 + MARGIN
    assert _paths(server) == ["/slow-redirect", "/slow"]


async def test_a_redirect_hop_after_the_deadline_is_never_sent(
    caller: Caller, server: RecordingServer
) -> None:
    # The app's own response hook outlasts the deadline between the two hops.
    def outlast(response: httpx.Response) -> None:
        time.sleep(0.4)

    async def outlast_async(response: httpx.Response) -> None:
        await asyncio.sleep(0.4)

    hooks = {"response": [caller.hook(outlast, outlast_async)]}
    client = caller.client(CAP, timeout=10, follow_redirects=True, event_hooks=hooks)
    with meshprop.bind({EXPECTED: "300"}), pytest.raises(httpx.ConnectTimeout, match="deadline"):
        await caller.get(client, server.url + "/bounce")
    assert _paths(server) == ["/bounce"]


# -- unchanged ------------------------------------------------------------------------------------


async def test_with_cap_timeouts_off_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer
) -> None:
    # The caller gives 200 ms, the server answers after 1 s, the client's own timeout is 3 s.
    client = caller.client(meshprop.Config(), timeout=3)
    with meshprop.bind({EXPECTED: "200"}):
        response = await caller.get(client, server.url + "/late")
    assert response.status_code == 200


@pytest.mark.parametrize(
    "inbound", [{"x-request-id": "req-1"}, {EXPECTED: "0"}], ids=["no header", "0: no deadline"]
)
async def test_without_a_deadline_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer, inbound: dict[str, str]
) -> None:
    client = caller.client(CAP, timeout=3)
    with meshprop.bind(inbound):
        response = await caller.get(client, server.url + "/late")
    assert response.status_code == 200


async def test_outside_a_request_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer
) -> None:
    client = caller.client(CAP, timeout=3)
    response = await caller.get(client, server.url + "/late")
    assert response.status_code == 200


async def test_the_callers_timeout_settings_are_left_as_they_were(
    caller: Caller, server: RecordingServer
) -> None:
    own = {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": 10.0}
    client = caller.client(CAP, timeout=httpx.Timeout(10.0, connect=5.0))
    with meshprop.bind({EXPECTED: "30000"}):
        response = await caller.get(client, server.url + "/", extensions={"timeout": own})
    assert response.status_code == 200
    assert own == {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": 10.0}
    assert client.timeout == httpx.Timeout(10.0, connect=5.0)


# -- from the environment -------------------------------------------------------------------------


def test_meshprop_cap_timeouts_turns_it_on_for_the_default_config(
    server: RecordingServer,
) -> None:
    code = f"""
import time, httpx, meshprop, meshprop.httpx
with meshprop.bind({{"{EXPECTED}": "400"}}), meshprop.httpx.Client(timeout=10) as client:
    started = time.monotonic()
    try:
        client.get("{server.url}/slow")
    except httpx.ReadTimeout:
        print(time.monotonic() - started)
"""
    environment = {**os.environ, "MESHPROP_CAP_TIMEOUTS": "true"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 0.4 + MARGIN  # it timed out, at the caller's 0.4 s, not its 10 s
