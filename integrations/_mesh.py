"""Start a chain of real services on 127.0.0.1, each in its own process, and stop them all.

``running_chain(["fastapi", "flask", "aiohttp"])`` starts FastAPI on uvicorn, Flask on
waitress and aiohttp on its own server, each calling the next over a real socket, and yields
once every hop answers. Whatever happens inside the ``with`` block (a failed assertion,
KeyboardInterrupt), every process it started is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from .services._record import CHAIN_PATH, HEALTH_PATH, HopRecord

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0

#: The chain of issue 3, with Bookinfo-style names a reader recognises.
ISTIO_CHAIN = ("fastapi", "flask", "aiohttp")
_DEFAULT_NAMES = {"fastapi": "productpage", "flask": "reviews", "aiohttp": "ratings"}
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass(frozen=True)
class Hop:
    name: str
    framework: str
    url: str


@dataclass(frozen=True)
class Chain:
    hops: tuple[Hop, ...]

    @property
    def entry_url(self) -> str:
        """Where a request enters the chain."""
        return self.hops[0].url + CHAIN_PATH


def listening_socket() -> socket.socket:
    """A socket listening on a free loopback port the OS picked, ready to hand to a child."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(128)
    listener.set_inheritable(True)
    return listener


def child_environment() -> dict[str, str]:
    """The environment for a service: the project importable, and no proxy for loopback."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _PROXY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


class _Processes:
    """The processes of one chain, with their logs, stopped together."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, label: str, argv: Sequence[str], pass_fds: Sequence[int] = ()) -> None:
        log_path = self.log_dir / f"{label}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv,
                cwd=PROJECT_ROOT,
                env=child_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(pass_fds),
            )
        self.started.append((label, process, log_path))

    def check_alive(self) -> None:
        for label, process, log_path in self.started:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{label} exited with status {process.returncode}:\n{_tail(log_path)}"
                )

    def logs(self) -> str:
        return "\n".join(f"--- {label}\n{_tail(path)}" for label, _, path in self.started)

    def stop_all(self) -> None:
        for _, process, _ in self.started:
            if process.poll() is None:
                process.terminate()
        for _, process, _ in self.started:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def wait_until_healthy(urls: Sequence[str], processes: _Processes, timeout: float) -> None:
    """Poll each URL until it answers 200, failing early if a process dies; bounded."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        for url in urls:
            while True:
                processes.check_alive()
                try:
                    if client.get(url).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{url} did not answer within {timeout} s\n{processes.logs()}"
                    )
                time.sleep(0.05)


@contextlib.contextmanager
def running_processes() -> Iterator[_Processes]:
    """A place to start processes that are all stopped on exit, whatever the exit."""
    with tempfile.TemporaryDirectory(prefix="meshprop-chain-") as log_dir:
        processes = _Processes(Path(log_dir))
        try:
            yield processes
        finally:
            processes.stop_all()


def start_hop(
    processes: _Processes, hop: Hop, listener: socket.socket, next_url: str | None = None
) -> None:
    """Start ``python -m integrations.services`` for ``hop``, serving on ``listener`` (handed
    over by file descriptor) and calling ``next_url``; it exits if this process goes away."""
    argv = [
        sys.executable, "-m", "integrations.services", hop.framework,
        "--name", hop.name,
        "--fd", str(listener.fileno()),
        "--parent-pid", str(os.getpid()),
    ]  # fmt: skip
    if next_url is not None:
        argv += ["--next", next_url]
    processes.start(hop.name, argv, pass_fds=[listener.fileno()])


@contextlib.contextmanager
def running_chain(
    frameworks: Sequence[str] = ISTIO_CHAIN,
    *,
    names: Sequence[str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[Chain]:
    """Start one service per framework, each calling the next, and yield the chain."""
    if names is None:
        names = _default_names(frameworks)
    listeners = [listening_socket() for _ in frameworks]
    try:
        urls = [f"http://{HOST}:{listener.getsockname()[1]}" for listener in listeners]
        hops = tuple(
            Hop(name, framework, url)
            for name, framework, url in zip(names, frameworks, urls, strict=True)
        )
        with running_processes() as processes:
            next_urls = [hop.url for hop in hops[1:]] + [None]
            for hop, listener, next_url in zip(hops, listeners, next_urls, strict=True):
                start_hop(processes, hop, listener, next_url)
            # The children hold the sockets now; closing ours keeps only theirs open.
            for listener in listeners:
                listener.close()
            wait_until_healthy([hop.url + HEALTH_PATH for hop in hops], processes, startup_timeout)
            yield Chain(hops)
    finally:
        for listener in listeners:
            listener.close()


def _default_names(frameworks: Sequence[str]) -> list[str]:
    if len(set(frameworks)) == len(frameworks):
        return [_DEFAULT_NAMES.get(framework, framework) for framework in frameworks]
    return [f"{framework}-{index + 1}" for index, framework in enumerate(frameworks)]


def call_chain(
    client: httpx.Client,
    url: str,
    headers: Mapping[str, str],
    params: Mapping[str, str] | None = None,
) -> tuple[httpx.Response, list[HopRecord]]:
    """One request into a chain: the response, and the hop records it carries."""
    response = client.get(url, headers=dict(headers), params=params)
    response.raise_for_status()
    return response, response.json()
