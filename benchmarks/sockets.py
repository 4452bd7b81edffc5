"""Over real sockets: uvicorn serving the same Starlette app bare and with meshprop, each loaded
in turn by a separate load-generator process over loopback, several rounds interleaved.

The in-process suites isolate the middleware; this one shows what is left of it next to a real
server's parsing and I/O, as a throughput ratio. Both servers run for the whole suite (the idle
one costs nothing) and are stopped at its end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._harness import Plan, classify_failure

_ROOT = Path(__file__).resolve().parent.parent
_TARGETS = {"bare": "bare", "meshprop": "meshprop_app"}
_START_TIMEOUT = 20.0
_CONNECTIONS = 8


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def _uvicorn(target: str) -> Iterator[int]:
    """uvicorn serving ``benchmarks._socket_apps:<target>`` on a free loopback port."""
    port = _free_port()
    with tempfile.TemporaryFile() as errors:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"benchmarks._socket_apps:{target}",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            _wait_until_listening(server, port, errors)
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)


def _wait_until_listening(server: subprocess.Popen[bytes], port: int, errors: Any) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"uvicorn exited: {message[-1] if message else server.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"uvicorn did not listen on 127.0.0.1:{port} within {_START_TIMEOUT} s")


def _load(port: int, seconds: float, max_requests: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "benchmarks._loadgen",
        "--port",
        str(port),
        "--seconds",
        str(seconds),
        "--max-requests",
        str(max_requests),
        "--connections",
        str(_CONNECTIONS),
    ]
    finished = subprocess.run(
        command, cwd=_ROOT, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if finished.returncode != 0:
        raise RuntimeError(f"load generator failed: {finished.stderr.strip()[-300:]}")
    result: dict[str, float] = json.loads(finished.stdout)
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"load generator saw errors: {result}")
    return result


def run(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Requests per second for each server, per round, and the meshprop/bare ratio."""
    outcome: dict[str, Any] = {
        "server": "uvicorn, 1 worker, default loop and HTTP implementation",
        "load": f"Python load generator in its own process, {_CONNECTIONS} keep-alive "
        "connections, no pipelining",
        "seconds_per_round": plan.socket_seconds,
        "rounds": plan.socket_rounds,
    }
    try:
        # Fail here, not inside the server process.
        import meshprop.asgi  # noqa: F401
    except Exception as error:
        outcome["status"], outcome["reason"] = classify_failure(error, "meshprop.asgi")
        log(f"    sockets: {outcome['status'].upper()}: {outcome['reason']}")
        return outcome

    max_requests = 2_000 if plan.quick else 1_000_000
    per_round: dict[str, list[float]] = {name: [] for name in _TARGETS}
    try:
        with contextlib.ExitStack() as servers:
            ports = {name: servers.enter_context(_uvicorn(t)) for name, t in _TARGETS.items()}
            for port in ports.values():
                _load(port, min(0.5, plan.socket_seconds), max_requests)  # warm-up
            names = list(ports)
            for round_index in range(plan.socket_rounds):
                order = names[round_index % 2 :] + names[: round_index % 2]
                for name in order:
                    result = _load(ports[name], plan.socket_seconds, max_requests)
                    per_round[name].append(result["requests"] / result["seconds"])
    except Exception as error:
        outcome["status"], outcome["reason"] = classify_failure(error, None)
        log(f"    sockets: ERROR: {outcome['reason']}")
        return outcome

    bare = statistics.median(per_round["bare"])
    with_meshprop = statistics.median(per_round["meshprop"])
    outcome.update(
        status="ok",
        requests_per_second={name: statistics.median(values) for name, values in per_round.items()},
        per_round=per_round,
        throughput_ratio=with_meshprop / bare,
        overhead_us_per_request=(1 / with_meshprop - 1 / bare) * 1e6,
    )
    return outcome
