"""The pytest plugin: the ``meshprop_calls`` fixture, which records every outbound call made
through meshprop's clients and hooks during a test, and asserts in one line that a service
forwarded the inbound request's headers to each of its downstream calls.

pytest loads it through the ``pytest11`` entry point ``meshprop``. Loading it registers nothing:
only a test that requests the fixture turns recording on, for that test alone.

While the fixture is active it also watches httpx's transports, so a call sent by a plain
``httpx`` client that meshprop never saw (no drop-in client, no ``instrument()``) is recorded
too, marked as such: that is the regression the fixture is there to catch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import pytest

from . import _headers as h
from ._capture import HeaderPairs, capture_pairs
from ._config import Config
from ._instrument import active_plan
from ._outbound import RECORDERS, OutboundCall, record_call
from ._plan import plan_for

__all__ = ["MeshpropCalls", "OutboundCall", "meshprop_calls"]


class _Expected(NamedTuple):
    """What every downstream call of one inbound request must carry."""

    request_id_name: str
    request_id: str | None  # None: the id meshprop generated for the request (or replaced)
    w3c_trace_id: str | None
    b3_trace_id: str | None
    trace_id: str | None
    others: Mapping[str, str]


class MeshpropCalls:
    """The outbound calls recorded during one test, in the order they were made, and the
    assertions on them. Iterate it, index it or take ``len()`` of it for the calls themselves
    (``OutboundCall``); ``downstream`` holds those made inside a request to a destination in
    the propagation scope, the ones that must forward."""

    def __init__(self) -> None:
        self._calls: list[OutboundCall] = []
        # The client's object of each call, kept alive for the test so that its id names one
        # call: a drop-in client under instrument() decides the same call twice.
        self._subjects: dict[int, object] = {}

    def _record(self, call: OutboundCall, subject: object) -> None:
        if not call.through_meshprop and not call.in_request:
            return  # a plain client outside any request: the test's own call into the app
        if subject is not None:
            if self._subjects.get(id(subject)) is subject:
                return
            self._subjects[id(subject)] = subject
        self._calls.append(call)

    @property
    def calls(self) -> list[OutboundCall]:
        return list(self._calls)

    @property
    def downstream(self) -> list[OutboundCall]:
        return [call for call in self._calls if call.in_request and call.in_scope]

    def __iter__(self) -> Iterator[OutboundCall]:
        return iter(list(self._calls))

    def __len__(self) -> int:
        return len(self._calls)

    def __getitem__(self, index: int) -> OutboundCall:
        return self._calls[index]

    def clear(self) -> None:
        """Forget the calls recorded so far (between two inbound requests of one test)."""
        self._calls.clear()
        self._subjects.clear()

    def __repr__(self) -> str:
        if not self._calls:
            return "<meshprop_calls: no outbound call>"
        lines = [f"<meshprop_calls: {len(self._calls)} outbound call(s)"]
        lines += [f"  {number}. {_describe(call)}" for number, call in enumerate(self._calls, 1)]
        return "\n".join(lines) + ">"

    def assert_forwarded(
        self, inbound_headers: HeaderPairs, *, config: Config | None = None
    ) -> None:
        """Every downstream call carried the request id and the trace of ``inbound_headers``
        (the headers the test sent to the service), and the other headers meshprop forwards.

        ``inbound_headers`` is read as the service's adapter reads it, with ``config`` (None:
        the process default): the request id must be the inbound one where meshprop keeps it,
        else the id of the request the call was made in; a ``traceparent`` or B3 trace id that
        came in must leave with the same trace id. Span ids are not compared: while an
        OpenTelemetry span is active each call carries that span's id.
        """
        __tracebackhide__ = True
        expected = _expected(inbound_headers, config)
        downstream = self.downstream
        if not downstream:
            raise AssertionError(_no_downstream_message(self))
        failures = [
            (number, call, problems)
            for number, call in enumerate(self._calls, 1)
            if call.in_request and call.in_scope and (problems := _problems(call, expected))
        ]
        if failures:
            raise AssertionError(_failure_message(len(downstream), failures, expected))

    def assert_no_calls_outside_scope(self) -> None:
        """No recorded call went to a destination outside the propagation scope."""
        __tracebackhide__ = True
        outside = [call for call in self._calls if not call.in_scope]
        if outside:
            lines = [
                f"meshprop_calls: {len(outside)} call(s) went outside the propagation scope "
                "(meshprop forwards nothing to them):"
            ]
            lines += [f"  {_describe(call)}" for call in outside]
            raise AssertionError("\n".join(lines))


@pytest.fixture
def meshprop_calls() -> Iterator[MeshpropCalls]:
    """Records every outbound call made through meshprop's clients and hooks (and, for httpx,
    through plain clients) during the test."""
    calls = MeshpropCalls()
    record = calls._record
    RECORDERS.append(record)
    stop_watching = _watch_plain_httpx()
    try:
        yield calls
    finally:
        stop_watching()
        RECORDERS.remove(record)


# -- what the inbound request asks for, and what a call lacks ----------------------------------


def _expected(inbound: HeaderPairs, config: Config | None) -> _Expected:
    plan = plan_for(config)
    pairs = list(inbound.items() if isinstance(inbound, Mapping) else inbound)
    snapshot = capture_pairs(pairs, plan)
    headers = snapshot.headers
    name = plan.request_id_name
    sent_id = next((_text(v).strip(" \t") for n, v in pairs if _text(n).lower() == name), None)
    w3c = h.traceparent_ids(headers[h.TRACEPARENT]) if h.TRACEPARENT in headers else None
    return _Expected(
        request_id_name=name,
        request_id=snapshot.request_id if snapshot.request_id == sent_id else None,
        w3c_trace_id=None if w3c is None else w3c[0],
        b3_trace_id=_b3_trace_id(headers),
        trace_id=snapshot.trace_id,
        others={
            other: value
            for other, value in headers.items()
            if other != name and other not in h.TRACE_CONTEXT_NAMES
        },
    )


def _problems(call: OutboundCall, expected: _Expected) -> list[str]:
    carried: dict[str, list[str]] = {}
    for name, value in call.carried if call.carried is not None else call.added.items():
        carried.setdefault(name, []).append(value)
    problems: list[str] = []

    name = expected.request_id_name
    request_id, whose = expected.request_id, "the inbound request's"
    if request_id is None:
        request_id, whose = call.request_id, "the id of the request the call was made in"
    if request_id is not None:
        problems += _compare(name, carried.get(name, []), request_id, f"{request_id!r}, {whose}")

    traceparents = carried.get(h.TRACEPARENT, [])
    w3c = _carried_w3c_trace_id(carried)
    if expected.w3c_trace_id is not None:
        wanted = expected.w3c_trace_id
        if not traceparents:
            problems.append(f"traceparent: missing, expected trace id {wanted}")
        elif len(traceparents) > 1:
            problems.append(f"traceparent: sent {len(traceparents)} times, expected once")
        elif w3c != wanted:
            got = "no valid trace id" if w3c is None else f"trace id {w3c}"
            problems.append(f"traceparent: {got} ({traceparents[0]!r}), expected trace id {wanted}")
    elif w3c is not None and expected.trace_id is not None and w3c != expected.trace_id:
        problems.append(
            f"traceparent: trace id {w3c}, but the request's trace is {expected.trace_id} "
            "(the call starts a second trace)"
        )
    b3 = _b3_trace_id({name: values[0] for name, values in carried.items()})
    if expected.b3_trace_id is not None:
        if b3 is None:
            problems.append(
                f"B3: neither b3 nor x-b3-traceid, expected trace id {expected.b3_trace_id}"
            )
        elif b3 != expected.b3_trace_id:
            problems.append(f"B3: trace id {b3}, expected {expected.b3_trace_id}")
    elif b3 is not None and expected.trace_id is not None and b3 != expected.trace_id:
        problems.append(
            f"B3: trace id {b3}, but the request's trace is {expected.trace_id} "
            "(the call starts a second trace)"
        )

    for other, value in expected.others.items():
        problems += _compare(other, carried.get(other, []), value, repr(value))
    return problems


def _compare(name: str, values: list[str], wanted: str, described: str) -> list[str]:
    if not values:
        return [f"{name}: missing, expected {described}"]
    if len(values) > 1:
        return [f"{name}: sent {len(values)} times ({', '.join(map(repr, values))}), expected once"]
    if values[0] != wanted:
        return [f"{name}: {values[0]!r}, expected {described}"]
    return []


def _carried_w3c_trace_id(carried: Mapping[str, list[str]]) -> str | None:
    values = carried.get(h.TRACEPARENT)
    ids = h.traceparent_ids(values[0]) if values else None
    return None if ids is None else ids[0]


def _b3_trace_id(headers: Mapping[str, str]) -> str | None:
    single = headers.get("b3")
    ids = None if single is None else h.b3_single_ids(single)
    if ids and ids[0]:
        return ids[0]
    return headers.get("x-b3-traceid")


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


# -- messages ----------------------------------------------------------------------------------


def _describe(call: OutboundCall) -> str:
    what = " ".join(part for part in (call.client, call.method, call.destination) if part)
    facts = ["in scope" if call.in_scope else "outside the scope"]
    if call.in_request:
        facts.append(f"in request {call.request_id}" if call.request_id else "in a request")
    else:
        facts.append("outside any request")
    if not call.through_meshprop:
        facts.append("plain client: not through meshprop")
    else:
        facts.append("added " + (", ".join(call.added) if call.added else "nothing"))
    return f"{what} ({'; '.join(facts)})"


def _failure_message(
    checked: int, failures: list[tuple[int, OutboundCall, list[str]]], expected: _Expected
) -> str:
    lines = [
        f"meshprop_calls.assert_forwarded: {len(failures)} of {checked} downstream call(s) "
        "did not forward the inbound request's headers"
    ]
    for number, call, problems in failures:
        lines.append(f"  call {number}: {_describe(call)}")
        if not call.through_meshprop:
            lines.append(
                "    sent by a plain client meshprop never saw: use meshprop's client "
                "(meshprop.httpx.Client) or call meshprop.instrument()"
            )
        elif call.carried is None:
            lines.append(f"    ({call.client} shows only what meshprop added to the call)")
        lines += [f"    - {problem}" for problem in problems]
    lines.append("  expected, from the inbound headers: " + _describe_expected(expected))
    return "\n".join(lines)


def _describe_expected(expected: _Expected) -> str:
    parts = [
        f"{expected.request_id_name}={expected.request_id!r}"
        if expected.request_id is not None
        else f"{expected.request_id_name} of the request"
    ]
    if expected.w3c_trace_id is not None:
        parts.append(f"traceparent trace id {expected.w3c_trace_id}")
    if expected.b3_trace_id is not None:
        parts.append(f"B3 trace id {expected.b3_trace_id}")
    parts += [f"{name}={value!r}" for name, value in expected.others.items()]
    return ", ".join(parts)


def _no_downstream_message(calls: MeshpropCalls) -> str:
    lines = [
        "meshprop_calls.assert_forwarded: no downstream call was recorded (none made inside "
        "a request to a destination in the propagation scope through meshprop's clients, "
        "instrument() or httpx)"
    ]
    if calls.calls:
        lines.append("  recorded instead:")
        lines += [f"    {_describe(call)}" for call in calls.calls]
        if any(not call.in_request for call in calls.calls):
            lines.append(
                "  a call outside any request lost the request's context (a thread or "
                "executor without meshprop.wrap() or instrument()?), or is the test's own call"
            )
    return "\n".join(lines)


# -- plain httpx clients -----------------------------------------------------------------------

# The transports every httpx request ends in, and the method that sends it.
_HTTPX_TRANSPORTS = (
    ("HTTPTransport", "handle_request"),
    ("AsyncHTTPTransport", "handle_async_request"),
    ("MockTransport", "handle_request"),
    ("MockTransport", "handle_async_request"),
    ("WSGITransport", "handle_request"),
    ("ASGITransport", "handle_async_request"),
)


def _watch_plain_httpx() -> Callable[[], None]:
    """Record the httpx requests meshprop never decided, as they reach their transport, until
    the returned function is called. Nothing is watched if httpx is not installed."""
    if importlib.util.find_spec("httpx") is None:
        return lambda: None
    import httpx

    from .httpx import is_decided

    def note(request: httpx.Request) -> None:
        if not is_decided(request):
            plan = active_plan() or plan_for(None)
            in_scope = plan.scope.includes_host(request.url.host)
            record_call(
                "httpx",
                request.method,
                str(request.url),
                {},
                in_scope,
                request.headers,
                request,
                through_meshprop=False,
            )

    patched: list[tuple[Any, str, Any, Any]] = []
    for class_name, method in _HTTPX_TRANSPORTS:
        owner = getattr(httpx, class_name, None)
        original = None if owner is None else vars(owner).get(method)
        if original is None:
            continue
        replacement = _watching(original, note, is_async=method.endswith("async_request"))
        setattr(owner, method, replacement)
        patched.append((owner, method, original, replacement))

    def stop() -> None:
        for owner, method, original, replacement in reversed(patched):
            if vars(owner).get(method) is replacement:  # else someone patched over it: leave it
                setattr(owner, method, original)

    return stop


def _watching(original: Any, note: Callable[[Any], None], *, is_async: bool) -> Any:
    if is_async:

        async def handle_async_request(self: Any, request: Any) -> Any:
            note(request)
            return await original(self, request)

        return handle_async_request

    def handle_request(self: Any, request: Any) -> Any:
        note(request)
        return original(self, request)

    return handle_request
