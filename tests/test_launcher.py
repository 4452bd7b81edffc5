"""``meshprop-run``: unmodified apps under their usual servers, configured by ``MESHPROP_*``.

Each app (``tests/unmodified_apps``) never imports meshprop; it calls a local recording server
through a plain client. Under ``meshprop-run`` the inbound headers reach it, the response
echoes the id, and a ``MESHPROP_*`` setting takes effect.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from tests.recording_server import RecordingServer, recording_server
from tests.unmodified_apps.launch import BIN, SERVERS, TRACEPARENT, free_port, get, launch


@pytest.fixture
def downstream() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_an_unmodified_app_forwards_under_meshprop_run(
    server: str, downstream: RecordingServer
) -> None:
    port = free_port()
    process = launch(SERVERS[server](port), downstream.url, MESHPROP_EXTRA_HEADERS="x-canary")
    try:
        response = get(
            port,
            process,
            **{"x-request-id": "run-1", "traceparent": TRACEPARENT, "x-canary": "blue"},
        )
        fresh = get(port, process)
    finally:
        process.terminate()
        process.wait(20)
    assert response.json() == {"downstream": 200}
    assert response.headers["x-request-id"] == "run-1"
    first = downstream.headers(0)
    assert (first["x-request-id"], first["traceparent"], first["x-canary"]) == (
        "run-1",
        TRACEPARENT,
        "blue",
    )
    generated = fresh.headers["x-request-id"]
    assert len(generated) == 36 and downstream.headers(1)["x-request-id"] == generated


def test_a_misspelled_setting_fails_at_start(downstream: RecordingServer) -> None:
    process = launch(
        [sys.executable, "-c", "print('started')"], downstream.url, MESHPROP_SCOPEE="all"
    )
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "MESHPROP_SCOPEE" in output and "MESHPROP_SCOPE," in output
    assert "started" not in output


OPENTELEMETRY = {
    "OTEL_PROPAGATORS": "meshprop",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


@pytest.mark.parametrize("scope", ["mesh", "*.svc.cluster.local"])
def test_under_opentelemetry_instrument_one_trace_and_the_scope_holds(
    downstream: RecordingServer, scope: str
) -> None:
    """``opentelemetry-instrument meshprop-run uvicorn ...`` with ``OTEL_PROPAGATORS=meshprop``:
    OpenTelemetry's FastAPI and httpx instrumentations and meshprop's together. Inside the
    scope the downstream call continues the inbound trace, with one traceparent; outside it
    (127.0.0.1 is not ``*.svc.cluster.local``) nothing is injected at all."""
    port = free_port()
    process = launch(
        SERVERS["FastAPI under uvicorn"](port),
        downstream.url,
        before=[str(BIN / "opentelemetry-instrument")],
        MESHPROP_SCOPE=scope,
        **OPENTELEMETRY,
    )
    try:
        response = get(port, process, **{"x-request-id": "otel-1", "traceparent": TRACEPARENT})
    finally:
        process.terminate()
        process.wait(20)
    assert response.headers["x-request-id"] == "otel-1"
    sent = [(name, value) for name, value in downstream.received[0].headers]
    propagation = [
        (name, value)
        for name, value in sent
        if name in ("x-request-id", "traceparent", "b3") or name.startswith("x-b3-")
    ]
    if scope == "mesh":
        traceparents = [value for name, value in propagation if name == "traceparent"]
        assert len(traceparents) == 1
        assert traceparents[0].split("-")[1] == TRACEPARENT.split("-")[1]  # the same trace
        assert ("x-request-id", "otel-1") in propagation
    else:
        assert propagation == []
