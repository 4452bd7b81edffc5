"""Judging the results against DESIGN.md §5's budgets, and writing them as JSON and Markdown."""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .memory import BLOCKS_LIMIT, RSS_LIMIT_BYTES, MemoryResult

PASS, MISS, NOT_MEASURED = "PASS", "MISS", "NOT MEASURED"
INSTRUCTIONS, MICROSECONDS = "instructions", "µs"

#: Per-request cost of each variant, by suite and variant name: instructions or microseconds.
Costs = Mapping[str, Mapping[str, float]]

#: How a budget row names a reference variant.
_LABELS = {"explicit": "headers= by hand"}


def _figure(value: float, unit: str, signed: bool = True) -> str:
    if unit == INSTRUCTIONS:
        return f"{value:+,.0f}" if signed else f"{value:,.0f}"
    return f"{value:+.2f} µs" if signed else f"{value:.2f} µs"


def _absent(title: str, costs: Costs, unit: str, *needed: tuple[str, str]) -> dict[str, Any] | None:
    """The NOT MEASURED row when a figure the budget compares is not there, else None."""
    for suite, name in needed:
        if suite not in costs:
            why = f"{suite} not run"
        elif name not in costs[suite]:
            why = f"{suite} / {name} not measured"
        else:
            continue
        return {"budget": title, "unit": unit, "result": NOT_MEASURED, "why": why}
    return None


def _overhead(costs: Costs, suite: str, name: str) -> float:
    return costs[suite][name] - costs[suite]["bare"]


def _row(title: str, unit: str, measured: str, limit: str, passed: bool) -> dict[str, Any]:
    return {
        "budget": title,
        "unit": unit,
        "measured": measured,
        "limit": limit,
        "result": PASS if passed else MISS,
    }


def _at_most(
    title: str, costs: Costs, unit: str, suite: str, name: str, reference: str, factor: float = 1.0
) -> dict[str, Any]:
    """``name``'s overhead against ``factor`` times ``reference``'s, both over bare."""
    absent = _absent(title, costs, unit, (suite, "bare"), (suite, name), (suite, reference))
    if absent is not None:
        return absent
    mine, theirs = _overhead(costs, suite, name), _overhead(costs, suite, reference)
    limit = factor * theirs
    reference_text = f"{_LABELS.get(reference, reference)} {_figure(theirs, unit)}"
    if factor != 1.0:
        reference_text = f"{factor:g} x {reference_text} = {_figure(limit, unit)}"
    return _row(title, unit, f"{name} {_figure(mine, unit)}", f"≤ {reference_text}", mine <= limit)


def _within_starlette(title: str, costs: Costs, unit: str, share: float) -> dict[str, Any]:
    """The aiohttp server's meshprop-read overhead against Starlette's, ± ``share``."""
    name = "meshprop-read"
    needed = [
        (suite, variant)
        for suite in ("aiohttp-server", "asgi-starlette")
        for variant in ("bare", name)
    ]
    absent = _absent(title, costs, unit, *needed)
    if absent is not None:
        return absent
    mine, starlette = (
        _overhead(costs, "aiohttp-server", name),
        _overhead(costs, "asgi-starlette", name),
    )
    low, high = (1 - share) * starlette, (1 + share) * starlette
    return _row(
        title,
        unit,
        f"{name} {_figure(mine, unit)} ({mine / starlette:.2f} x Starlette's)",
        f"Starlette's {name} {_figure(starlette, unit)} ± {share * 100:g} % = "
        f"{_figure(low, unit, signed=False)} … {_figure(high, unit, signed=False)}",
        low <= mine <= high,
    )


def _own_share(
    title: str, costs: Costs, unit: str, suite: str, share: float, name: str = "meshprop"
) -> dict[str, Any]:
    """meshprop's own work (``name`` - carry) against a share of the bare call."""
    absent = _absent(title, costs, unit, (suite, "bare"), (suite, name), (suite, "carry"))
    if absent is not None:
        return absent
    figures = costs[suite]
    own = figures[name] - figures["carry"]
    limit = share * figures["bare"]
    return _row(
        title,
        unit,
        f"{name} - carry {_figure(own, unit)} (over bare: {name} "
        f"{_figure(_overhead(costs, suite, name), unit)}, carry "
        f"{_figure(_overhead(costs, suite, 'carry'), unit)})",
        f"≤ {share * 100:g} % of bare {_figure(figures['bare'], unit, signed=False)} = "
        f"{_figure(limit, unit, signed=False)}",
        own <= limit,
    )


def _patched_beside_wrapped(
    title: str, costs: Costs, unit: str, suite: str, share: float
) -> dict[str, Any]:
    """The patched client's overhead against the wrapped client's plus a share of bare."""
    absent = _absent(title, costs, unit, (suite, "bare"), (suite, "patched"), (suite, "meshprop"))
    if absent is not None:
        return absent
    patched, wrapped = _overhead(costs, suite, "patched"), _overhead(costs, suite, "meshprop")
    bare = costs[suite]["bare"]
    limit = wrapped + share * bare
    return _row(
        title,
        unit,
        f"patched {_figure(patched, unit)} ({_figure(patched - wrapped, unit)} over meshprop)",
        f"≤ meshprop {_figure(wrapped, unit)} + {share * 100:g} % of bare "
        f"{_figure(bare, unit, signed=False)} = {_figure(limit, unit)}",
        patched <= limit,
    )


def cost_budgets(costs: Costs, unit: str) -> list[dict[str, Any]]:
    """DESIGN.md §5's inbound and outbound budgets, judged on one set of costs."""
    judged = [
        _at_most(
            f"Inbound ({label}): meshprop-read ≤ asgi-correlation-id",
            costs,
            unit,
            suite,
            "meshprop-read",
            "asgi-correlation-id",
        )
        for suite, label in (("asgi-starlette", "Starlette"), ("asgi-fastapi", "FastAPI"))
    ]
    judged.append(
        _within_starlette(
            "Inbound (aiohttp server): meshprop-read within ± 10 % of Starlette's",
            costs,
            unit,
            0.10,
        )
    )
    judged.append(
        _at_most(
            "Inbound (Flask): meshprop-read ≤ ½ of before_request",
            costs,
            unit,
            "wsgi-flask",
            "meshprop-read",
            "before_request",
            0.5,
        )
    )
    for suite, label in CLIENT_SUITES.items():
        judged.append(
            _at_most(
                f"Outbound ({label}): meshprop ≤ the same headers= by hand",
                costs,
                unit,
                suite,
                "meshprop",
                "explicit",
            )
        )
        judged.append(
            _own_share(
                f"Outbound ({label}): meshprop - carry ≤ 2 % of bare", costs, unit, suite, 0.02
            )
        )
    for suite, label in PATCHED_SUITES.items():
        judged.append(
            _patched_beside_wrapped(
                f"instrument() ({label}): patched ≤ meshprop + 1 % of bare",
                costs,
                unit,
                suite,
                0.01,
            )
        )
        judged.append(
            _own_share(
                f"instrument() ({label}): patched - carry ≤ 2 % of bare",
                costs,
                unit,
                suite,
                0.02,
                name="patched",
            )
        )
    return judged


#: The zero-code variant of each suite beside the adapter it stands for.
_ZERO_CODE_PAIRS = (
    ("meshprop", "patched"),
    ("meshprop", "instrumented"),
    ("meshprop-read", "instrumented-read"),
)


def instrument_table(costs: Costs, unit: str) -> list[str]:
    """``instrument()`` beside the adapters, suite by suite, as Markdown table lines (none when
    no suite has both). Only the clients have a budget for it (in the budget table); an
    instrumented app is shown here and not judged."""
    lines = [
        "| suite | adapter | over bare | instrument() | over bare | instrument() - adapter |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    for suite, figures in costs.items():
        if "bare" not in figures:
            continue
        for adapter, zero_code in _ZERO_CODE_PAIRS:
            if adapter not in figures or zero_code not in figures:
                continue
            wrapped, patched = _overhead(costs, suite, adapter), _overhead(costs, suite, zero_code)
            lines.append(
                f"| {suite} | {adapter} | {_figure(wrapped, unit)} | {zero_code} | "
                f"{_figure(patched, unit)} | {_figure(patched - wrapped, unit)} |"
            )
    return lines if len(lines) > 2 else []


INSTRUMENT_NOTE = (
    "The bare client or app, made and served after `meshprop.instrument()` (and "
    "`uninstrument()` after the variant), beside the wrapped client or the added middleware. "
    "DESIGN.md §5 budgets the clients (the rows `instrument()` in the budget table); an "
    "instrumented app has no budget of its own and is not judged."
)


def memory_budgets(
    memory: list[MemoryResult] | None, why: str = "suite not run"
) -> list[dict[str, Any]]:
    """No growth after warm-up, one row per probe."""
    if memory is None:
        return [{"budget": "Memory: no growth after warm-up", "result": NOT_MEASURED, "why": why}]
    judged: list[dict[str, Any]] = []
    for probe in memory:
        title = f"Memory ({probe.adapter}): no growth after warm-up"
        if probe.status != "ok":
            judged.append(
                {"budget": title, "result": NOT_MEASURED, "why": f"{probe.status}: {probe.reason}"}
            )
            continue
        rss = "n/a" if probe.rss_growth_bytes is None else f"{probe.rss_growth_bytes:+,} B"
        judged.append(
            {
                "budget": title,
                "unit": "blocks, RSS",
                "measured": f"{probe.blocks_growth:+,} blocks, {rss} RSS over "
                f"{probe.requests:,} requests",
                "limit": f"≤ {BLOCKS_LIMIT:,} blocks, ≤ {RSS_LIMIT_BYTES // 1024 // 1024} MiB RSS",
                "result": MISS if probe.grows else PASS,
            }
        )
    return judged


def wall_clock_costs(suites: Mapping[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Each measured variant's median in µs, from a run document's suites."""
    return {
        suite: {row["name"]: row["median_us"] for row in rows if row["status"] == "ok"}
        for suite, rows in suites.items()
    }


def judged_on_counts(
    timed: list[dict[str, Any]], counted: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Each budget judged in instructions where the counts have its figures, else on the wall
    clock; the wall clock's verdict is kept beside the instructions' one."""
    if counted is None:
        return timed
    judged = []
    for by_count, by_time in zip(counted, timed, strict=True):
        if by_count["result"] == NOT_MEASURED:
            judged.append(by_time)
        else:
            judged.append(by_count | {"wall_clock": by_time})
    return judged


def read_counts(path: Path) -> dict[str, Any] | None:
    """What ``benchmarks.instructions`` last wrote (its run and per-request counts), if any."""
    try:
        counts: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return counts


def _verdict(row: dict[str, Any]) -> str:
    if row["result"] == NOT_MEASURED:
        return f"**{NOT_MEASURED}**: {row['why']}"
    return f"{row['measured']}; {row['limit']}: **{row['result']}**"


def budget_table(rows: list[dict[str, Any]]) -> list[str]:
    """The budgets as Markdown table lines; a wall-clock column when some row has one."""
    with_wall_clock = any("wall_clock" in row for row in rows)
    header = "| budget | judged in | measured | limit | result |"
    rule = "| --- | --- | --- | --- | --- |"
    if with_wall_clock:
        header += " wall clock, this run |"
        rule += " --- |"
    lines = [header, rule]
    for row in rows:
        if row["result"] == NOT_MEASURED:
            line = f"| {row['budget']} | - | - | - | **{NOT_MEASURED}**: {row['why']} |"
        else:
            line = (
                f"| {row['budget']} | {row['unit']} | {row['measured']} | {row['limit']} | "
                f"**{row['result']}** |"
            )
        if with_wall_clock:
            line += f" {_verdict(row['wall_clock']) if 'wall_clock' in row else '-'} |"
        lines.append(line)
    return lines


CLIENT_SUITES = {
    "httpx-sync": "httpx Client",
    "httpx-async": "httpx AsyncClient",
    "requests": "requests Session",
    "aiohttp-client": "aiohttp ClientSession",
}
#: The client suites with a ``patched`` variant. requests is patched in ``http.client``, which
#: the ``requests`` suite's answer-at-once adapter never reaches, so it is judged on the suite
#: that goes down to the socket.
PATCHED_SUITES = {
    "httpx-sync": "httpx Client",
    "httpx-async": "httpx AsyncClient",
    "requests-urllib3": "requests Session over urllib3",
    "aiohttp-client": "aiohttp ClientSession",
}


def write(document: dict[str, Any], markdown: str, directory: Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md``, each replaced whole (never half-written)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / f"{stem}.json", directory / f"{stem}.md"
    for path, text in zip(paths, (json.dumps(document, indent=2) + "\n", markdown), strict=True):
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    return paths


def _iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def _short_site(site: str) -> str:
    """A path inside site-packages or the checkout, not the whole absolute path."""
    for marker, prefix in (
        ("/site-packages/", ""),
        ("/meshprop/", "meshprop/"),
        ("/benchmarks/", "benchmarks/"),
        ("/lib/", ""),
    ):
        if marker in site:
            return prefix + site.split(marker, 1)[1]
    return site


def _us(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _counts_note(counts_run: dict[str, Any] | None) -> str:
    if counts_run is None:
        return (
            "Judged on this run's wall-clock medians: no instruction counts were found "
            "(`make bench-instructions` writes them)."
        )
    return (
        "Judged in callgrind instructions per request from `instructions.json` "
        f"({counts_run['started']}, commit {counts_run['commit']}, Python {counts_run['python']}) "
        "where it has the figures, else on this run's wall-clock medians; the last column is "
        "the wall clock's own verdict."
    )


def markdown(document: dict[str, Any], descriptions: dict[str, dict[str, str]]) -> str:
    run = document["run"]
    lines = [
        f"# meshprop benchmarks ({run['mode']} mode)",
        "",
        f"{run['started']} · Python {run['python']} · {run['platform']} · {run['cpus']} CPUs · "
        f"load average {run['load_before']} before, {run['load_after']} after · "
        f"{run['duration_s']:.0f} s",
        "",
        "Overhead = the variant's median minus the bare median, measured in the same run; the "
        f"variants are interleaved round by round ({run['rounds']} rounds, batches of "
        f"{run['min_batch']}-{run['max_batch']} calls, GC off during a batch). IQR is the "
        "spread of the per-round times. Reproduce with `make bench` (or `python -m benchmarks`).",
        "",
        "## Budgets (DESIGN.md §5)",
        "",
        _counts_note(document.get("instruction_counts")),
        "",
        *budget_table(document["budgets"]),
    ]
    zero_code = instrument_table(wall_clock_costs(document["suites"]), MICROSECONDS)
    if zero_code:
        lines += ["", "## instrument() beside the adapters", "", INSTRUMENT_NOTE, "", *zero_code]

    for suite, results in document["suites"].items():
        lines += [
            "",
            f"## In-process: {SUITE_TITLES.get(suite, suite)}",
            "",
            "| variant | what | median µs | IQR µs | overhead µs | x bare |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in results:
            what = descriptions.get(suite, {}).get(row["name"], "")
            if row["status"] != "ok":
                lines.append(
                    f"| {row['name']} | {what} | **{row['status'].upper()}**: "
                    f"{row['reason']} | | | |"
                )
                continue
            ratio = row.get("ratio_to_bare")
            lines.append(
                f"| {row['name']} | {what} | {_us(row['median_us'])} | {_us(row['iqr_us'])} | "
                f"{_us(row.get('overhead_us'), signed=True)} | "
                f"{'-' if ratio is None else f'{ratio:.2f}'} |"
            )

    memory = document.get("memory")
    if memory is not None:
        lines += [
            "",
            "## Memory (growth after warm-up)",
            "",
            "Allocated blocks and RSS over the long untraced run decide; tracemalloc then "
            "traces a shorter stretch and shows where what is still alive was allocated "
            "(bounded caches show there too).",
            "",
            "| adapter | requests | seconds | allocated blocks | RSS | traced requests | "
            "tracemalloc (still alive) | largest allocation site |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for probe in memory:
            if probe["status"] != "ok":
                lines.append(
                    f"| {probe['adapter']} | **{probe['status'].upper()}**: "
                    f"{probe['reason']} | | | | | | |"
                )
                continue
            rss = probe["rss_growth_bytes"]
            lines.append(
                f"| {probe['adapter']} | {probe['requests']:,} | {probe['seconds']:.1f} | "
                f"{probe['blocks_growth']:+,} | {'n/a' if rss is None else f'{rss:+,} B'} | "
                f"{probe['traced_requests']:,} | {probe['traced_growth_bytes']:+,} B | "
                f"{_short_site(probe['traced_top'])} |"
            )

    sockets = document.get("sockets")
    if sockets is not None:
        lines += ["", "## Over sockets: uvicorn, bare vs meshprop", ""]
        if sockets.get("status") != "ok":
            lines.append(f"**{str(sockets.get('status')).upper()}**: {sockets.get('reason')}")
        else:
            rates = sockets["requests_per_second"]
            lines += [
                f"{sockets['server']}; {sockets['load']}; {sockets['rounds']} rounds of "
                f"{sockets['seconds_per_round']} s each, interleaved.",
                "",
                "| server | requests/s (median) | IQR |",
                "| --- | ---: | ---: |",
                *(
                    f"| {name} | {rates[name]:,.0f} | {_iqr(sockets['per_round'][name]):,.0f} |"
                    for name in ("bare", "meshprop")
                ),
                "",
                f"Throughput ratio meshprop/bare: **{sockets['throughput_ratio']:.3f}** "
                f"(≈ {sockets['overhead_us_per_request']:+.1f} µs per request).",
            ]

    problems = document["problems"]
    if problems:
        lines += ["", "## Not measured", ""]
        lines += [f"- {problem}" for problem in problems]
    return "\n".join(lines) + "\n"


SUITE_TITLES = {
    "asgi-starlette": "ASGI, Starlette",
    "asgi-fastapi": "ASGI, FastAPI",
    "wsgi-flask": "WSGI, Flask",
    "aiohttp-server": "aiohttp server",
    "httpx-sync": "outbound, httpx Client on MockTransport",
    "httpx-async": "outbound, httpx AsyncClient on MockTransport",
    "requests": "outbound, requests Session on an in-memory adapter",
    "requests-urllib3": "outbound, requests Session through urllib3 and http.client onto an "
    "in-memory socket",
    "aiohttp-client": "outbound, aiohttp ClientSession to a local aiohttp server (loopback)",
    "httpx-otel": "outbound inside an OpenTelemetry span, httpx Client on MockTransport",
}
