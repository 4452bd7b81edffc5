"""The caller's deadline: how long the caller will wait, read when a request arrives, and what
is left of it when the request's code makes an outbound call.

Envoy's router tells the app its route timeout in ``x-envoy-expected-rq-timeout-ms`` (0 is
Envoy's "no timeout"); a gRPC call carries ``grpc-timeout``. Either becomes an instant on the
monotonic clock, kept on the snapshot, so every later reading is "that instant minus now".
The clients cap their timeouts with ``time_left_for_call``, which answers only while the plan
says to (``Config.cap_timeouts``).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from ._snapshot import Snapshot, active

if TYPE_CHECKING:
    from ._plan import Plan

EXPECTED_TIMEOUT = "x-envoy-expected-rq-timeout-ms"
GRPC_TIMEOUT = "grpc-timeout"

#: The values of ``x-envoy-expected-rq-timeout-ms`` meshprop reads (whole milliseconds, up to
#: about 115 days): the fast path's line and the parser below accept exactly these.
EXPECTED_TIMEOUT_FRAGMENT = "[0-9]{1,10}"
_EXPECTED_TIMEOUT = re.compile(EXPECTED_TIMEOUT_FRAGMENT)
# gRPC over HTTP/2: "Timeout → TimeoutValue TimeoutUnit", at most 8 digits.
_GRPC_TIMEOUT = re.compile("([0-9]{1,8})([HMSmun])")
_GRPC_UNIT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def expected_timeout_seconds(value: str | bytes | bytearray) -> float | None:
    """Seconds from an ``x-envoy-expected-rq-timeout-ms`` value; None for a malformed value or
    0 (no timeout: nothing to cap)."""
    text = value if isinstance(value, str) else value.decode("latin-1")
    text = text.strip(" \t")
    if _EXPECTED_TIMEOUT.fullmatch(text) is None:
        return None
    milliseconds = int(text)
    return milliseconds / 1000 if milliseconds else None


def grpc_timeout_seconds(value: str | bytes) -> float | None:
    """Seconds from a ``grpc-timeout`` value (``"250m"``, ``"3S"``); None for a malformed one."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _GRPC_TIMEOUT.fullmatch(text.strip(" \t"))
    if match is None:
        return None
    return int(match[1]) * _GRPC_UNIT_SECONDS[match[2]]


def at(seconds: float) -> float:
    """The monotonic instant ``seconds`` from now."""
    return time.monotonic() + seconds


def time_left(snapshot: Snapshot | None) -> float | None:
    """Seconds left of ``snapshot``'s deadline (0.0 once it has passed), None without one."""
    if snapshot is None:
        return None
    deadline_at = snapshot.deadline_at
    if deadline_at is None:
        return None
    return max(0.0, deadline_at - time.monotonic())


def deadline() -> float | None:
    """Seconds left of the current request's caller's timeout (0.0 once it has passed), or None
    outside a request or when the caller sent none (``x-envoy-expected-rq-timeout-ms``, or
    ``grpc-timeout`` for a gRPC call)."""
    return time_left(active())


def time_left_for_call(plan: Plan) -> float | None:
    """What a client made under ``plan`` caps its timeout to: the seconds left, or None (leave
    the timeout as it is) when ``cap_timeouts`` is off or the request has no deadline."""
    if not plan.cap_timeouts:
        return None
    return time_left(active())


def capped(timeout: float | None, left: float) -> float:
    """A timeout (None: none) lowered to ``left``, never raised."""
    return left if timeout is None or timeout > left else timeout


#: The longest time a ``grpc-timeout`` can say (8 digits of hours): a gRPC server that reports
#: more left than this for a call (``grpc.server`` reports its "no deadline" as about 2**63
#: seconds) has no deadline from its caller.
LONGEST_GRPC_TIMEOUT = 99_999_999 * 3600.0


def nearer(deadline_at: float | None, seconds: float) -> float:
    """The nearer of ``deadline_at`` (None: none) and the instant ``seconds`` from now: where a
    caller's wait is known twice, the shorter is the one it keeps."""
    other_at = at(seconds)
    return other_at if deadline_at is None or other_at < deadline_at else deadline_at


def nothing_left_message(method: str, url: str) -> str:
    """The message of the timeout error a client raises instead of making a call once the
    caller's deadline has passed: it names the deadline, so the error is not taken for the
    destination being slow."""
    return (
        f"{method} {url} was not sent: nothing is left of the caller's deadline "
        f"({EXPECTED_TIMEOUT} / {GRPC_TIMEOUT}; meshprop caps timeouts with cap_timeouts)"
    )
