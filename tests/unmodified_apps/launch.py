"""Starting the unmodified apps under ``meshprop-run``, for the tests and the integrations."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
LAUNCHER = shutil.which("meshprop-run", path=str(BIN)) or "meshprop-run"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


SERVERS: dict[str, Callable[[int], list[str]]] = {
    "FastAPI under uvicorn": lambda port: [
        str(BIN / "uvicorn"), "tests.unmodified_apps.fastapi_app:app", "--port", str(port),
    ],
    "Flask under gunicorn (gthread)": lambda port: [
        str(BIN / "gunicorn"), "--worker-class", "gthread", "--threads", "4",
        "--bind", f"127.0.0.1:{port}", "tests.unmodified_apps.flask_app:app",
    ],
    "Flask under gunicorn (sync)": lambda port: [
        str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "tests.unmodified_apps.flask_app:app",
    ],
    "FastAPI under gunicorn (uvicorn worker)": lambda port: [
        str(BIN / "gunicorn"), "--worker-class", "uvicorn.workers.UvicornWorker",
        "--bind", f"127.0.0.1:{port}", "tests.unmodified_apps.fastapi_app:app",
    ],
    "FastAPI under hypercorn": lambda port: [
        str(BIN / "hypercorn"), "--bind", f"127.0.0.1:{port}",
        "tests.unmodified_apps.fastapi_app:app",
    ],
    "Flask under flask run": lambda port: [
        str(BIN / "flask"), "--app", "tests.unmodified_apps.flask_app", "run", "--port", str(port),
    ],
    "aiohttp under python -m": lambda port: [
        sys.executable, "-m", "tests.unmodified_apps.aiohttp_app", str(port),
    ],
    "aiohttp under python app.py": lambda port: [
        sys.executable, str(ROOT / "tests/unmodified_apps/aiohttp_app.py"), str(port),
    ],
}  # fmt: skip


def launch(
    command: list[str], downstream_url: str, *, before: Sequence[str] = (), **env: str
) -> subprocess.Popen[str]:
    """``meshprop-run COMMAND`` (after ``before``, another launcher), configured by ``env``."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MESHPROP_")},
        "DOWNSTREAM": downstream_url,
        "PYTHONPATH": str(ROOT),
        "NO_PROXY": "*",
        **env,
    }
    return subprocess.Popen(
        [*before, LAUNCHER, *command],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def get(port: int, process: subprocess.Popen[str], **headers: str) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", headers=headers, timeout=10)
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"the server did not answer:\n{output}") from None
            time.sleep(0.1)
