"""A chain of unmodified apps under ``meshprop-run``: FastAPI on uvicorn → Flask on gunicorn
(gthread) → aiohttp under ``python app.py`` → a recording server, none of them importing
meshprop. Every hop receives the ids the chain was entered with."""

from __future__ import annotations

import subprocess

from tests.recording_server import recording_server
from tests.unmodified_apps.launch import SERVERS, TRACEPARENT, free_port, get, launch

CHAIN = ("FastAPI under uvicorn", "Flask under gunicorn (gthread)", "aiohttp under python app.py")


def test_ids_travel_through_a_chain_of_unmodified_apps() -> None:
    processes: list[subprocess.Popen[str]] = []
    with recording_server() as last:
        try:
            downstream = last.url
            ports = []
            for server in reversed(CHAIN):
                port = free_port()
                processes.append(launch(SERVERS[server](port), downstream))
                ports.append(port)
                downstream = f"http://127.0.0.1:{port}"
            for port, process in zip(ports, processes, strict=True):
                get(port, process)  # each hop answers (and has called the next)
            count = len(last.received)
            response = get(
                ports[-1], processes[-1], **{"x-request-id": "chain-1", "traceparent": TRACEPARENT}
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(20)
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "chain-1"
        received = last.headers(count)
        assert received["x-request-id"] == "chain-1"
        assert received["traceparent"] == TRACEPARENT
