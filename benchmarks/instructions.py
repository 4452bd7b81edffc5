"""Instructions per request, counted by callgrind: the deterministic companion of the timing run.

``python -m benchmarks.instructions [--only SUITES] [--variants NAMES]`` (or ``make
bench-instructions``). Each variant runs twice under ``valgrind --tool=callgrind`` in its own
process, once with no timed requests and once with some; the difference divided by the number of
requests is what one request costs, startup and imports cancelled out. The same binary, inputs
and hash seed give the same count on a busy machine as on an idle one, so the ratios that the
budgets compare can be read without the wall clock's noise. Kernel time is not counted (a
variant that calls ``os.urandom`` pays more in time than here).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from ._run import _variants

RESULTS = Path(__file__).resolve().parent / "results" / "instructions.md"

#: Suite -> requests counted per variant (enough to dwarf the noise of a few hundred instructions).
SUITES = {
    "asgi-starlette": 2000,
    "asgi-fastapi": 1000,
    "wsgi-flask": 1000,
    "aiohttp-server": 1000,
    "httpx-sync": 200,
    "httpx-async": 200,
    "requests": 100,
    "aiohttp-client": 200,
}
#: The variants the budgets compare, by default.
BUDGET_VARIANTS = ("bare", "floor", "meshprop", "asgi-correlation-id", "before_request", "carry")

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

    lines = [
        "# meshprop benchmarks: instructions per request (callgrind)",
        "",
        f"Python {sys.version.split()[0]} · PYTHONHASHSEED=0 · reproduce with "
        "`python -m benchmarks.instructions`. Overhead = variant - bare, in instructions.",
        "",
        "| suite | variant | instructions per request | overhead |",
        "| --- | --- | ---: | ---: |",
    ]
    for suite in suites:
        # The suite's own list, in its order (bare first), to skip the names it does not have.
        loop = asyncio.new_event_loop()
        with ExitStack() as stack:
            names = [variant.name for variant in _variants(suite, stack, loop)]
        loop.close()
        bare = None
        for name in [name for name in names if name in wanted]:
            instructions = per_request(suite, name)
            if name == "bare":
                bare = instructions
            overhead = "-" if bare is None or name == "bare" else f"{instructions - bare:+,.0f}"
            line = f"| {suite} | {name} | {instructions:,.0f} | {overhead} |"
            print(line, flush=True)
            lines.append(line)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
