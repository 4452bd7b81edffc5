"""The caller's deadline end to end: a client → the sidecar with a 1 s route timeout (which it
announces in ``x-envoy-expected-rq-timeout-ms``, as Envoy's router does) → an unmodified FastAPI
app under ``meshprop-run`` → a service that takes 30 s.

With ``MESHPROP_CAP_TIMEOUTS=true`` the app's own call gives up within the second its caller
waits, with httpx's own timeout error; without it, the app is still waiting on its 10 s timeout
when the sidecar has long answered 504.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.recording_server import RecordingServer, recording_server
from tests.unmodified_apps.launch import BIN, free_port, get, launch

from ._sidecar import running_sidecar

ROUTE_TIMEOUT_MS = 1000
#: How late a given-up call may end, past the deadline, on a loaded machine.
MARGIN = 1.5


@pytest.fixture
def slow_service() -> Iterator[RecordingServer]:
    with recording_server(delays={"/slow": 30}) as server:
        yield server


def _app(downstream: str, **env: str) -> tuple[int, subprocess.Popen[str]]:
    port = free_port()
    command = [str(BIN / "uvicorn"), "tests.unmodified_apps.deadline_app:app", "--port", str(port)]
    process = launch(command, downstream, **env)
    get(port, process)  # up (a 404 for "/")
    return port, process


def _last_outcome(port: int, wait: float) -> dict[str, object]:
    """How the app's latest downstream call ended, once it has (``{}`` after ``wait`` s)."""
    give_up = time.monotonic() + wait
    while True:
        outcome: dict[str, object] = httpx.get(f"http://127.0.0.1:{port}/last", timeout=5).json()
        if outcome or time.monotonic() > give_up:
            return outcome
        time.sleep(0.05)


def _quote_through_sidecar(port: int) -> httpx.Response:
    with running_sidecar(f"http://127.0.0.1:{port}", route_timeout_ms=ROUTE_TIMEOUT_MS) as url:
        return httpx.get(url + "/quote", timeout=10, trust_env=False)


def test_with_cap_timeouts_the_app_gives_up_when_its_caller_does(
    slow_service: RecordingServer,
) -> None:
    port, process = _app(slow_service.url, MESHPROP_CAP_TIMEOUTS="true")
    try:
        response = _quote_through_sidecar(port)
        outcome = _last_outcome(port, wait=5)
    finally:
        slow_service.stopping.set()  # the app's call, if still waiting, ends now
        process.terminate()
        process.wait(20)
    assert response.status_code == 504  # the app's, or the sidecar's if it answered first
    assert outcome["error"] == "ReadTimeout"  # httpx's own, raised inside the app's code
    after = outcome["after"]
    assert isinstance(after, float) and after < ROUTE_TIMEOUT_MS / 1000 + MARGIN
    assert [request.path for request in slow_service.received] == ["/slow"]


def test_without_it_the_app_waits_on_its_own_timeout(slow_service: RecordingServer) -> None:
    port, process = _app(slow_service.url)
    try:
        response = _quote_through_sidecar(port)
        outcome = _last_outcome(port, wait=0)
    finally:
        slow_service.stopping.set()  # the app's call, if still waiting, ends now
        process.terminate()
        process.wait(20)
    assert response.status_code == 504  # the sidecar gave up on the app...
    assert outcome == {}  # ...which is still waiting on its 10 s
    assert [request.path for request in slow_service.received] == ["/slow"]
