"""Instructions per request, counted by callgrind: the deterministic companion of the timing run.

``python -m benchmarks.instructions [--only SUITES] [--variants NAMES]`` (or ``make
bench-instructions``) writes ``results/instructions.{md,json}``; DESIGN.md §5's budgets are
judged on these counts, here and in the wall-clock report. Each variant runs twice under
``valgrind --tool=callgrind`` in its own process, once with no timed requests and once with
some; the difference divided by the number of requests is what one request costs, startup and
imports cancelled out. The same binary, inputs and hash seed give the same count on a busy
machine as on an idle one, so the ratios that the budgets compare can be read without the wall
clock's noise. Kernel time is not counted (a variant that calls ``os.urandom`` pays more in
time than here).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from . import _report
from ._run import INSTRUCTION_COUNTS, _variants

RESULTS = INSTRUCTION_COUNTS.with_suffix(".md")

#: Suite -> requests counted per variant (enough to dwarf the noise of a few hundred instructions).
SUITES = {
    "asgi-starlette": 2000,
    "asgi-fastapi": 1000,
    "wsgi-flask": 1000,
    "aiohttp-server": 1000,
    "httpx-sync": 200,
    "httpx-async": 200,
    "requests": 100,
    "requests-urllib3": 100,
    "aiohttp-client": 200,
}
#: The variants the budgets compare, and the floor and ``instrument()``'s inbound side beside
#: them: the default set.
BUDGET_VARIANTS = (
    "bare",
    "floor",
    "meshprop",
    "meshprop-read",
    "asgi-correlation-id",
    "before_request",
    "explicit",
    "carry",
    "patched",
    "instrumented",
    "instrumented-read",
)

_COLLECTED = re.compile(r"Collected : (\d+)")


def count(suite: str, variant: str, calls: int) -> int:
    """Instructions callgrind collected for one probe process."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks._instruction_probe",
        suite,
        variant,
        str(calls),
    ]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=900, check=False
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{suite}/{variant}: callgrind failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(suite: str, variant: str) -> float:
    """Instructions per request: a run with requests minus a run without, side by side."""
    calls = SUITES[suite]
    with ThreadPoolExecutor(max_workers=2) as pool:
        baseline = pool.submit(count, suite, variant, 0)
        measured = pool.submit(count, suite, variant, calls)
        return (measured.result() - baseline.result()) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instructions", description=__doc__)
    parser.add_argument("--only", help="comma-separated suites (default: " + ",".join(SUITES) + ")")
    parser.add_argument(
        "--variants", help="comma-separated variants (default: " + ",".join(BUDGET_VARIANTS) + ")"
    )
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    suites = args.only.split(",") if args.only else list(SUITES)
    unknown = [suite for suite in suites if suite not in SUITES]
    if unknown:
        parser.error(f"unknown suites: {', '.join(unknown)}")
    wanted = args.variants.split(",") if args.variants else list(BUDGET_VARIANTS)

    counts: dict[str, dict[str, float]] = {}
    for suite in suites:
        # The suite's own list, in its order (bare first), to skip the names it does not have.
        loop = asyncio.new_event_loop()
        with ExitStack() as stack:
            names = [variant.name for variant in _variants(suite, stack, loop)]
        loop.close()
        counts[suite] = {}
        for name in [name for name in names if name in wanted]:
            counts[suite][name] = per_request(suite, name)
            print(f"{suite} / {name}: {counts[suite][name]:,.0f}", flush=True)
    run = {
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": sys.version.split()[0],
        "commit": _commit(),
    }
    document = {"run": run, "suites": counts}
    text = markdown(document)
    _report.write(document, text, RESULTS.parent, RESULTS.stem)
    print(text)
    print(f"wrote {RESULTS} and {INSTRUCTION_COUNTS}")
    return 0


def markdown(document: dict[str, Any]) -> str:
    """The budgets judged on the counts, then every count with its overhead over bare."""
    run, counts = document["run"], document["suites"]
    budgets = _report.cost_budgets(counts, _report.INSTRUCTIONS) + _report.memory_budgets(
        None, why="`make bench` measures it (latest.md)"
    )
    lines = [
        "# meshprop benchmarks: instructions per request (callgrind)",
        "",
        f"{run['started']} · commit {run['commit']} · Python {run['python']} · "
        "PYTHONHASHSEED=0 · reproduce with `make bench-instructions`. "
        "Overhead = variant - bare, in instructions.",
        "",
        "## Budgets (DESIGN.md §5)",
        "",
        *_report.budget_table(budgets),
    ]
    zero_code = _report.instrument_table(counts, _report.INSTRUCTIONS)
    if zero_code:
        lines += ["", "## instrument() beside the adapters", "", _report.INSTRUMENT_NOTE]
        lines += ["", *zero_code]
    lines += [
        "",
        "## Instructions per request",
        "",
        "| suite | variant | instructions per request | overhead |",
        "| --- | --- | ---: | ---: |",
    ]
    for suite, figures in counts.items():
        bare = figures.get("bare")
        for name, instructions in figures.items():
            overhead = "-" if bare is None or name == "bare" else f"{instructions - bare:+,.0f}"
            lines.append(f"| {suite} | {name} | {instructions:,.0f} | {overhead} |")
    return "\n".join(lines) + "\n"


def _commit() -> str:
    """The checkout's commit, marked when meshprop or the benchmarks have changes on top."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--", "meshprop", "benchmarks"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} with uncommitted changes" if changes.strip() else head


if __name__ == "__main__":
    sys.exit(main())
