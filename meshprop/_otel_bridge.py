"""What OpenTelemetry adds to meshprop: the bridge that fills ``_tracing``'s slot when
imported (``_tracing.tracing()`` imports it once the process has imported OpenTelemetry).

Two things live here. Where a request served only by OpenTelemetry (a stock server
instrumentation with ``OTEL_PROPAGATORS=meshprop``, no meshprop adapter) keeps its snapshot:
``MeshPropagator.extract`` stores it in the OpenTelemetry context under ``SNAPSHOT_KEY``. And the
headers for a span: its ids in B3 and W3C form, plus the snapshot's other headers (request id,
baggage, routing headers) unchanged; the inbound trace headers name the caller's span, so they
are never sent beside them.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from . import _headers as h
from ._snapshot import CURRENT, Snapshot
from ._tracing import join

#: Where ``MeshPropagator.extract`` leaves the snapshot in the OpenTelemetry context.
SNAPSHOT_KEY = otel_context.create_key("meshprop-snapshot")

B3_MULTI_NAMES = (h.B3_TRACE_ID, h.B3_SPAN_ID, h.B3_PARENT_SPAN_ID, h.B3_SAMPLED, h.B3_FLAGS)
W3C_NAMES = (h.TRACEPARENT, h.TRACESTATE)
#: The headers that name a span: replaced, never forwarded, when meshprop writes a span's ids.
TRACE_NAMES = frozenset((h.B3, *B3_MULTI_NAMES, *W3C_NAMES))

#: B3 formats: which B3 headers carry a span's ids.
B3_FORMATS = ("multi", "single", "both")

_ZERO_HIGH_HALF = "0" * 16


def current_snapshot(context: Context | None = None) -> Snapshot | None:
    """meshprop's snapshot if an adapter set one, else the one the propagator extracted."""
    snapshot = CURRENT.get()
    if snapshot is None:
        stored = otel_context.get_value(SNAPSHOT_KEY, context)
        if isinstance(stored, Snapshot):
            return stored
    return snapshot


def received_b3(headers: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(trace id, span id, decision) of validated inbound B3 headers, ``b3`` first.

    The decision is ``d`` (debug), ``1``, ``0``, or ``""`` when the caller deferred it.
    ``headers`` has already passed the core validators, so splitting is all that is left.
    """
    single = headers.get(h.B3)
    if single is not None and len(single) > 1:
        fields = single.split("-")
        return fields[0], fields[1], fields[2] if len(fields) > 2 else ""
    trace_id = headers.get(h.B3_TRACE_ID)
    if trace_id is None:
        return None
    span_id = headers[h.B3_SPAN_ID]
    if single is not None:  # a lone decision in ``b3`` beside multi-header ids
        return trace_id, span_id, single
    if headers.get(h.B3_FLAGS) == "1":
        return trace_id, span_id, "d"
    sampled = headers.get(h.B3_SAMPLED)
    if sampled is None:
        return trace_id, span_id, ""
    return trace_id, span_id, "1" if sampled in ("1", "true") else "0"


def same_trace(b3_trace_id: str, trace_hex: str) -> bool:
    """A B3 trace id (64- or 128-bit) names the 128-bit trace ``trace_hex``."""
    if len(b3_trace_id) == 16:
        return trace_hex.startswith(_ZERO_HIGH_HALF) and trace_hex.endswith(b3_trace_id)
    return b3_trace_id == trace_hex


def parent_span_id(span: trace.Span) -> int | None:
    """The SDK span's parent id (for ``x-b3-parentspanid``); the API does not expose one."""
    parent = getattr(span, "parent", None)
    if isinstance(parent, trace.SpanContext) and parent.is_valid:
        return parent.span_id
    return None


def span_headers(
    span_context: trace.SpanContext,
    parent_id: int | None,
    snapshot: Snapshot | None,
    b3_format: str,
) -> dict[str, str]:
    """The headers for a call made inside ``span_context``: its ids, plus the snapshot's others.

    What OpenTelemetry's own B3 propagator loses is kept when the span continues the inbound B3
    trace: a debug decision stays debug, a deferred one stays absent (unless this service
    sampled the span), and a 64-bit trace id stays 64-bit, so every hop reports the same id.
    """
    trace_hex = format(span_context.trace_id, "032x")
    span_hex = format(span_context.span_id, "016x")
    sampled = span_context.trace_flags.sampled
    forwarded: dict[str, str] = {}
    b3_trace_id = trace_hex
    decision = "1" if sampled else "0"
    if snapshot is not None:
        for name, value in snapshot.headers.items():
            if name not in TRACE_NAMES:
                forwarded[name] = value
        received = received_b3(snapshot.headers)
        if received is not None and same_trace(received[0], trace_hex):
            b3_trace_id = received[0]
            if received[2] == "d":
                decision = "d"
            elif received[2] == "" and not sampled:
                decision = ""
    parent_hex = None if parent_id is None else format(parent_id, "016x")
    if b3_format != "single":
        forwarded[h.B3_TRACE_ID] = b3_trace_id
        forwarded[h.B3_SPAN_ID] = span_hex
        if parent_hex is not None:
            forwarded[h.B3_PARENT_SPAN_ID] = parent_hex
        if decision == "d":
            forwarded[h.B3_FLAGS] = "1"
        elif decision:
            forwarded[h.B3_SAMPLED] = decision
    if b3_format != "multi":
        single = f"{b3_trace_id}-{span_hex}"
        if decision:
            single += "-" + decision
            if parent_hex is not None:
                single += "-" + parent_hex
        forwarded[h.B3] = single
    flags = int(span_context.trace_flags)
    forwarded[h.TRACEPARENT] = f"00-{trace_hex}-{span_hex}-{flags:02x}"
    if span_context.trace_state:
        forwarded[h.TRACESTATE] = span_context.trace_state.to_header()
    return forwarded


class _Bridge:
    """The ``_tracing.Tracing`` meshprop's core asks."""

    def stored_snapshot(self) -> Snapshot | None:
        stored = otel_context.get_value(SNAPSHOT_KEY)
        return stored if isinstance(stored, Snapshot) else None

    def span_ids(self) -> tuple[str, str] | None:
        return active_span_ids()

    def headers_for(self, snapshot: Snapshot) -> Mapping[str, str]:
        """With an active span, its ids in B3 multi and W3C form (what ``MeshPropagator()``
        injects by default, so a stock client instrumentation injecting after meshprop
        overwrites exactly these), else the snapshot's headers."""
        global _last_span_headers
        span = trace.get_current_span()
        span_context = span.get_span_context()
        if not span_context.is_valid:
            return snapshot.headers
        last = _last_span_headers
        if last is not None and last[0] is span_context and last[1] is snapshot:
            return last[2]
        forwarded = span_headers(span_context, parent_span_id(span), snapshot, "multi")
        _last_span_headers = (span_context, snapshot, forwarded)
        return forwarded


# The last headers built for a (span, snapshot) pair: every call a request makes inside one
# span gets the same headers, so they are built once. Compared by identity and replaced as
# one tuple, so concurrent requests can only miss, never see another request's headers.
_last_span_headers: tuple[trace.SpanContext, Snapshot, dict[str, str]] | None = None


def active_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the active OpenTelemetry span, in hex, or None."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


join(_Bridge())
