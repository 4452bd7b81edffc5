"""Part 2: thousands of requests in flight at once on one event loop, each with its own id.

Every request goes to ``/hold``, which reads the id, waits until the whole round is in flight
(so the peak is really held), sleeps, reads the id again and asks ``outbound_headers``; one in
``call_every`` also calls the server's own ``/echo`` through a meshprop client. Any id that is
not the request's own is cross-talk.
"""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .report import Figures, memory_check
from .servers import Running, Server, running
from .wire import Incomplete, read_response_async, request

CONNECTS_AT_ONCE = 128
ANSWER_SECONDS = 240.0


def raise_fd_limit() -> int:
    """Lift this process's open-file limit to its hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def _one(
    server: Server,
    round_name: str,
    index: int,
    target: int,
    call: bool,
    connects: asyncio.Semaphore,
    figures: Figures,
) -> None:
    own = f"inflight-{round_name}-{index:05d}-{uuid.uuid4().hex[:8]}"
    path = f"/hold?id={own}&round={round_name}&target={target}&call={int(call)}"
    data = request(path, [b"x-request-id: " + own.encode()])
    example = f"{server.label} {own}"
    writer = None
    try:
        async with connects:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*server.address), 60)
            writer.write(data)
            await writer.drain()
        figures.count(requests=1)
        response = await asyncio.wait_for(read_response_async(reader), ANSWER_SECONDS)
    except (OSError, Incomplete, asyncio.TimeoutError) as error:
        figures.error(f"{server.kind}: no answer", f"{example}: {error!r}")
        return
    finally:
        if writer is not None:
            writer.close()
    if response.status != 200:
        figures.error(f"{server.kind} answered {response.status}", example)
        return
    answer: dict[str, Any] = response.json()
    observed = {key: answer[key] for key in ("before", "seen_before", "after", "outbound")}
    observed["echo"] = ",".join(response.echoes())
    if call:
        observed["carried"] = answer["carried"]
    wrong = {key: value for key, value in observed.items() if value != own}
    figures.cross_talk_in(f"cross-talk on {server.kind}", example, wrong)


async def _round(
    server: Server, round_name: str, count: int, call_every: int, figures: Figures
) -> None:
    connects = asyncio.Semaphore(CONNECTS_AT_ONCE)
    await asyncio.gather(
        *(
            _one(
                server,
                round_name,
                i,
                count,
                call_every > 0 and i % call_every == 0,
                connects,
                figures,
            )
            for i in range(count)
        )
    )


def run_on(
    servers: Running,
    server: Server,
    count: int,
    rounds: int,
    call_every: int,
    figures: Figures,
    deadline: float,
) -> None:
    asyncio.run(_round(server, "warm-up", 50, 10, figures))
    before = servers.stats(server)
    for number in range(rounds):
        if time.monotonic() > deadline:
            figures.notes.append(f"{server.label}: time budget reached after {number} rounds")
            break
        name = f"r{number}"
        asyncio.run(_round(server, name, count, call_every, figures))
        peak = int(str(servers.stats(server, name)["peak"]))
        figures.max_concurrency = max(figures.max_concurrency, peak)
        figures.inputs += count
        if peak < count:
            figures.violations.add(f"{server.kind} held only {peak} of {count} at once", name)
    after = servers.stats(server)
    memory_check(figures, server.label, before, after, rounds * count)
    if not servers.alive(server):
        figures.violations.add(f"server went down: {server.kind}", server.label)


def run(
    kinds: Sequence[str] = ("uvicorn-httptools", "aiohttp"),
    count: int = 10_000,
    rounds: int = 1,
    call_every: int = 20,
    seconds: float = 120.0,
) -> Figures:
    """Part 2: one server at a time, so each round has the machine to itself."""
    figures = Figures("inflight")
    started = time.monotonic()
    raise_fd_limit()
    with running([(kind, "default") for kind in kinds]) as servers:
        deadline = time.monotonic() + seconds
        for server in servers.servers:
            with figures.harness_failure_on(server.kind, server.label):
                run_on(servers, server, count, rounds, call_every, figures, deadline)
    figures.seconds = time.monotonic() - started
    return figures
