"""Part 3: a 64-thread WSGI server, streamed bodies abandoned mid-way, then the next requests.

Client threads mix two requests, each with its own id: a long streamed body whose first chunk
reports the id the generator sees, after which the client resets the connection; and a
``/whoami`` that reports the serving thread and the id it sees. Every serving thread's history
is kept: a request that sees an id other than its own is cross-talk, and one that sees an
earlier request's id on the same thread is a stale context. At the end every server thread is
asked at once (``/probe``, a barrier of all threads) for a fresh id. The server's ledger counts
wrong ids inside bodies and at their close, and contexts seen outside the adapter.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from . import oracle
from .report import Figures, memory_check
from .servers import Running, Server, running
from .wire import Connection, Incomplete, exchange, request

THREADS = 64
CHUNKS, CHUNK_SIZE = 128, 32 * 1024
TIMEOUT = 60.0


class _History:
    """Which ids each serving thread has served, and every id seen, shared by client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_thread: dict[int, set[str]] = {}
        self.every: set[str] = set()

    def judge(
        self, thread: int, own: str | None, seen: Any, figures: Figures, example: str
    ) -> None:
        with self.lock:
            earlier = self.by_thread.setdefault(thread, set())
            stale = isinstance(seen, str) and seen in earlier
            fresh = own is None and isinstance(seen, str) and seen not in self.every
            if isinstance(seen, str):
                earlier.add(seen)
                self.every.add(seen)
        if own is not None and seen == own:
            return
        if own is None and fresh and oracle.UUID4.fullmatch(str(seen)):
            return
        what = "an earlier id on the same thread" if stale else "another request's id"
        figures.cross_talk_found(f"request saw {what}", f"{example}: saw {seen!r}")


def _stream(server: Server, own: str, history: _History, figures: Figures) -> None:
    path = f"/stream?chunks={CHUNKS}&size={CHUNK_SIZE}&id={own}"
    connection = Connection(server.address, TIMEOUT)
    try:
        connection.send(request(path, [b"x-request-id: " + own.encode()]))
        head = connection.response(body=False)
        first = connection.stream.readline(CHUNK_SIZE)
    finally:
        connection.abort()
    if head.status != 200 or head.echoes() != [own]:
        figures.error(
            "stream answered wrongly", f"{server.label} {own}: {head.status} {head.echoes()}"
        )
        return
    answer = json.loads(first)
    history.judge(answer["thread"], own, answer["rid"], figures, f"{server.label} stream {own}")


def _whoami(
    server: Server, own: str | None, history: _History, figures: Figures, path: str = "/whoami"
) -> int:
    lines = [] if own is None else [b"x-request-id: " + own.encode()]
    response = exchange(server.address, request(path, lines), TIMEOUT)
    if response.status != 200:
        figures.error(f"{path} answered {response.status}", f"{server.label} {own}")
        return -1
    answer = response.json()
    example = f"{server.label} {path} {own or '(no id)'}"
    history.judge(answer["thread"], own, answer["rid"], figures, example)
    if answer["seen"] != answer["rid"] or response.echoes() != [answer["rid"]]:
        figures.violations.add("current() or the echo is not request_id()", f"{example}: {answer}")
    return int(answer["thread"])


def _client(
    server: Server, number: int, count: int, deadline: float, history: _History, figures: Figures
) -> None:
    for index in range(count):
        if time.monotonic() > deadline:
            return
        own = f"abandon-{number}-{index}-{uuid.uuid4().hex[:6]}"
        figures.count(requests=1, inputs=1)
        try:
            if index % 2 == 0:
                _stream(server, own, history, figures)
            else:
                _whoami(server, None if index % 4 == 3 else own, history, figures)
        except (OSError, Incomplete, ValueError) as error:
            figures.error(f"{server.kind}: no answer", f"{server.label} {own}: {error!r}")


def _probe(server: Server, history: _History, figures: Figures) -> None:
    threads: list[int] = []

    def ask() -> None:
        try:
            threads.append(_whoami(server, None, history, figures, "/probe"))
        except (OSError, Incomplete, ValueError) as error:
            figures.error(f"{server.kind}: probe failed", repr(error))

    askers = [threading.Thread(target=ask) for _ in range(THREADS)]
    for asker in askers:
        asker.start()
    for asker in askers:
        asker.join(TIMEOUT)
    figures.count(requests=THREADS)
    if len(set(threads)) != THREADS:
        figures.error("probe did not reach every server thread", f"{len(set(threads))} threads")


def run_on(
    servers: Running, server: Server, requests: int, clients: int, figures: Figures, deadline: float
) -> None:
    history = _History()
    _whoami(server, "warm-up", history, figures)
    before = servers.stats(server)
    per_client = max(1, requests // clients)
    workers = [
        threading.Thread(target=_client, args=(server, n, per_client, deadline, history, figures))
        for n in range(clients)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(1.0, deadline - time.monotonic()) + TIMEOUT)
    _probe(server, history, figures)
    after = _settled_stats(servers, server)
    memory_check(figures, server.label, before, after, requests)
    ledger: dict[str, int] = after["ledger"]
    for kind, count in ledger.items():
        if kind.startswith("streams "):
            figures.notes.append(f"{server.label}: {kind}: {count}")
        else:
            figures.violations.add(f"{kind} ({server.kind})", f"{count} times", count)
    figures.max_concurrency = max(figures.max_concurrency, clients)
    if not servers.alive(server):
        figures.violations.add(f"server went down: {server.kind}", server.label)


def _settled_stats(servers: Running, server: Server) -> dict[str, Any]:
    """The stats once the server has closed the bodies it was still writing (bounded wait)."""
    stats: dict[str, Any] = dict(servers.stats(server))
    deadline = time.monotonic() + 10
    previous = -1
    while time.monotonic() < deadline:
        closed = int(stats["ledger"].get("streams closed", 0))
        if closed == previous:
            break
        previous = closed
        time.sleep(0.5)
        stats = dict(servers.stats(server))
    return stats


def run(
    kinds: Sequence[str] = ("gunicorn", "waitress"),
    requests: int = 3000,
    clients: int = THREADS,
    seconds: float = 60.0,
) -> Figures:
    figures = Figures("abandoned")
    started = time.monotonic()
    with running([(kind, "default") for kind in kinds], threads=THREADS) as servers:
        for server in servers.servers:
            deadline = time.monotonic() + seconds / len(kinds)
            with figures.harness_failure_on(server.kind, server.label):
                run_on(servers, server, requests, clients, figures, deadline)
    figures.seconds = time.monotonic() - started
    return figures
