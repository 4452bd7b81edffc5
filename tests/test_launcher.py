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
from tests.unmodified_apps.launch import SERVERS, TRACEPARENT, free_port, get, launch


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
