"""Part 4: pipelining: several requests written at once on one keep-alive connection.

Each request carries its own id (one in four carries none, so the server generates one) and
its own traceparent; ``/pipe`` reads the id, sleeps a little, reads it again. Responses come
back in order, so the n-th response must echo the n-th request's id and the app must have seen
that request's id and traceparent, before and after the sleep.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence

from . import oracle
from .report import Figures, memory_check
from .servers import Running, Server, running
from .wire import Incomplete, read_response_async, request

KINDS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn")
CONNECTIONS_AT_ONCE = 32
TIMEOUT = 60.0


async def _connection(
    server: Server, number: int, depth: int, seen: set[str], figures: Figures
) -> None:
    wanted: list[tuple[str | None, str]] = []
    data = b""
    for index in range(depth):
        own = None if index % 4 == 3 else f"pipe-{number}-{index}-{uuid.uuid4().hex[:6]}"
        traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        lines = [b"traceparent: " + traceparent.encode()]
        if own is not None:
            lines.append(b"x-request-id: " + own.encode())
        data += request(f"/pipe?sleep={index % 3}", lines, close=False)
        wanted.append((own, traceparent))
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*server.address), TIMEOUT)
    try:
        writer.write(data)  # all of them at once
        await writer.drain()
        figures.count(requests=depth, inputs=depth)
        for index, (own, traceparent) in enumerate(wanted):
            response = await asyncio.wait_for(read_response_async(reader), TIMEOUT)
            example = f"{server.label} connection {number} request {index} ({own or 'no id'})"
            _judge(
                response.status,
                response.echoes(),
                response.json(),
                own,
                traceparent,
                seen,
                figures,
                example,
            )
    finally:
        writer.close()


def _judge(
    status: int,
    echoes: list[str],
    answer: dict[str, str | None],
    own: str | None,
    traceparent: str,
    seen: set[str],
    figures: Figures,
    example: str,
) -> None:
    if status != 200:
        figures.error(f"answered {status}", example)
        return
    echo = echoes[0] if len(echoes) == 1 else None
    if own is None:
        fresh = echo is not None and echo not in seen and oracle.UUID4.fullmatch(echo) is not None
        own = echo if fresh else "(a fresh UUID4)"
    if echo is not None:
        seen.add(echo)
    observed = {"echo": echo, "before": answer["before"], "after": answer["after"]}
    wrong = {key: value for key, value in observed.items() if value != own}
    if answer["traceparent"] != traceparent:
        wrong["traceparent"] = answer["traceparent"]
    figures.cross_talk_in("pipelined request saw another's", example, wrong)


async def _all(
    server: Server, connections: int, depth: int, figures: Figures, deadline: float
) -> None:
    seen: set[str] = set()
    gate = asyncio.Semaphore(CONNECTIONS_AT_ONCE)

    async def one(number: int) -> None:
        async with gate:
            if time.monotonic() > deadline:
                return
            try:
                await _connection(server, number, depth, seen, figures)
            except (OSError, Incomplete, asyncio.TimeoutError, ValueError) as error:
                figures.error(
                    f"{server.kind}: pipelined exchange failed",
                    f"{server.label} connection {number}: {error!r}",
                )

    await asyncio.gather(*(one(n) for n in range(connections)))


def run_on(
    servers: Running,
    server: Server,
    connections: int,
    depth: int,
    figures: Figures,
    deadline: float,
) -> None:
    asyncio.run(_all(server, 4, depth, Figures("warm-up"), deadline))
    before = servers.stats(server)
    asyncio.run(_all(server, connections, depth, figures, deadline))
    memory_check(figures, server.label, before, servers.stats(server), connections * depth)
    figures.max_concurrency = max(figures.max_concurrency, depth)
    if not servers.alive(server):
        figures.violations.add(f"server went down: {server.kind}", server.label)


def run(
    kinds: Sequence[str] = KINDS, connections: int = 200, depth: int = 8, seconds: float = 60.0
) -> Figures:
    figures = Figures("pipelining")
    started = time.monotonic()
    with running([(kind, "default") for kind in kinds]) as servers:
        deadline = time.monotonic() + seconds
        for server in servers.servers:
            with figures.harness_failure_on(server.kind, server.label):
                run_on(servers, server, connections, depth, figures, deadline)
    figures.seconds = time.monotonic() - started
    return figures
