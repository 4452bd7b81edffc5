"""``MeshPropagator`` over the core's B3 and W3C vectors, and what it keeps that OTel's B3 loses."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import meshprop
from meshprop import Config
from meshprop._otel_bridge import SNAPSHOT_KEY
from meshprop._snapshot import Snapshot
from meshprop.otel import MeshPropagator, RequestIdSpanProcessor

VECTORS = Path(__file__).parent / "vectors"
TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
OTHER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_SPAN = "00f067aa0ba902b7"


def _cases(name: str) -> list[Any]:
    cases = json.loads((VECTORS / name).read_text())["cases"]
    return [pytest.param(case, id=f"{name}: {case['name']}") for case in cases]


class PairsGetter(Getter[list[tuple[str, str]]]):
    """A case-sensitive getter over raw pairs, as a framework that keeps the sender's case."""

    def get(self, carrier: list[tuple[str, str]], key: str) -> list[str] | None:
        values = [value for name, value in carrier if name == key]
        return values or None

    def keys(self, carrier: list[tuple[str, str]]) -> list[str]:
        return [name for name, _ in carrier]


class NoKeysGetter(Getter[dict[str, str]]):
    """A getter that cannot list keys: the propagator asks for each name in lower case."""

    def get(self, carrier: dict[str, str], key: str) -> list[str] | None:
        return [carrier[key]] if key in carrier else None

    def keys(self, carrier: dict[str, str]) -> list[str]:
        raise NotImplementedError


class BrokenGetter(Getter[Any]):
    def get(self, carrier: Any, key: str) -> list[str] | None:
        raise RuntimeError("broken carrier")

    def keys(self, carrier: Any) -> list[str]:
        raise RuntimeError("broken carrier")


def _parent(context: Context) -> trace.SpanContext:
    return trace.get_current_span(context).get_span_context()


def _stored_snapshot(context: Context) -> Snapshot | None:
    stored = otel_context.get_value(SNAPSHOT_KEY, context)
    assert stored is None or isinstance(stored, Snapshot)
    return stored


def _inject(propagator: MeshPropagator, context: Context) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=context)
    return carrier


@contextlib.contextmanager
def serving(tracer: trace.Tracer, context: Context) -> Iterator[trace.Span]:
    """What a stock server instrumentation does: attach the extracted context, start a span."""
    token = otel_context.attach(context)
    try:
        with tracer.start_as_current_span("server", kind=trace.SpanKind.SERVER) as span:
            yield span
    finally:
        otel_context.detach(token)


@pytest.fixture
def tracer() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    yield provider.get_tracer("test")
    provider.shutdown()


@pytest.mark.parametrize("case", _cases("b3.json") + _cases("w3c.json"))
def test_extract_follows_the_core_vectors(case: dict[str, Any]) -> None:
    pairs = [(name, value) for name, value in case["headers"]]
    context = MeshPropagator().extract(pairs, getter=PairsGetter())

    snapshot = _stored_snapshot(context)
    forwarded = {} if snapshot is None else dict(snapshot.headers)
    assert forwarded == case["forwarded"]
    parent = _parent(context)
    if case["trace_id"] is None:
        assert parent == trace.INVALID_SPAN_CONTEXT  # never an invalid context stored
    else:
        assert parent.is_valid and parent.is_remote
        assert parent.trace_id == int(case["trace_id"], 16)
        assert parent.span_id == int(case["span_id"], 16)


@pytest.mark.parametrize("case", _cases("b3.json") + _cases("w3c.json"))
def test_inject_after_extract_never_writes_zero_or_invalid_ids(case: dict[str, Any]) -> None:
    pairs = [(name, value) for name, value in case["headers"]]
    propagator = MeshPropagator(b3="both")
    injected = _inject(propagator, propagator.extract(pairs, getter=PairsGetter()))
    if case["trace_id"] is None:
        # No span: what came in leaves verbatim, nothing more.
        assert injected == case["forwarded"]
    else:
        trace_id = case["trace_id"]
        assert injected["x-b3-traceid"] == trace_id
        assert injected["x-b3-spanid"] == case["span_id"]
        assert injected["b3"].startswith(f"{trace_id}-{case['span_id']}")
        assert injected["traceparent"][3:35] == trace_id.rjust(32, "0")
    ids = [injected.get(name, "1") for name in ("x-b3-traceid", "x-b3-spanid")]
    if len(injected.get("b3", "")) > 1:
        ids += injected["b3"].split("-")[:2]
    if "traceparent" in injected:
        ids += injected["traceparent"].split("-")[1:3]
    assert all(value.strip("0") for value in ids)


def test_getters_are_case_insensitive_with_a_plain_dict() -> None:
    carrier = {
        "X-B3-TraceId": TRACE,
        "X-B3-SpanId": SPAN,
        "X-Request-ID": "abc",
        "X-B3-Sampled": "1",
    }
    context = MeshPropagator().extract(carrier)
    assert _parent(context).trace_id == int(TRACE, 16)
    assert _parent(context).trace_flags.sampled
    snapshot = _stored_snapshot(context)
    assert snapshot is not None and snapshot.request_id == "abc"


def test_a_getter_without_keys_is_asked_for_each_name() -> None:
    carrier = {"traceparent": f"00-{TRACE}-{SPAN}-01", "x-request-id": "abc"}
    context = MeshPropagator().extract(carrier, getter=NoKeysGetter())
    assert _parent(context).span_id == int(SPAN, 16)
    snapshot = _stored_snapshot(context)
    assert snapshot is not None and snapshot.request_id == "abc"


def test_extract_never_raises_and_keeps_the_given_context() -> None:
    given = otel_context.set_value("unrelated", 1)
    assert MeshPropagator().extract(object(), given, getter=BrokenGetter()) is given


def test_extract_does_not_make_up_a_request_id() -> None:
    """The adapter generates (and echoes) it; an extract before the adapter must not."""
    context = MeshPropagator().extract({"traceparent": f"00-{TRACE}-{SPAN}-01"})
    snapshot = _stored_snapshot(context)
    assert snapshot is not None and snapshot.request_id is None
    assert MeshPropagator().extract({"content-type": "text/plain"}) == Context()


@pytest.mark.parametrize(
    ("inbound", "flags_header", "single_decision"),
    [
        ({"b3": f"{TRACE}-{SPAN}-d"}, {"x-b3-flags": "1"}, "d"),
        ({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"}, {"x-b3-flags": "1"}, "d"),
        ({"b3": f"{TRACE}-{SPAN}"}, {}, None),
        ({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN}, {}, None),
        ({"b3": f"{TRACE}-{SPAN}-1"}, {"x-b3-sampled": "1"}, "1"),
        (
            {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "0"},
            {"x-b3-sampled": "0"},
            "0",
        ),
    ],
    ids=["single debug", "multi debug", "single deferred", "multi deferred", "accept", "deny"],
)
def test_debug_and_deferred_survive_a_round_trip(
    inbound: dict[str, str], flags_header: dict[str, str], single_decision: str | None
) -> None:
    context = MeshPropagator().extract(inbound)
    assert _parent(context).trace_flags.sampled == (single_decision in ("d", "1"))

    multi = _inject(MeshPropagator(), context)
    decision_headers = {k: v for k, v in multi.items() if k in ("x-b3-sampled", "x-b3-flags")}
    assert decision_headers == flags_header
    assert "b3" not in multi

    single = _inject(MeshPropagator(b3="single"), context)["b3"]
    expected = f"{TRACE}-{SPAN}" + ("" if single_decision is None else f"-{single_decision}")
    assert single == expected
    assert not {"x-b3-traceid", "x-b3-sampled", "x-b3-flags"} & set(
        _inject(MeshPropagator(b3="single"), context)
    )


def test_a_child_span_keeps_debug_and_its_parent_id(tracer: trace.Tracer) -> None:
    context = MeshPropagator().extract({"b3": f"{TRACE}-{SPAN}-d"})
    with serving(tracer, context) as child:
        injected = _inject(MeshPropagator(b3="both"), otel_context.get_current())
        child_span = format(child.get_span_context().span_id, "016x")
    assert injected["x-b3-traceid"] == TRACE
    assert injected["x-b3-spanid"] == child_span
    assert injected["x-b3-parentspanid"] == SPAN
    assert injected["x-b3-flags"] == "1"
    assert injected["b3"] == f"{TRACE}-{child_span}-d-{SPAN}"
    assert injected["traceparent"] == f"00-{TRACE}-{child_span}-01"


def test_a_deferred_decision_stays_deferred_under_a_child_span(tracer: trace.Tracer) -> None:
    context = MeshPropagator().extract({"x-b3-traceid": TRACE, "x-b3-spanid": SPAN})
    with serving(tracer, context) as child:
        injected = _inject(MeshPropagator(b3="both"), otel_context.get_current())
    child_span = format(child.get_span_context().span_id, "016x")
    assert "x-b3-sampled" not in injected and "x-b3-flags" not in injected
    assert injected["b3"] == f"{TRACE}-{child_span}"
    assert injected["traceparent"].endswith("-00")


def test_a_64_bit_trace_id_stays_64_bit() -> None:
    trace_id = "48485a3953bb6124"
    context = MeshPropagator().extract({"b3": f"{trace_id}-{SPAN}-1"})
    injected = _inject(MeshPropagator(b3="both"), context)
    assert injected["x-b3-traceid"] == trace_id
    assert injected["b3"] == f"{trace_id}-{SPAN}-1"
    assert injected["traceparent"] == f"00-{'0' * 16}{trace_id}-{SPAN}-01"


@pytest.mark.parametrize(
    "inbound",
    [
        {"b3": f"{'0' * 32}-{SPAN}-1"},
        {"x-b3-traceid": "0" * 32, "x-b3-spanid": SPAN},
        {"x-b3-traceid": TRACE, "x-b3-spanid": "0" * 16},
        {"traceparent": f"00-{'0' * 32}-{SPAN}-01"},
        {"traceparent": f"00-{TRACE}-{'0' * 16}-01"},
    ],
)
def test_all_zero_ids_are_ignored_not_reemitted(inbound: dict[str, str]) -> None:
    context = MeshPropagator().extract({**inbound, "x-request-id": "abc"})
    assert _parent(context) == trace.INVALID_SPAN_CONTEXT
    assert _inject(MeshPropagator(b3="both"), context) == {"x-request-id": "abc"}


def test_b3_wins_by_default_when_b3_and_w3c_disagree() -> None:
    carrier = {
        "b3": f"{TRACE}-{SPAN}-1",
        "traceparent": f"00-{OTHER_TRACE}-{OTHER_SPAN}-01",
        "tracestate": "vendor=value",
    }
    parent = _parent(MeshPropagator().extract(carrier))
    assert (parent.trace_id, parent.span_id) == (int(TRACE, 16), int(SPAN, 16))
    assert not parent.trace_state  # it belongs to the other trace

    # Istio's OpenTelemetry provider rewrites only traceparent: the Config (MESHPROP_PREFER)
    # says so once, for the propagator and for meshprop.trace_id() alike.
    for propagator in (
        MeshPropagator(prefer="w3c"),
        MeshPropagator(config=Config(prefer="w3c")),
        MeshPropagator(config=Config.from_env({"MESHPROP_PREFER": "w3c"})),
    ):
        parent = _parent(propagator.extract(carrier))
        assert (parent.trace_id, parent.span_id) == (int(OTHER_TRACE, 16), int(OTHER_SPAN, 16))
        assert parent.trace_state.to_header() == "vendor=value"
    parent = _parent(MeshPropagator(prefer="b3", config=Config(prefer="w3c")).extract(carrier))
    assert parent.span_id == int(SPAN, 16)  # an explicit argument wins over the Config


def test_tracestate_travels_when_b3_and_w3c_agree() -> None:
    carrier = {
        "x-b3-traceid": TRACE,
        "x-b3-spanid": SPAN,
        "traceparent": f"00-{TRACE}-{SPAN}-01",
        "tracestate": "vendor=value",
    }
    context = MeshPropagator().extract(carrier)
    assert _parent(context).trace_flags.sampled  # deferred in B3, decided in W3C
    assert _inject(MeshPropagator(), context)["tracestate"] == "vendor=value"


def test_inject_replaces_inbound_trace_headers_and_keeps_the_others(
    tracer: trace.Tracer,
) -> None:
    inbound = {
        "b3": f"{TRACE}-{SPAN}-1",
        "x-b3-traceid": TRACE,
        "x-b3-spanid": SPAN,
        "x-b3-parentspanid": OTHER_SPAN,
        "x-request-id": "abc",
        "x-canary": "yes",
    }
    config = Config(extra_headers=["x-canary"])
    propagator = MeshPropagator(config=config)
    with serving(tracer, propagator.extract(inbound)) as child:
        injected = _inject(propagator, otel_context.get_current())
    child_span = format(child.get_span_context().span_id, "016x")
    assert injected == {
        "x-request-id": "abc",
        "x-canary": "yes",
        "x-b3-traceid": TRACE,
        "x-b3-spanid": child_span,
        "x-b3-parentspanid": SPAN,
        "x-b3-sampled": "1",
        "traceparent": f"00-{TRACE}-{child_span}-01",
    }


def test_inject_leaves_a_request_id_the_caller_set() -> None:
    context = MeshPropagator().extract(
        {"x-request-id": "inbound", "traceparent": f"00-{TRACE}-{SPAN}-01"}
    )
    carrier = {"x-request-id": "callers-own"}
    MeshPropagator().inject(carrier, context=context)
    assert carrier["x-request-id"] == "callers-own"
    assert carrier["traceparent"] == f"00-{TRACE}-{SPAN}-01"


def test_inject_prefers_the_adapters_snapshot(tracer: trace.Tracer) -> None:
    context = MeshPropagator().extract({"x-request-id": "from-otel"})
    with meshprop.bind({"x-request-id": "from-adapter"}):
        assert _inject(MeshPropagator(), context)["x-request-id"] == "from-adapter"


@pytest.mark.parametrize("b3", ["multi", "single", "both"])
def test_fields_are_exactly_what_inject_can_write(b3: str, tracer: trace.Tracer) -> None:
    config = Config(presets=["baggage"], extra_headers=["x-canary"])
    propagator = MeshPropagator(b3=b3, config=config)
    inbound = {
        "x-request-id": "abc",
        "b3": f"{TRACE}-{SPAN}-d-{OTHER_SPAN}",
        "x-b3-traceid": TRACE,
        "x-b3-spanid": SPAN,
        "x-b3-parentspanid": OTHER_SPAN,
        "x-b3-sampled": "1",
        "x-b3-flags": "1",
        "traceparent": f"00-{TRACE}-{SPAN}-01",
        "tracestate": "vendor=value",
        "baggage": "user=1",
        "x-canary": "yes",
    }
    written: set[str] = set()
    context = propagator.extract(inbound)
    with meshprop.bind(inbound, config=config):  # no span: verbatim
        written |= set(_inject(propagator, Context()))
    with serving(tracer, context):  # debug span
        written |= set(_inject(propagator, otel_context.get_current()))
    accept = propagator.extract({**inbound, "b3": f"{TRACE}-{SPAN}-1", "x-b3-flags": "0"})
    with serving(tracer, accept):
        written |= set(_inject(propagator, otel_context.get_current()))
    assert written == propagator.fields


def test_the_snapshot_in_the_context_reaches_clients_and_spans() -> None:
    """No adapter: an OTel server instrumentation extracted; meshprop still sees the request."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RequestIdSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    context = MeshPropagator().extract(
        {"x-request-id": "abc", "traceparent": f"00-{TRACE}-{SPAN}-01"}
    )
    with serving(provider.get_tracer("test"), context):
        forwarded = meshprop.outbound_headers()
    assert forwarded["x-request-id"] == "abc"
    assert forwarded["traceparent"][3:35] == TRACE
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None and span.attributes["guid:x-request-id"] == "abc"


def test_bad_options_fail_early() -> None:
    with pytest.raises(ValueError, match="b3="):
        MeshPropagator(b3="multiple")
    with pytest.raises(ValueError, match="prefer="):
        MeshPropagator(prefer="zipkin")


_GLOBAL_TEXTMAP = """
import sys
from opentelemetry.propagate import get_global_textmap, inject
import meshprop
textmap = get_global_textmap()
kinds = [type(p).__name__ for p in textmap._propagators]
carrier = {}
trace_id, span_id = sys.argv[1:3]
with meshprop.bind({"x-request-id": "abc", "x-b3-traceid": trace_id, "x-b3-spanid": span_id}):
    inject(carrier)
print(",".join(kinds), carrier.get("x-request-id"), carrier.get("x-b3-spanid"))
"""


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("meshprop", "MeshPropagator"),
        ("tracecontext,meshprop", "TraceContextTextMapPropagator,MeshPropagator"),
    ],
)
def test_otel_propagators_environment_variable_loads_it(setting: str, expected: str) -> None:
    env = {**os.environ, "OTEL_PROPAGATORS": setting}
    result = subprocess.run(
        [sys.executable, "-c", _GLOBAL_TEXTMAP, TRACE, SPAN],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [expected, "abc", SPAN]
