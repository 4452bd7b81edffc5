"""meshprop.requests under ``Config(cap_timeouts=True)``: each call's ``timeout`` is capped to
what is left of the caller's deadline, never raised, and a call made when nothing is left fails
at once.

Every behaviour is checked both ways, against a real local server that answers too late:
meshprop's drop-in ``Session`` and a plain ``requests.Session`` under ``meshprop.instrument()``.
The timing assertions give the client a generous margin over the time it was allowed; the server
would have waited 30 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from urllib3.util import Timeout

import meshprop
import meshprop.requests as mrequests
from tests.recording_server import RecordingServer, recording_server

EXPECTED = "x-envoy-expected-rq-timeout-ms"
CAP = meshprop.Config(cap_timeouts=True)
MARGIN = 1.5  # seconds a failing call may take beyond the time it was allowed


class Caller:
    """Makes sessions one way: meshprop's drop-in, or a plain one under ``instrument()``."""

    def __init__(self, way: str) -> None:
        self.is_drop_in = way == "drop-in"
        self._sessions: list[requests.Session] = []
        self._instrumented = False

    def session(self, config: meshprop.Config) -> requests.Session:
        """A session that follows ``config`` (given to the drop-in, or to ``instrument()``)."""
        if self.is_drop_in:
            session: requests.Session = mrequests.Session(config=config)
        else:
            meshprop.instrument(config)
            self._instrumented = True
            session = requests.Session()
        session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
        self._sessions.append(session)
        return session

    def close(self) -> None:
        try:
            for session in self._sessions:
                session.close()
        finally:
            if self._instrumented:
                meshprop.uninstrument()


@pytest.fixture(params=["drop-in", "instrument"])
def caller(request: pytest.FixtureRequest) -> Iterator[Caller]:
    caller = Caller(request.param)
    try:
        yield caller
    finally:
        caller.close()


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
    [None, 10, (5, 10), (None, None), Timeout(connect=5, read=10), Timeout(total=10)],
    ids=["none", "10 s", "(connect, read)", "(None, None)", "Timeout", "Timeout total"],
)
def test_a_longer_timeout_is_lowered_to_what_is_left(
    caller: Caller, server: RecordingServer, own_timeout: Any
) -> None:
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url + "/slow", timeout=own_timeout)
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert _paths(server) == ["/slow"]  # it was sent: the server was too slow to answer


@pytest.mark.parametrize(
    "own_timeout",
    [0.3, (5, 0.3), Timeout(connect=5, read=0.3), Timeout(total=0.3)],
    ids=["0.3 s", "(connect, read)", "Timeout", "Timeout total"],
)
def test_a_shorter_timeout_is_kept(
    caller: Caller, server: RecordingServer, own_timeout: Any
) -> None:
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "30000"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url + "/slow", timeout=own_timeout)
        elapsed = time.monotonic() - started
    assert elapsed < 0.3 + MARGIN  # its own 0.3 s, not the 30 s left


def test_a_destination_outside_the_scope_is_capped_too(
    caller: Caller, server: RecordingServer
) -> None:
    # The deadline is how long the caller waits, wherever this service calls.
    session = caller.session(meshprop.Config(cap_timeouts=True, scope=("*.svc",)))
    with meshprop.bind({EXPECTED: "400", "x-request-id": "req-1"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url + "/slow", timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert "x-request-id" not in server.headers()


def test_a_prepared_request_sent_by_hand_is_capped(caller: Caller, server: RecordingServer) -> None:
    session = caller.session(CAP)
    prepared = session.prepare_request(requests.Request("GET", server.url + "/slow"))
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.send(prepared)  # no timeout at all: requests would wait for ever
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN


# -- nothing left ---------------------------------------------------------------------------------


def test_nothing_left_fails_at_once_and_sends_nothing(
    caller: Caller, server: RecordingServer
) -> None:
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "1"}):
        _wait_until_nothing_is_left()
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ConnectTimeout, match="deadline") as raised:
            session.get(server.url + "/slow", timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < MARGIN
    assert server.received == []
    assert raised.value.request is not None
    assert raised.value.request.url == server.url + "/slow"


# -- redirect hops --------------------------------------------------------------------------------


def test_a_redirect_hop_is_capped(caller: Caller, server: RecordingServer) -> None:
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url + "/redirect", timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < 0.4 + MARGIN
    assert _paths(server) == ["/redirect", "/slow"]


def test_a_redirect_hop_gets_what_is_left_when_it_leaves(
    caller: Caller, server: RecordingServer
) -> None:
    # The first hop answers after 2.4 s of the 3 s: the second gets the 0.6 s left then, so
    # the call fails at about 3 s (a cap decided once, at the start, would let it run to 5.4 s).
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "3000"}):
        started = time.monotonic()
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(server.url + "/slow-redirect", timeout=10)
        elapsed = time.monotonic() - started
    assert elapsed < 3.0 + MARGIN
    assert _paths(server) == ["/slow-redirect", "/slow"]


def test_a_redirect_hop_after_the_deadline_is_never_sent(
    caller: Caller, server: RecordingServer
) -> None:
    def outlast(response: requests.Response, **kwargs: Any) -> None:
        time.sleep(0.4)  # the app's own response hook outlasts the deadline between the hops

    session = caller.session(CAP)
    with (
        meshprop.bind({EXPECTED: "300"}),
        pytest.raises(requests.exceptions.ConnectTimeout, match="deadline"),
    ):
        session.get(server.url + "/bounce", timeout=10, hooks={"response": outlast})
    assert _paths(server) == ["/bounce"]


# -- unchanged ------------------------------------------------------------------------------------


def test_with_cap_timeouts_off_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer
) -> None:
    # The caller gives 200 ms, the server answers after 1 s, the client's own timeout is 3 s.
    session = caller.session(meshprop.Config())
    with meshprop.bind({EXPECTED: "200"}):
        response = session.get(server.url + "/late", timeout=3)
    assert response.status_code == 200


@pytest.mark.parametrize(
    "inbound", [{"x-request-id": "req-1"}, {EXPECTED: "0"}], ids=["no header", "0: no deadline"]
)
def test_without_a_deadline_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer, inbound: dict[str, str]
) -> None:
    session = caller.session(CAP)
    with meshprop.bind(inbound):
        response = session.get(server.url + "/late", timeout=3)
    assert response.status_code == 200


def test_outside_a_request_the_clients_own_timeout_holds(
    caller: Caller, server: RecordingServer
) -> None:
    session = caller.session(CAP)
    response = session.get(server.url + "/late", timeout=3)
    assert response.status_code == 200


def test_the_callers_timeout_object_is_left_as_it_was(
    caller: Caller, server: RecordingServer
) -> None:
    own: Any = Timeout(connect=5, read=10)  # requests types only numbers, passes this on
    session = caller.session(CAP)
    with meshprop.bind({EXPECTED: "30000"}):
        response = session.get(server.url + "/", timeout=own)
    assert response.status_code == 200
    assert (own.total, own.connect_timeout, own.read_timeout) == (None, 5, 10)


# -- from the environment -------------------------------------------------------------------------


def test_meshprop_cap_timeouts_turns_it_on_for_the_default_config(
    server: RecordingServer,
) -> None:
    code = f"""
import time, requests, meshprop, meshprop.requests
session = meshprop.requests.Session()
session.trust_env = False
with meshprop.bind({{"{EXPECTED}": "400"}}):
    started = time.monotonic()
    try:
        session.get("{server.url}/slow", timeout=10)
    except requests.exceptions.ReadTimeout:
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
