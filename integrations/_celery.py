"""A real Redis broker and real Celery worker processes on 127.0.0.1.

``running_redis()`` starts Debian's ``redis-server`` on a free loopback port, nothing written to
disk, and yields its URL; ``running_workers(...)`` starts one worker process per queue and yields
once each has run a task. Whatever happens inside the ``with`` block, every process either one
started is stopped on the way out.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import redis
from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout

from ._debian import debian_binary, running_on_free_port
from ._mesh import HOST, STARTUP_TIMEOUT, _Processes, running_processes


@contextlib.contextmanager
def running_redis() -> Iterator[str]:
    """Run redis-server on 127.0.0.1, no snapshots and no append-only file; yield its URL."""
    binary = debian_binary("redis-server", package="redis-server")

    def start(processes: _Processes, port: int) -> str:
        processes.start(
            "redis",
            [
                binary, "--port", str(port), "--bind", HOST,
                "--save", "", "--appendonly", "no",
                "--dir", str(processes.log_dir), "--daemonize", "no",
            ],
        )  # fmt: skip
        _wait_for_redis(port, processes.check_alive)
        return f"redis://{HOST}:{port}/0"

    with running_on_free_port(start) as url:
        yield url


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
