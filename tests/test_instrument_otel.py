"""``instrument()`` beside OpenTelemetry's own client instrumentations, with ``MeshPropagator``
as the global propagator: one trace, and nothing injected for a destination outside the scope.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace import TracerProvider

import meshprop
from meshprop.otel import MeshPropagator
from tests import fake_sdk
from tests.recording_server import RecordingServer, recording_server

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INBOUND = {"x-request-id": "req-1", "traceparent": TRACEPARENT}
PROPAGATION = ("x-request-id", "traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid")
# The clients whose OpenTelemetry instrumentation lets meshprop judge the destination.
CALLS = ["httpx new client", "httpx AsyncClient", "requests.get", "aiohttp"]


class Instrumentor(Protocol):
    def instrument(self, **kwargs: Any) -> None: ...

    def uninstrument(self, **kwargs: Any) -> None: ...


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.fixture
def opentelemetry() -> Iterator[trace.Tracer]:
    provider = TracerProvider()
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(MeshPropagator())
    instrumentors: list[Instrumentor] = [
        HTTPXClientInstrumentor(),
        RequestsInstrumentor(),
        AioHttpClientInstrumentor(),
    ]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        yield provider.get_tracer("test")
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        propagate.set_global_textmap(previous)


def call(name: str, url: str) -> None:
    if name in fake_sdk.CALLS:
        fake_sdk.CALLS[name](url)
    else:
        asyncio.run(fake_sdk.ASYNC_CALLS[name](url))


def sent(server: RecordingServer) -> list[tuple[str, str]]:
    return [(n, v) for n, v in server.received[-1].headers if n in PROPAGATION]


@pytest.mark.parametrize("name", CALLS)
def test_nothing_is_injected_for_a_destination_outside_the_scope(
    server: RecordingServer, opentelemetry: trace.Tracer, name: str
) -> None:
    meshprop.instrument(meshprop.Config(scope=["*.svc.cluster.local"]))
    try:
        with meshprop.bind(INBOUND), opentelemetry.start_as_current_span("handler"):
            call(name, server.url + "/a")
    finally:
        meshprop.uninstrument()
    assert sent(server) == []


@pytest.mark.parametrize("name", CALLS)
def test_inside_the_scope_one_trace_travels(
    server: RecordingServer, opentelemetry: trace.Tracer, name: str
) -> None:
    meshprop.instrument()
    try:
        with meshprop.bind(INBOUND), opentelemetry.start_as_current_span("handler") as span:
            call(name, server.url + "/a")
    finally:
        meshprop.uninstrument()
    headers = sent(server)
    names = [n for n, _ in headers]
    assert names.count("traceparent") == 1 and names.count("x-request-id") == 1
    sent_ids = dict(headers)
    assert sent_ids["x-request-id"] == "req-1"
    trace_id = format(span.get_span_context().trace_id, "032x")
    assert sent_ids["traceparent"].split("-")[1] == trace_id  # the client span's, in this trace
    assert sent_ids.get("x-b3-traceid", trace_id) == trace_id  # never a second trace beside it
