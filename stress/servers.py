"""Start stress servers as subprocesses on 127.0.0.1 and stop them all, whatever happens.

Built on the integration suite's process helpers (``integrations._mesh``): each child gets its
listening socket by descriptor, a log file, and is terminated (then killed) on the way out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx

from integrations._mesh import HOST, _Processes, running_processes, wait_until_healthy

from .serve import BACKLOG, INTERFACE

STARTUP_SECONDS = 60.0


@dataclass(frozen=True)
class Server:
    kind: str
    config: str
    address: tuple[str, int]
    label: str

    @property
    def interface(self) -> str:
        return INTERFACE[self.kind]

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"


class Running:
    """The servers of one part, and their processes (for liveness checks and logs)."""

    def __init__(self, servers: list[Server], processes: _Processes) -> None:
        self.servers = servers
        self.processes = processes

    def alive(self, server: Server) -> bool:
        for label, process, _ in self.processes.started:
            if label == server.label:
                return process.poll() is None
        return False

    def log(self, server: Server) -> str:
        for label, _, path in self.processes.started:
            if label == server.label:
                try:
                    return path.read_text(errors="replace")
                except OSError:
                    return ""
        return ""

    def stats(self, server: Server, round_name: str = "") -> dict[str, object]:
        with httpx.Client(timeout=60, trust_env=False) as client:
            answer: dict[str, object] = client.get(
                server.url + "/stats", params={"round": round_name}
            ).json()
            return answer


def _listener() -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(BACKLOG)
    listener.set_inheritable(True)
    return listener


@contextlib.contextmanager
def running(
    specs: Sequence[tuple[str, str]], *, threads: int = 8, startup: float = STARTUP_SECONDS
) -> Iterator[Running]:
    """Start one server per (kind, config) and yield them once each answers ``/health``."""
    listeners = [_listener() for _ in specs]
    try:
        with running_processes() as processes:
            servers: list[Server] = []
            for (kind, config), listener in zip(specs, listeners, strict=True):
                label = f"{kind}/{config}"
                argv = [
                    sys.executable,
                    "-m",
                    "stress.serve",
                    kind,
                    "--fd",
                    str(listener.fileno()),
                    "--config",
                    config,
                    "--threads",
                    str(threads),
                    "--parent-pid",
                    str(os.getpid()),
                ]
                processes.start(label.replace("/", "-"), argv, pass_fds=[listener.fileno()])
                host, port = listener.getsockname()[:2]
                servers.append(Server(kind, config, (host, port), label.replace("/", "-")))
            for listener in listeners:
                listener.close()
            wait_until_healthy([s.url + "/health" for s in servers], processes, startup)
            yield Running(servers, processes)
    finally:
        for listener in listeners:
            listener.close()
