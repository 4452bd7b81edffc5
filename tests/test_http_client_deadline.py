"""DESIGN.md §3, the deadline, for the clients ``instrument()`` reaches through ``http.client``:
with ``Config(cap_timeouts=True)`` a call gets no more than what is left of the caller's
deadline and fails with the client's own timeout error, as a real timeout would; without the
option, or without a deadline, nothing changes.

urllib.request reports a timeout while connecting or sending as ``URLError(TimeoutError)`` and
one while waiting for the response as ``TimeoutError``; urllib3 as ``ConnectTimeoutError`` and
``ReadTimeoutError``, inside ``MaxRetryError`` once its retries are spent. The recording server
answers ``/slow`` after 30 s and ``/late`` after 1 s.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import requests
import urllib3
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, ReadTimeoutError

import meshprop
from meshprop import Config
from tests.recording_server import RecordingServer, recording_server

CAP = Config(cap_timeouts=True)
EXPECTED = "x-envoy-expected-rq-timeout-ms"
MARGIN = 1.5  # seconds a failing call may take beyond the time that was left


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server(delays={"/slow": 30, "/late": 1}) as running:
        yield running


@pytest.fixture
def instrumented() -> Iterator[Callable[[Config], None]]:
    """Instruments the process with a Config; undone after the test, however it ends."""
    try:
        yield meshprop.instrument
    finally:
        meshprop.uninstrument()


def _urlopen(url: str, timeout: float = 10) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


def _urllib3_get(url: str, timeout: float = 10, retries: bool = True) -> bytes:
    pool = urllib3.PoolManager(retries=None if retries else False)
    try:
        return pool.request("GET", url, timeout=timeout).data
    finally:
        pool.clear()


def _elapsed(started: float) -> float:
    return time.monotonic() - started


# -- urllib.request -----------------------------------------------------------------------------


def test_urllib_request_waits_only_what_is_left(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(TimeoutError):  # what urlopen raises when the response is late
            _urlopen(server.url + "/slow")
    assert _elapsed(started) < 0.4 + MARGIN  # the server would have answered after 30 s


def test_urllib_request_keeps_a_shorter_timeout_of_its_own(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "5000"}):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            _urlopen(server.url + "/slow", timeout=0.3)
    assert _elapsed(started) < 0.3 + MARGIN  # not the 5 s left of the deadline


def test_urllib_request_made_when_nothing_is_left_fails_before_it_is_sent(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "1"}):
        time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(urllib.error.URLError) as raised:  # as for a connect that timed out
            _urlopen(server.url + "/slow")
    assert isinstance(raised.value.reason, TimeoutError)
    assert _elapsed(started) < MARGIN
    assert server.received == []


@pytest.mark.parametrize(
    ("config", "headers"),
    [(Config(), {EXPECTED: "200"}), (CAP, {"x-request-id": "no-deadline"})],
    ids=["cap_timeouts off", "no deadline"],
)
def test_urllib_request_timeout_is_unchanged(
    server: RecordingServer,
    instrumented: Callable[[Config], None],
    config: Config,
    headers: dict[str, str],
) -> None:
    instrumented(config)
    with meshprop.bind(headers):
        assert _urlopen(server.url + "/late", timeout=3) == b"ok"


# -- urllib3 ------------------------------------------------------------------------------------


def test_urllib3_waits_only_what_is_left(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            _urllib3_get(server.url + "/slow", retries=False)
    assert _elapsed(started) < 0.4 + MARGIN


def test_urllib3_retries_end_at_the_deadline(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    """The retry after the read timed out finds nothing left: it fails before it is sent, and
    urllib3 gives up with its own timeout as the reason."""
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(MaxRetryError) as raised:
            _urllib3_get(server.url + "/slow")
    assert isinstance(raised.value.reason, urllib3.exceptions.TimeoutError)
    assert _elapsed(started) < 0.4 + MARGIN
    assert len(server.received) == 1


def test_urllib3_keeps_a_shorter_timeout_of_its_own(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "5000"}):
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            _urllib3_get(server.url + "/slow", timeout=0.3, retries=False)
    assert _elapsed(started) < 0.3 + MARGIN


def test_urllib3_made_when_nothing_is_left_fails_before_it_is_sent(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "1"}):
        time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(MaxRetryError) as raised:
            _urllib3_get(server.url + "/slow")
    assert isinstance(raised.value.reason, ConnectTimeoutError)
    assert _elapsed(started) < MARGIN
    assert server.received == []


@pytest.mark.parametrize(
    ("config", "headers"),
    [(Config(), {EXPECTED: "200"}), (CAP, {"x-request-id": "no-deadline"})],
    ids=["cap_timeouts off", "no deadline"],
)
def test_urllib3_timeout_is_unchanged(
    server: RecordingServer,
    instrumented: Callable[[Config], None],
    config: Config,
    headers: dict[str, str],
) -> None:
    instrumented(config)
    with meshprop.bind(headers):
        assert _urllib3_get(server.url + "/late", timeout=3, retries=False) == b"ok"


# -- http.client itself, and requests on top of urllib3 -------------------------------------------


def test_a_kept_alive_connection_gets_its_own_timeout_back_after_the_deadline(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    """http.client sets a socket's timeout once, when it connects: the cap for one request must
    not stay on the connection for the next."""
    instrumented(CAP)
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=3)
    try:
        with meshprop.bind({EXPECTED: "500"}):
            connection.request("GET", "/quick")
            assert connection.getresponse().read() == b"ok"
        connection.request("GET", "/late")  # outside the request: 1 s, within the own 3 s
        assert connection.getresponse().read() == b"ok"
    finally:
        connection.close()
    assert [received.path for received in server.received] == ["/quick", "/late"]


def test_requests_under_instrument_fails_with_its_own_timeout(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "400"}):
        started = time.monotonic()
        with pytest.raises(requests.Timeout):
            requests.get(server.url + "/slow", timeout=10)
    assert _elapsed(started) < 0.4 + MARGIN


def test_requests_made_when_nothing_is_left_fails_before_it_is_sent(
    server: RecordingServer, instrumented: Callable[[Config], None]
) -> None:
    instrumented(CAP)
    with meshprop.bind({EXPECTED: "1"}):
        time.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(requests.ConnectTimeout):
            requests.get(server.url + "/slow", timeout=10)
    assert _elapsed(started) < MARGIN
    assert server.received == []
