"""``python -m stress [--budget ci|local] [--parts a,b]``: run the stress parts, print figures.

The budget comes from ``--budget`` or ``STRESS_BUDGET`` (default ``local``). Exits 1 on any
violation, cross-talk or error, 0 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from . import abandoned, fuzz, hostile, inflight, pipelining
from .budget import BUDGETS, Budget
from .report import Figures, render

PARTS: dict[str, Callable[[Budget], Figures]] = {
    "hostile": lambda b: hostile.run(b.hostile_kinds, seconds=b.hostile_seconds),
    "inflight": lambda b: inflight.run(
        b.inflight_kinds,
        b.inflight_count,
        b.inflight_rounds,
        b.inflight_call_every,
        b.inflight_seconds,
    ),
    "abandoned": lambda b: abandoned.run(
        b.abandoned_kinds, b.abandoned_requests, seconds=b.abandoned_seconds
    ),
    "pipelining": lambda b: pipelining.run(
        b.pipeline_kinds, b.pipeline_connections, b.pipeline_depth, b.pipeline_seconds
    ),
    "fuzz": lambda b: fuzz.run(b.fuzz_examples, b.fuzz_seconds),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress")
    parser.add_argument(
        "--budget", choices=sorted(BUDGETS), default=os.environ.get("STRESS_BUDGET") or "local"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated, in order")
    args = parser.parse_args(argv)
    budget = BUDGETS[args.budget]
    names = [name.strip() for name in args.parts.split(",") if name.strip()]
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; the parts are {', '.join(PARTS)}")
    started = time.monotonic()
    results: list[Figures] = []
    for name in names:
        print(f"== {name} ({budget.name} budget)", flush=True)
        part_started = time.monotonic()
        try:
            figures = PARTS[name](budget)
        except Exception as error:  # the harness itself failed: report it, run the rest
            figures = Figures(name)
            figures.error("harness failed", repr(error))
            figures.seconds = time.monotonic() - part_started
        results.append(figures)
        print(
            f"   {name}: {figures.requests} requests, {figures.inputs} inputs, "
            f"{figures.violations.total()} violations, {figures.seconds:.1f} s",
            flush=True,
        )
    print(render(results, time.monotonic() - started))
    failed = [figures.part for figures in results if figures.failed]
    print(f"\nstress: {'FAILED: ' + ', '.join(failed) if failed else 'passed'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
