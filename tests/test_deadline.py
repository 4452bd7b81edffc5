"""DESIGN.md §3, the deadline: ``meshprop.deadline()`` is what is left of the time the caller
will wait, read from ``x-envoy-expected-rq-timeout-ms`` (or ``grpc-timeout``) when the request
arrives, through every shape headers arrive in.

The clients that cap their timeouts to it are tested beside each client (``test_httpx``,
``test_requests``, ...), each against a real local server that answers too late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import pytest
from multidict import CIMultiDict

import meshprop
from meshprop import _deadline
from meshprop._capture import capture_asgi, capture_environ, capture_multidict, capture_pairs
from meshprop._config import Config
from meshprop._plan import plan_for
from meshprop._snapshot import CURRENT, Snapshot

pytestmark = pytest.mark.usefixtures("capture_path")

EXPECTED = "x-envoy-expected-rq-timeout-ms"
Pairs = Iterable[tuple[str, str]]


def _asgi(pairs: Pairs) -> Snapshot:
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
    return capture_asgi(raw, plan_for())


def _environ(pairs: Pairs) -> Snapshot:
    environ: dict[str, str] = {}
    for name, value in pairs:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value
    return capture_environ(environ, plan_for())


def _multidict(pairs: Pairs) -> Snapshot:
    return capture_multidict(CIMultiDict(list(pairs)), plan_for())


def _pairs(pairs: Pairs) -> Snapshot:
    return capture_pairs(list(pairs), plan_for())


SHAPES: dict[str, Callable[[Pairs], Snapshot]] = {
    "asgi": _asgi,
    "environ": _environ,
    "multidict": _multidict,
    "pairs": _pairs,
}


@pytest.fixture(params=sorted(SHAPES))
def capture(request: pytest.FixtureRequest) -> Callable[[Pairs], Snapshot]:
    return SHAPES[request.param]


def _left(snapshot: Snapshot) -> float | None:
    token = CURRENT.set(snapshot)
    try:
        return meshprop.deadline()
    finally:
        CURRENT.reset(token)


def test_there_is_no_deadline_outside_a_request() -> None:
    assert meshprop.deadline() is None


def test_a_request_without_the_header_has_no_deadline(capture: Callable[[Pairs], Snapshot]) -> None:
    assert _left(capture([("x-request-id", "abc")])) is None


def test_the_expected_timeout_counts_down_from_arrival(
    capture: Callable[[Pairs], Snapshot],
) -> None:
    before = time.monotonic()
    snapshot = capture([(EXPECTED, "1500")])
    left = _left(snapshot)
    assert left is not None
    assert 1.5 - (time.monotonic() - before) <= left <= 1.5


def test_a_passed_deadline_reads_zero(capture: Callable[[Pairs], Snapshot]) -> None:
    snapshot = capture([(EXPECTED, "1")])
    time.sleep(0.01)
    assert _left(snapshot) == 0.0


@pytest.mark.parametrize(
    "value",
    ["0", "", "abc", "-5", "1.5", "1e3", "12345678901", "10 ms", "\x001"],
)
def test_zero_or_a_malformed_value_means_no_deadline(
    capture: Callable[[Pairs], Snapshot], value: str
) -> None:
    # 0 is Envoy's "no route timeout"; anything else that is not whole milliseconds is ignored.
    assert _left(capture([(EXPECTED, value)])) is None


def test_spaces_around_the_value_are_allowed(capture: Callable[[Pairs], Snapshot]) -> None:
    left = _left(capture([(EXPECTED, " 2000 ")]))
    assert left is not None and 1.9 < left <= 2.0


def test_a_repeated_header_is_read_by_its_first_value(
    capture: Callable[[Pairs], Snapshot],
) -> None:
    left = _left(capture([(EXPECTED, "3000"), (EXPECTED, "100")]))
    assert left is not None and 2.9 < left <= 3.0


def test_the_deadline_is_never_forwarded(capture: Callable[[Pairs], Snapshot]) -> None:
    snapshot = capture([(EXPECTED, "3000"), ("x-request-id", "abc")])
    assert dict(snapshot.headers) == {"x-request-id": "abc"}
    token = CURRENT.set(snapshot)
    try:
        assert EXPECTED not in meshprop.outbound_headers("http://svc/")
    finally:
        CURRENT.reset(token)


def test_the_deadline_leaves_the_trace_headers_as_they_were(
    capture: Callable[[Pairs], Snapshot],
) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    snapshot = capture([("traceparent", traceparent), (EXPECTED, "3000")])
    assert snapshot.headers["traceparent"] == traceparent
    assert snapshot.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("2H", 7200.0),
        ("3M", 180.0),
        ("5S", 5.0),
        ("250m", 0.25),
        ("100000u", 0.1),
        ("99999999n", 0.099999999),
    ],
)
def test_grpc_timeout_units(value: str, seconds: float) -> None:
    assert _deadline.grpc_timeout_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["", "5", "S", "123456789S", "5s", "1.5S", "-1S", "5 S"])
def test_a_malformed_grpc_timeout_is_ignored(value: str) -> None:
    assert _deadline.grpc_timeout_seconds(value) is None


def test_bind_reads_grpc_timeout_and_the_nearer_deadline_wins() -> None:
    with meshprop.bind({"grpc-timeout": "200m", EXPECTED: "5000"}):
        left = meshprop.deadline()
        assert left is not None and 0.1 < left <= 0.2
    with meshprop.bind([(b"grpc-timeout", b"10S"), (EXPECTED.encode(), b"1000")]):
        left = meshprop.deadline()
        assert left is not None and 0.9 < left <= 1.0
    assert meshprop.deadline() is None


def test_cap_timeouts_is_off_by_default_and_read_from_the_environment() -> None:
    assert Config().cap_timeouts is False
    assert Config.from_env({"MESHPROP_CAP_TIMEOUTS": "true"}).cap_timeouts is True
    with pytest.raises(ValueError, match="MESHPROP_CAP_TIMEOUTS"):
        Config.from_env({"MESHPROP_CAP_TIMEOUTS": "sometimes"})
    with pytest.raises(TypeError, match="cap_timeouts"):
        Config(cap_timeouts="yes")  # type: ignore[arg-type]
