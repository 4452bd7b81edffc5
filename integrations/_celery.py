"""A real Redis broker and real Celery worker processes on 127.0.0.1.

``running_redis()`` starts Debian's ``redis-server`` on a free loopback port, nothing written to
disk, and yields its URL; ``running_workers(...)`` starts one worker process per queue and yields
once each has run a task. Whatever happens inside the ``with`` block, every process either one
started is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

from ._mesh import HOST, STARTUP_TIMEOUT, running_processes

_ATTEMPTS = 3
_SEARCH_PATH = "/usr/bin:/usr/sbin:/usr/local/bin"


def redis_server_path() -> str:
    """The ``redis-server`` binary, installed with apt-get first when it is missing (as the
    Makefile's ``redis`` target does)."""
    path = shutil.which("redis-server") or shutil.which("redis-server", path=_SEARCH_PATH)
    if path is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "redis-server"],
            check=False,
            timeout=600,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": _SEARCH_PATH + ":/bin:/sbin"},
        )
        path = shutil.which("redis-server", path=_SEARCH_PATH)
    if path is None:
        raise RuntimeError("redis-server is not installed: apt-get install -y redis-server")
    return path


def _free_port() -> int:
    # redis-server binds the port itself; one taken in between fails its start, and
    # running_redis tries another.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_redis() -> Iterator[str]:
    """Run redis-server on 127.0.0.1, no snapshots and no append-only file; yield its URL."""
    binary = redis_server_path()
    for attempt in range(_ATTEMPTS):
        with running_processes() as processes:
            port = _free_port()
            processes.start(
                "redis",
                [
                    binary, "--port", str(port), "--bind", HOST,
                    "--save", "", "--appendonly", "no",
                    "--dir", str(processes.log_dir), "--daemonize", "no",
                ],
            )  # fmt: skip
            try:
                _wait_for_redis(port, processes.check_alive)
            except RuntimeError:
                if attempt + 1 == _ATTEMPTS:
                    raise
                continue
            yield f"redis://{HOST}:{port}/0"
            return


def _wait_for_redis(port: int, check_alive: Callable[[], None]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    client = redis.Redis(host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        while True:
            check_alive()
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {port} did not answer")
            time.sleep(0.05)
    finally:
        client.close()


@dataclass(frozen=True)
class Worker:
    """One worker process: the queue it consumes, its pool and how many tasks it runs at once."""

    queue: str
    pool: str = "prefork"
    concurrency: int = 1


@contextlib.contextmanager
def running_workers(
    app_module: str, app: Celery, workers: Sequence[Worker], ping_task: str
) -> Iterator[None]:
    """Run ``celery -A app_module worker`` once per ``Worker`` on ``app``'s broker, and yield
    once each has run ``ping_task`` (sent through ``app``)."""
    broker_url = str(app.conf.broker_url)
    backend_url = str(app.conf.result_backend)
    with running_processes() as processes:
        for worker in workers:
            processes.start(
                f"worker-{worker.queue}",
                [
                    sys.executable, "-m", "celery", "-A", app_module,
                    "-b", broker_url, "--result-backend", backend_url,
                    "worker", "-P", worker.pool, "-c", str(worker.concurrency),
                    "-Q", worker.queue, "-n", f"{worker.queue}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                    "-l", "WARNING",
                ],
            )  # fmt: skip
        pings = [app.send_task(ping_task, queue=worker.queue) for worker in workers]
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for worker, ping in zip(workers, pings, strict=True):
            while True:
                processes.check_alive()
                try:
                    ping.get(timeout=0.5)
                    break
                except ResultTimeout:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the worker of {worker.queue!r} ran no task within {STARTUP_TIMEOUT} s\n"
                        f"{processes.logs()}"
                    )
        yield
