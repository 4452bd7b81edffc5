"""The OpenTelemetry bridge: a propagator that speaks the mesh's headers, and request ids on spans.

``MeshPropagator`` is the entry point ``meshprop`` of the group ``opentelemetry_propagator``, so
``OTEL_PROPAGATORS=meshprop`` (alone or beside others) puts it behind every stock
instrumentation. It reads B3 (single and multi) and W3C trace-context into the OpenTelemetry
context, and the rest of meshprop's headers (``x-request-id``, baggage, routing headers) into a
meshprop snapshot stored in that same context, where meshprop's clients, ``ContextFilter`` and
``RequestIdSpanProcessor`` find it when no meshprop adapter serves the request. It never parses
a header itself: the core validators decide, exactly as for an inbound request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ._extras import require

require("opentelemetry.trace", "otel")
require("opentelemetry.sdk.trace", "otel")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.context import Context  # noqa: E402
from opentelemetry.propagators.textmap import (  # noqa: E402
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor  # noqa: E402

from . import _headers as h  # noqa: E402
from ._capture import capture_pairs  # noqa: E402
from ._config import PREFERENCES, Config  # noqa: E402
from ._instrument import active_plan, is_instrumented  # noqa: E402
from ._otel_bridge import (  # noqa: E402
    B3_FORMATS,
    B3_MULTI_NAMES,
    SNAPSHOT_KEY,
    TRACE_NAMES,
    W3C_NAMES,
    current_snapshot,
    parent_span_id,
    received_b3,
    same_trace,
    span_headers,
)
from ._outbound import is_noted_outside, note_injected  # noqa: E402
from ._plan import plan_for  # noqa: E402

__all__ = ["REQUEST_ID_ATTRIBUTE", "MeshPropagator", "RequestIdSpanProcessor"]

#: The span attribute that carries the request id: the tag Envoy puts on every sidecar span,
#: so one tag search finds the sidecars' spans and the app's spans of a request together.
REQUEST_ID_ATTRIBUTE = "guid:x-request-id"

_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)


class MeshPropagator(TextMapPropagator):
    """B3 and W3C trace-context in, B3 and W3C out, plus the mesh's other headers.

    ``b3``: which B3 headers ``inject`` writes: ``"multi"`` (the default, as Istio's Zipkin
    setup sends), ``"single"`` or ``"both"``; W3C ``traceparent``/``tracestate`` are always
    written. ``prefer``: which inbound context becomes the parent when B3 and W3C both arrive
    and name different spans; by default the Config's (``MESHPROP_PREFER``): ``"b3"`` where
    the sidecars rewrite B3 (Istio's Zipkin provider), ``"w3c"`` where they rewrite only
    ``traceparent`` (its OpenTelemetry provider). ``config``: which headers count, as
    everywhere in meshprop.

    ``extract`` never raises and never stores an invalid context; it does not make up a request
    id when none came in (the adapter does, and echoes it), so an extract that runs before
    meshprop's adapter cannot produce a second id for the same request.
    """

    def __init__(
        self, *, b3: str = "multi", prefer: str | None = None, config: Config | None = None
    ) -> None:
        if b3 not in B3_FORMATS:
            raise ValueError(f"b3={b3!r}: expected one of {', '.join(B3_FORMATS)}")
        plan = plan_for(config)
        prefer = plan.config.prefer if prefer is None else prefer
        if prefer not in PREFERENCES:
            raise ValueError(f"prefer={prefer!r}: expected 'b3' or 'w3c'")
        self._capture_plan = plan_for(
            dataclasses.replace(plan.config, request_id_generator=None, prefer=prefer)
        )
        self._b3_format = b3
        self._prefer_w3c = prefer == "w3c"
        self._names = plan.forwarded_name_set
        self._prefixes = plan.prefixes
        written = set(plan.forwarded_names) | set(W3C_NAMES)
        if b3 != "single":
            written.update(B3_MULTI_NAMES)
        if b3 != "multi":
            written.add(h.B3)
        self._fields = frozenset(written)

    @property
    def fields(self) -> set[str]:
        """Every header name ``inject`` can write.

        A header matched only by a configured prefix (``Config(prefixes=...)``) is forwarded
        too but cannot be listed by name.
        """
        return set(self._fields)

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        if context is None:
            context = Context()
        try:
            pairs = self._read(carrier, getter)
            snapshot = capture_pairs(pairs, self._capture_plan)
            if not snapshot.headers:
                return context
            span_context = self._parent(snapshot.headers)
        except Exception:  # a broken carrier or getter must not break the request
            return context
        if span_context is not None:
            context = trace.set_span_in_context(trace.NonRecordingSpan(span_context), context)
        return otel_context.set_value(SNAPSHOT_KEY, snapshot, context)

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        if is_instrumented() and not _destination_in_scope(carrier):
            return  # instrument() is on: the scope holds for what is injected too
        snapshot = current_snapshot(context)
        span = trace.get_current_span(context)
        span_context = span.get_span_context()
        forwarded: Mapping[str, str]
        if span_context.is_valid:
            forwarded = span_headers(span_context, parent_span_id(span), snapshot, self._b3_format)
        elif snapshot is not None:
            forwarded = snapshot.headers
        else:
            return
        written = []
        for name, value in forwarded.items():
            # The caller's own request id or routing header wins; trace headers are ours.
            if name not in TRACE_NAMES and _carries(carrier, name):
                continue
            setter.set(carrier, name, value)
            written.append((name, value))
        if is_instrumented():
            note_injected(tuple(written))

    def _read(self, carrier: Any, getter: Getter[Any]) -> list[tuple[str, str]]:
        """The raw values of meshprop's headers in the carrier, names in any case.

        One pass over the carrier's names, then a ``get`` only for the names meshprop reads
        (stock getters such as the ASGI one scan every header on each ``get``). A getter
        without ``keys`` is asked for each configured name in lower case instead.
        """
        names = self._names
        prefixes = self._prefixes
        try:
            keys: Iterable[str] = getter.keys(carrier)
        except Exception:
            keys = ()
        wanted: list[str] = []
        for key in dict.fromkeys(keys):
            name = key.lower()
            if name in names or (prefixes and name.startswith(prefixes)):
                wanted.append(key)
        if not wanted:
            wanted = list(names)
        pairs: list[tuple[str, str]] = []
        for key in wanted:
            values = getter.get(carrier, key)
            if values is None:
                continue
            if isinstance(values, str):
                values = [values]
            for value in values:
                if isinstance(value, str):
                    pairs.append((key, value))
        return pairs

    def _parent(self, headers: Mapping[str, str]) -> trace.SpanContext | None:
        """The remote parent named by the validated headers, or None."""
        b3 = received_b3(headers)
        traceparent = headers.get(h.TRACEPARENT)
        w3c_trace_id = traceparent[3:35] if traceparent is not None else None
        if b3 is not None and (w3c_trace_id is None or not self._prefer_w3c):
            trace_id, span_id, decision = b3
            continues_w3c = w3c_trace_id is not None and same_trace(trace_id, w3c_trace_id)
            if decision in ("1", "d"):
                flags = _SAMPLED
            elif decision == "" and traceparent is not None and continues_w3c:
                flags = trace.TraceFlags(int(traceparent[53:55], 16))  # W3C decided it
            else:
                flags = _NOT_SAMPLED
        elif traceparent is not None:
            trace_id, span_id = traceparent[3:35], traceparent[36:52]
            flags = trace.TraceFlags(int(traceparent[53:55], 16))
            continues_w3c = True
        else:
            return None
        trace_state = None
        tracestate = headers.get(h.TRACESTATE)
        if continues_w3c and tracestate is not None:
            trace_state = trace.TraceState.from_header([tracestate])
        return trace.SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=flags,
            trace_state=trace_state,
        )


def _destination_in_scope(carrier: Any) -> bool:
    """Whether a carrier's call stays inside the scope, as far as it can be told here: a
    client noted its destination outside, or the carrier names its host (httpx's do)."""
    if is_noted_outside(carrier):
        return False
    try:
        host = carrier.get("host") if hasattr(carrier, "get") else None
    except Exception:
        host = None
    if isinstance(host, str) and host:
        plan = active_plan()
        return plan is None or plan.scope.includes_url(f"http://{host}/")
    return True


def _carries(carrier: Any, name: str) -> bool:
    try:
        return name in carrier
    except TypeError:
        return False


class RequestIdSpanProcessor(SpanProcessor):
    """Records the request id on every span started inside a request.

    Under ``guid:x-request-id`` by default, the tag Envoy sets on each sidecar span, so a search
    for one request id finds the whole request: sidecars, this app, and the services it calls.
    It reads meshprop's snapshot (from an adapter, or stored by ``MeshPropagator.extract`` in
    the span's parent context), so it also works when no meshprop adapter is installed.
    """

    def __init__(self, attribute: str = REQUEST_ID_ATTRIBUTE) -> None:
        self._attribute = attribute

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        snapshot = current_snapshot(parent_context)
        if snapshot is not None and snapshot.request_id is not None:
            span.set_attribute(self._attribute, snapshot.request_id)

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
