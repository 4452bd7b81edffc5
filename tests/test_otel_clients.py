"""meshprop's clients under OpenTelemetry: the active span's ids, or what came in, verbatim;
beside a stock client instrumentation, one trace id and consistent headers.

A real HTTP server on 127.0.0.1 echoes the headers it received, so each client and each stock
instrumentation runs exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import meshprop
import meshprop.aiohttp
import meshprop.httpx
import meshprop.requests
from meshprop import Config
from meshprop._outbound import headers_for_host
from meshprop._plan import plan_for
from meshprop.otel import MeshPropagator
from tests.recording_server import recording_server

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
INBOUND = {
    "x-request-id": "req-1",
    "b3": f"{TRACE}-{SPAN}-1",
    "x-b3-traceid": TRACE,
    "x-b3-spanid": SPAN,
    "x-b3-sampled": "1",
    "traceparent": f"00-{TRACE}-{SPAN}-01",
}
TRACE_HEADERS = ("b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "traceparent")


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    # the echo: every header pair received, lower-cased names, in order
    with recording_server(echo=lambda request: request.headers) as server:
        yield server.url + "/echo"


def _received(pairs: list[list[str]]) -> dict[str, list[str]]:
    received: dict[str, list[str]] = {}
    for name, value in pairs:
        received.setdefault(name, []).append(value)
    return received


def call_requests(url: str) -> dict[str, list[str]]:
    with meshprop.requests.Session() as session:
        return _received(session.get(url, timeout=10).json())


def call_httpx(url: str) -> dict[str, list[str]]:
    with meshprop.httpx.Client(trust_env=False, timeout=10) as client:
        return _received(client.get(url).json())


def call_aiohttp(url: str) -> dict[str, list[str]]:
    async def call() -> dict[str, list[str]]:
        async with (
            meshprop.aiohttp.ClientSession() as session,
            session.get(url) as response,
        ):
            return _received(await response.json())

    return asyncio.run(call())  # the task copies this context: the request and the span


CLIENTS: dict[str, Callable[[str], dict[str, list[str]]]] = {
    "requests": call_requests,
    "httpx": call_httpx,
    "aiohttp": call_aiohttp,
}
INSTRUMENTORS: dict[str, type[BaseInstrumentor]] = {
    "requests": RequestsInstrumentor,
    "httpx": HTTPXClientInstrumentor,
    "aiohttp": AioHttpClientInstrumentor,
}


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@contextlib.contextmanager
def serving(provider: TracerProvider, inbound: dict[str, str]) -> Iterator[trace.Span]:
    """A request as meshprop's adapter plus a stock server instrumentation serve it."""
    token = otel_context.attach(MeshPropagator().extract(inbound))
    try:
        with (
            meshprop.bind(inbound),
            provider.get_tracer("test").start_as_current_span(
                "server", kind=trace.SpanKind.SERVER
            ) as span,
        ):
            yield span
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def global_textmap(propagator: TextMapPropagator) -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(propagator)
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


def trace_ids(received: dict[str, list[str]]) -> set[str]:
    found = {value.rjust(32, "0") for value in received.get("x-b3-traceid", [])}
    found |= {value.split("-")[0].rjust(32, "0") for value in received.get("b3", [])}
    found |= {value.split("-")[1] for value in received.get("traceparent", [])}
    return found


def parent_ids(received: dict[str, list[str]]) -> set[str]:
    found = set(received.get("x-b3-spanid", []))
    found |= {value.split("-")[1] for value in received.get("b3", [])}
    found |= {value.split("-")[2] for value in received.get("traceparent", [])}
    return found


def hex_ids(span: trace.Span) -> tuple[str, str]:
    span_context = span.get_span_context()
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_an_active_span_sends_its_own_ids(
    client: str, echo_url: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    provider, _ = spans
    with serving(provider, INBOUND) as server_span:
        received = CLIENTS[client](echo_url)
    trace_id, span_id = hex_ids(server_span)
    assert trace_id == TRACE
    assert received["x-b3-traceid"] == [TRACE]
    assert received["x-b3-spanid"] == [span_id]
    assert received["x-b3-parentspanid"] == [SPAN]
    assert received["x-b3-sampled"] == ["1"]
    assert received["traceparent"] == [f"00-{TRACE}-{span_id}-01"]
    assert "b3" not in received  # the caller's span, not this one: replaced, not forwarded
    assert received["x-request-id"] == ["req-1"]


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_without_a_span_what_came_in_leaves_verbatim(client: str, echo_url: str) -> None:
    with meshprop.bind(INBOUND):
        received = CLIENTS[client](echo_url)
    assert {name: received[name] for name in INBOUND} == {
        name: [value] for name, value in INBOUND.items()
    }
    assert "x-b3-parentspanid" not in received


@pytest.mark.parametrize("propagator", ["meshprop", "tracecontext"])
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_beside_the_stock_instrumentation_one_trace_id(
    client: str,
    propagator: str,
    echo_url: str,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    instrumentor = INSTRUMENTORS[client]()
    textmap = MeshPropagator() if propagator == "meshprop" else propagate.get_global_textmap()
    instrumentor.instrument(tracer_provider=provider)
    try:
        with global_textmap(textmap), serving(provider, INBOUND) as server_span:
            received = CLIENTS[client](echo_url)
    finally:
        instrumentor.uninstrument()
    client_spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    assert len(client_spans) == 1
    client_span_id = format(client_spans[0].context.span_id, "016x")

    assert trace_ids(received) == {TRACE}
    assert all(len(values) == 1 for values in received.values()), received
    assert received["x-request-id"] == ["req-1"]
    assert f"-{client_span_id}-" in received["traceparent"][0]
    if propagator == "meshprop":
        # Every trace header names the client span: the instrumentation rewrote all of them.
        assert parent_ids(received) == {client_span_id}
        assert received["x-b3-parentspanid"] == [hex_ids(server_span)[1]]
    else:
        # W3C-only OpenTelemetry rewrites traceparent. httpx and requests merge meshprop's
        # headers before the instrumentation starts its client span, so B3 still names the
        # server span, one level up in the same trace (the README asks for
        # OTEL_PROPAGATORS=meshprop). aiohttp's client middleware runs inside the client span,
        # so there B3 names the client span too.
        if client == "aiohttp":
            assert parent_ids(received) == {client_span_id}
        else:
            assert parent_ids(received) == {client_span_id, hex_ids(server_span)[1]}


def test_headers_for_host_follows_the_span_the_scope_and_the_request(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("no request"):
        assert headers_for_host("payments", plan_for()) is None  # a span is not a request
    with serving(provider, INBOUND) as span:
        assert headers_for_host("example.com", plan_for()) is None  # out of scope
        forwarded = headers_for_host("payments", plan_for())
        assert forwarded is not None
        assert forwarded["x-b3-spanid"] == hex_ids(span)[1]
        everywhere = headers_for_host("example.com", plan_for(Config(scope="all")))
        assert everywhere is not None and everywhere["x-request-id"] == "req-1"


def test_a_request_served_by_opentelemetry_alone_reaches_the_clients(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """``OTEL_PROPAGATORS=meshprop`` and a stock server instrumentation, no meshprop adapter."""
    provider, _ = spans
    token = otel_context.attach(MeshPropagator().extract(INBOUND))
    try:
        with provider.get_tracer("test").start_as_current_span("server") as span:
            forwarded = headers_for_host("payments", plan_for())
    finally:
        otel_context.detach(token)
    assert forwarded is not None
    assert forwarded["x-request-id"] == "req-1"
    assert forwarded["x-b3-spanid"] == hex_ids(span)[1]


def test_two_requests_in_one_span_never_share_headers(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, _ = spans
    with provider.get_tracer("test").start_as_current_span("worker") as span:
        for request_id in ("first", "second", "first"):
            with meshprop.bind({"x-request-id": request_id}):
                forwarded = headers_for_host("payments", plan_for())
                assert forwarded is not None
                assert forwarded["x-request-id"] == request_id
                assert forwarded["x-b3-spanid"] == hex_ids(span)[1]
