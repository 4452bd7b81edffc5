"""meshprop beside stock OpenTelemetry, over real sockets, one process per service.

A (FastAPI, stock FastAPI + httpx instrumentations, ``OTEL_PROPAGATORS=meshprop``, meshprop
ASGI + httpx) -> B (Flask, stock Flask instrumentation with the stock ``b3multi`` propagator,
meshprop WSGI + requests) -> C (aiohttp, meshprop, no OpenTelemetry); and the reverse: a plain
OpenTelemetry service (W3C only, no meshprop) calling a meshprop service.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from ._mesh import HOST, listening_socket, running_processes, wait_until_healthy

CHAIN_PATH = "/chain"
HEALTH_PATH = "/health"
TRACE = "463ac35c9f6413ad48485a3953bb6124"
SIDECAR_SPAN = "a2fb4a1d1a96d312"
SPAN_WAIT = 15.0


@contextlib.contextmanager
def running(hops: Sequence[tuple[str, str | None]]) -> Iterator[tuple[str, list[Path | None]]]:
    """Start ``(kind, OTEL_PROPAGATORS)`` hops, each calling the next; yield the entry URL and
    each hop's span file (None for a hop without OpenTelemetry). Every process is stopped."""
    listeners = [listening_socket() for _ in hops]
    urls = [f"http://{HOST}:{listener.getsockname()[1]}" for listener in listeners]
    with tempfile.TemporaryDirectory(prefix="meshprop-otel-") as spans_dir:
        span_files: list[Path | None] = []
        try:
            with running_processes() as processes:
                for index, ((kind, propagators), listener) in enumerate(
                    zip(hops, listeners, strict=True)
                ):
                    argv = [
                        sys.executable, "-m", "integrations.otel_services", kind,
                        "--fd", str(listener.fileno()), "--parent-pid", str(os.getpid()),
                    ]  # fmt: skip
                    span_file = None
                    if kind != "aiohttp":
                        span_file = Path(spans_dir) / f"{index}-{kind}.jsonl"
                        argv += ["--spans", str(span_file)]
                    span_files.append(span_file)
                    if propagators:
                        argv += ["--propagators", propagators]
                    if index + 1 < len(hops):
                        argv += ["--next", urls[index + 1]]
                    processes.start(f"{index}-{kind}", argv, pass_fds=[listener.fileno()])
                for listener in listeners:
                    listener.close()
                wait_until_healthy([url + HEALTH_PATH for url in urls], processes, 30.0)
                yield urls[0] + CHAIN_PATH, span_files
        finally:
            for listener in listeners:
                listener.close()


def spans_of(path: Path | None, trace_id: str, kinds: Sequence[str]) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` in a hop's file, once every kind in ``kinds`` has one there.

    A server span ends after its response is sent, so it may reach the file a moment after the
    caller has its answer: wait for it, within a bound.
    """
    assert path is not None
    deadline = time.monotonic() + SPAN_WAIT
    while True:
        found: list[dict[str, Any]] = []
        if path.exists():
            for line in path.read_text().splitlines():
                span = json.loads(line)
                if span["trace_id"] == trace_id:
                    found.append(span)
        if all(any(span["kind"] == kind for span in found) for kind in kinds):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kinds} span of trace {trace_id} in {path}: {found}")
        time.sleep(0.05)


def only(spans: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    matching = [span for span in spans if span["kind"] == kind]
    assert len(matching) == 1, matching
    return matching[0]


def test_meshprop_and_stock_opentelemetry_make_one_trace() -> None:
    hops = [("fastapi", "meshprop"), ("flask", "b3multi"), ("aiohttp", None)]
    with running(hops) as (entry_url, (a_spans, b_spans, _)):
        inbound = {
            "x-request-id": "interop-1",
            "x-b3-traceid": TRACE,
            "x-b3-spanid": SIDECAR_SPAN,
            "x-b3-sampled": "1",
        }
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            answer = client.get(entry_url, headers=inbound).json()
        a_trace = spans_of(a_spans, TRACE, ["SERVER", "CLIENT"])
        b_trace = spans_of(b_spans, TRACE, ["SERVER"])

    b_answer = answer["downstream"]
    c_answer = b_answer["downstream"]
    a_server, a_client = only(a_trace, "SERVER"), only(a_trace, "CLIENT")
    b_server = only(b_trace, "SERVER")

    # One trace at every hop, each span the child of the one before it.
    assert a_server["parent_id"] == SIDECAR_SPAN
    assert a_client["parent_id"] == a_server["span_id"]
    assert b_server["parent_id"] == a_client["span_id"]
    b_received, c_received = b_answer["received"], c_answer["received"]
    assert b_received["x-b3-traceid"] == TRACE
    assert b_received["x-b3-spanid"] == a_client["span_id"]
    assert b_received["traceparent"] == f"00-{TRACE}-{a_client['span_id']}-01"
    assert c_received["x-b3-traceid"] == TRACE
    assert c_received["x-b3-spanid"] == b_server["span_id"]
    assert c_received["x-b3-parentspanid"] == a_client["span_id"]
    assert c_received["traceparent"] == f"00-{TRACE}-{b_server['span_id']}-01"

    # The request id reaches every hop and is on every span of the request.
    assert [answer["request_id"], b_answer["request_id"], c_answer["request_id"]] == [
        "interop-1"
    ] * 3
    assert c_received["x-request-id"] == "interop-1"
    for span in a_trace + b_trace:
        assert span["attributes"].get("guid:x-request-id") == "interop-1", span


def test_a_plain_opentelemetry_service_calling_a_meshprop_service() -> None:
    hops = [("plain-fastapi", None), ("flask", "meshprop"), ("aiohttp", None)]
    with running(hops) as (entry_url, (p_spans, m_spans, _)):
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            answer = client.get(entry_url).json()
        m_answer = answer["downstream"]
        traceparent = m_answer["received"]["traceparent"]
        trace_id = traceparent.split("-")[1]
        p_trace = spans_of(p_spans, trace_id, ["SERVER", "CLIENT"])
        m_trace = spans_of(m_spans, trace_id, ["SERVER"])

    c_answer = m_answer["downstream"]
    p_client, m_server = only(p_trace, "CLIENT"), only(m_trace, "SERVER")
    assert traceparent.startswith(f"00-{trace_id}-{p_client['span_id']}-")
    assert "x-request-id" not in m_answer["received"]  # plain OpenTelemetry sends none
    assert m_server["parent_id"] == p_client["span_id"]

    # meshprop's service made up the request id, forwarded it, and put it on its spans.
    request_id = m_answer["request_id"]
    assert request_id and c_answer["request_id"] == request_id
    c_received = c_answer["received"]
    assert c_received["x-request-id"] == request_id
    assert c_received["traceparent"].startswith(f"00-{trace_id}-{m_server['span_id']}-")
    assert c_received["x-b3-traceid"] == trace_id
    assert c_received["x-b3-parentspanid"] == p_client["span_id"]
    for span in m_trace:
        assert span["attributes"].get("guid:x-request-id") == request_id, span
    for span in p_trace:
        assert "guid:x-request-id" not in span["attributes"]
