"""One benchmark run: every suite in turn, then the budgets, then the files."""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from . import _report, inbound_aiohttp, inbound_asgi, inbound_wsgi, memory, outbound, sockets
from ._harness import Measured, Plan, Variant, measure

TIMING_SUITES = (
    "asgi-starlette",
    "asgi-fastapi",
    "wsgi-flask",
    "aiohttp-server",
    "httpx-sync",
    "httpx-async",
    "requests",
    "requests-urllib3",
    "aiohttp-client",
    "httpx-otel",
)
ALL_SUITES = (*TIMING_SUITES, "memory", "sockets")
RESULTS_DIRECTORY = Path(__file__).resolve().parent / "results"
#: Where ``benchmarks.instructions`` leaves its counts, which the budgets are judged on.
INSTRUCTION_COUNTS = RESULTS_DIRECTORY / "instructions.json"

_DESCRIPTIONS = {
    "asgi-starlette": inbound_asgi.DESCRIPTIONS,
    "asgi-fastapi": inbound_asgi.DESCRIPTIONS,
    "wsgi-flask": inbound_wsgi.DESCRIPTIONS,
    "aiohttp-server": inbound_aiohttp.DESCRIPTIONS,
    **outbound.DESCRIPTIONS,
}


def _variants(suite: str, stack: ExitStack, loop: asyncio.AbstractEventLoop) -> list[Variant]:
    builders: dict[str, Callable[[], list[Variant]]] = {
        "asgi-starlette": lambda: inbound_asgi.variants(loop, "starlette"),
        "asgi-fastapi": lambda: inbound_asgi.variants(loop, "fastapi"),
        "wsgi-flask": inbound_wsgi.variants,
        "aiohttp-server": lambda: inbound_aiohttp.variants(loop),
        "httpx-sync": lambda: outbound.httpx_sync_variants(stack),
        "httpx-async": lambda: outbound.httpx_async_variants(stack, loop),
        "requests": lambda: outbound.requests_variants(stack),
        "requests-urllib3": lambda: outbound.requests_urllib3_variants(stack),
        "aiohttp-client": lambda: outbound.aiohttp_variants(stack, loop),
        "httpx-otel": lambda: outbound.httpx_otel_variants(stack),
    }
    return builders[suite]()


def _load() -> str:
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "n/a"


def run(
    plan: Plan,
    suites: Iterable[str] = ALL_SUITES,
    output: Path | None = RESULTS_DIRECTORY,
    log: Callable[[str], None] = print,
    instruction_counts: Path | None = None,
) -> dict[str, Any]:
    """Run the chosen suites; write ``<mode>.json``/``.md`` (``latest`` for the full run).

    The budgets are judged on ``instruction_counts`` (``benchmarks.instructions``' JSON) where
    it has the figures, and on this run's medians otherwise.
    """
    chosen = [suite for suite in ALL_SUITES if suite in set(suites)]
    started = time.monotonic()
    document: dict[str, Any] = {
        "run": {
            "mode": plan.mode,
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(terse=True),
            "cpus": os.cpu_count(),
            "load_before": _load(),
            "rounds": plan.rounds,
            "min_batch": plan.min_batch,
            "max_batch": plan.max_batch,
        },
        "suites": {},
    }
    memory_results: list[memory.MemoryResult] | None = None
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with ExitStack() as stack:
            for suite in chosen:
                if suite not in TIMING_SUITES:
                    continue
                log(f"== {suite}")
                results = measure(_variants(suite, stack, loop), plan, log)
                bare = next((r for r in results if r.name == "bare"), None)
                document["suites"][suite] = [result.as_dict(bare) for result in results]
                _log_suite(results, bare, log)
            if "memory" in chosen:
                log("== memory")
                memory_results = []
                for adapter, build, needs in memory.probes(stack, loop):
                    probe = memory.probe(adapter, build, needs, plan)
                    memory_results.append(probe)
                    log(f"    {adapter}: {_memory_line(probe)}")
                document["memory"] = [probe.as_dict() for probe in memory_results]
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
    if "sockets" in chosen:
        log("== sockets")
        document["sockets"] = sockets.run(plan, log)

    judge(document, memory_results, instruction_counts)
    document["problems"] = _problems(document)
    document["run"]["load_after"] = _load()
    document["run"]["duration_s"] = time.monotonic() - started
    text = _report.markdown(document, _DESCRIPTIONS)
    if output is not None:
        stem = "quick" if plan.quick else "latest"
        json_path, markdown_path = _report.write(document, text, output, stem)
        document["files"] = [str(json_path), str(markdown_path)]
    return document | {"markdown": text}


def judge(
    document: dict[str, Any],
    memory_results: list[memory.MemoryResult] | None,
    instruction_counts: Path | None,
) -> None:
    """Set the document's budgets: in instructions where the counts have the figures, else on
    its wall-clock medians; memory on its probes."""
    counts = None if instruction_counts is None else _report.read_counts(instruction_counts)
    document["instruction_counts"] = None if counts is None else counts["run"]
    timed = _report.cost_budgets(_report.wall_clock_costs(document["suites"]), _report.MICROSECONDS)
    counted = (
        None if counts is None else _report.cost_budgets(counts["suites"], _report.INSTRUCTIONS)
    )
    document["budgets"] = _report.judged_on_counts(timed, counted) + _report.memory_budgets(
        memory_results
    )


def _problems(document: dict[str, Any]) -> list[str]:
    """Every variant, probe or suite that gave no number, and why."""
    problems = [
        f"{suite} / {row['name']}: {row['status']}: {row['reason']}"
        for suite, rows in document["suites"].items()
        for row in rows
        if row["status"] != "ok"
    ]
    problems += [
        f"memory / {probe['adapter']}: {probe['status']}: {probe['reason']}"
        for probe in document.get("memory", ())
        if probe["status"] != "ok"
    ]
    socket_result = document.get("sockets")
    if socket_result is not None and socket_result.get("status") != "ok":
        problems.append(f"sockets: {socket_result.get('status')}: {socket_result.get('reason')}")
    return problems


def has_errors(document: dict[str, Any]) -> bool:
    """An error (not a missing meshprop adapter) anywhere in the run."""
    return any(": error: " in problem for problem in document["problems"])


def _log_suite(results: list[Measured], bare: Measured | None, log: Callable[[str], None]) -> None:
    for result in results:
        if result.status != "ok":
            continue
        line = f"    {result.name:<22} {result.median_ns / 1000:9.2f} µs"
        if bare is not None and bare.status == "ok" and result is not bare:
            line += f"   {(result.median_ns - bare.median_ns) / 1000:+9.2f} µs"
        log(line)


def _memory_line(probe: memory.MemoryResult) -> str:
    if probe.status != "ok":
        return f"{probe.status.upper()}: {probe.reason}"
    return (
        f"{probe.requests:,} requests in {probe.seconds:.1f} s: {probe.blocks_growth:+,} blocks, "
        f"RSS {probe.rss_growth_bytes or 0:+,} B; tracemalloc {probe.traced_growth_bytes:+,} B "
        f"over {probe.traced_requests:,}"
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    from ._harness import FULL, QUICK

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="meshprop's per-request overhead against a bare app and the alternatives, "
        "measured in one run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short smoke run (CI); numbers are rough"
    )
    parser.add_argument(
        "--only",
        default=",".join(ALL_SUITES),
        help=f"comma-separated suites to run, of: {', '.join(ALL_SUITES)}",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIRECTORY, help="directory for the JSON and Markdown"
    )
    args = parser.parse_args(argv)
    suites = [suite.strip() for suite in args.only.split(",") if suite.strip()]
    unknown = sorted(set(suites) - set(ALL_SUITES))
    if unknown:
        parser.error(f"unknown suites: {', '.join(unknown)}")
    plan = QUICK if args.quick else FULL
    document = run(plan, suites, args.output, instruction_counts=INSTRUCTION_COUNTS)
    print()
    print(document["markdown"])
    for path in document.get("files", ()):
        print(f"wrote {path}")
    if document["problems"]:
        print("NOT MEASURED:", *document["problems"], sep="\n  ", file=sys.stderr)
    return 1 if has_errors(document) else 0
