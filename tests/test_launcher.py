"""``meshprop-run``: unmodified apps under their usual servers, configured by ``MESHPROP_*``.

Each app (``tests/unmodified_apps``) never imports meshprop; it calls a local recording server
through a plain client. Under ``meshprop-run`` the inbound headers reach it, the response
echoes the id, and a ``MESHPROP_*`` setting takes effect.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.recording_server import RecordingServer, recording_server

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LAUNCHER = shutil.which("meshprop-run", path=str(BIN)) or "meshprop-run"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SERVERS = {
    "FastAPI under uvicorn": lambda port: [
        str(BIN / "uvicorn"), "tests.unmodified_apps.fastapi_app:app", "--port", str(port),
    ],
    "Flask under gunicorn (gthread)": lambda port: [
        str(BIN / "gunicorn"), "--worker-class", "gthread", "--threads", "4",
        "--bind", f"127.0.0.1:{port}", "tests.unmodified_apps.flask_app:app",
    ],
    "aiohttp under python app.py": lambda port: [
        sys.executable, str(ROOT / "tests/unmodified_apps/aiohttp_app.py"), str(port),
    ],
}  # fmt: skip


@pytest.fixture
def downstream() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


def _launch(command: list[str], downstream: RecordingServer, **env: str) -> subprocess.Popen[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESHPROP_")},
        "DOWNSTREAM": downstream.url,
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "*",
        **env,
    }
    return subprocess.Popen(
        [LAUNCHER, *command],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _get(port: int, process: subprocess.Popen[str], **headers: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=10)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"the server did not answer:\n{output}") from None
            time.sleep(0.1)


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_an_unmodified_app_forwards_under_meshprop_run(
    server: str, downstream: RecordingServer
) -> None:
    port = _free_port()
    process = _launch(SERVERS[server](port), downstream, MESHPROP_EXTRA_HEADERS="x-canary")
    try:
        response = _get(
            port,
            process,
            **{"x-request-id": "run-1", "traceparent": TRACEPARENT, "x-canary": "blue"},
        )
        fresh = _get(port, process)
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
    process = _launch([sys.executable, "-c", "print('started')"], downstream, MESHPROP_SCOPEE="all")
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "MESHPROP_SCOPEE" in output and "MESHPROP_SCOPE," in output
    assert "started" not in output
