"""Judging the results against DESIGN.md §5's budgets, and writing them as JSON and Markdown."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

from ._harness import Measured
from .memory import BLOCKS_LIMIT, RSS_LIMIT_BYTES, MemoryResult

PASS, MISS, NOT_MEASURED = "PASS", "MISS", "NOT MEASURED"


def _find(results: list[Measured], name: str) -> Measured | None:
    return next((measured for measured in results if measured.name == name), None)


def _overhead_ns(results: list[Measured], name: str) -> float | None:
    bare, variant = _find(results, "bare"), _find(results, name)
    if bare is None or variant is None or bare.status != "ok" or variant.status != "ok":
        return None
    return variant.median_ns - bare.median_ns


def _why_not(results: list[Measured], *names: str) -> str:
    for name in ("bare", *names):
        measured = _find(results, name)
        if measured is None:
            return f"{name} was not run"
        if measured.status != "ok":
            return f"{name}: {measured.status}: {measured.reason}"
    return ""


def _ratio_budget(
    title: str, results: list[Measured] | None, reference: str, factor: float, factor_text: str
) -> dict[str, Any]:
    """meshprop's overhead against ``factor`` times ``reference``'s overhead."""
    if results is None:
        return {"budget": title, "result": NOT_MEASURED, "why": "suite not run"}
    mine = _overhead_ns(results, "meshprop")
    theirs = _overhead_ns(results, reference)
    if mine is None or theirs is None:
        why = _why_not(results, "meshprop", reference)
        return {"budget": title, "result": NOT_MEASURED, "why": why}
    limit = factor * theirs
    return {
        "budget": title,
        "meshprop_us": mine / 1000,
        "limit_us": limit / 1000,
        "limit": f"{factor_text} x {reference} ({theirs / 1000:+.2f} µs)",
        "result": PASS if mine <= limit else MISS,
    }


def _share_budget(title: str, results: list[Measured] | None, share: float) -> dict[str, Any]:
    """meshprop's overhead against a share of the bare call."""
    if results is None:
        return {"budget": title, "result": NOT_MEASURED, "why": "suite not run"}
    mine = _overhead_ns(results, "meshprop")
    bare = _find(results, "bare")
    if mine is None or bare is None:
        return {"budget": title, "result": NOT_MEASURED, "why": _why_not(results, "meshprop")}
    limit = share * bare.median_ns
    judged = {
        "budget": title,
        "meshprop_us": mine / 1000,
        "limit_us": limit / 1000,
        "limit": f"{share:.0%} of bare ({bare.median_ns / 1000:.1f} µs)",
        "result": PASS if mine <= limit else MISS,
    }
    explicit = _overhead_ns(results, "explicit")
    if explicit is not None:
        # What the client itself spends on the extra headers, whoever adds them.
        judged["explicit_headers_us"] = explicit / 1000
    carrying = _overhead_ns(results, "carry")
    if carrying is not None:
        # The same, attached with the least work at meshprop's hook point: what is left of
        # meshprop's overhead is its own (lookup, scope, the caller-wins check). Shown beside
        # the result only: the budget above is judged on meshprop's whole overhead.
        judged["carry_headers_us"] = carrying / 1000
        judged["meshprop_own_us"] = (mine - carrying) / 1000
    return judged


def budgets(
    suites: dict[str, list[Measured]], memory: list[MemoryResult] | None
) -> list[dict[str, Any]]:
    judged: list[dict[str, Any]] = []
    for suite, label in (("asgi-starlette", "Starlette"), ("asgi-fastapi", "FastAPI")):
        results = suites.get(suite)
        judged.append(
            _ratio_budget(
                f"ASGI ({label}): ≤ 0.5 x asgi-correlation-id's overhead",
                results,
                "asgi-correlation-id",
                0.5,
                "0.5",
            )
        )
        judged.append(
            _ratio_budget(
                f"ASGI ({label}): ≤ 1.25 x the floor's overhead", results, "floor", 1.25, "1.25"
            )
        )
    judged.append(
        _ratio_budget(
            "WSGI (Flask): ≤ ⅓ of before_request's overhead",
            suites.get("wsgi-flask"),
            "before_request",
            1 / 3,
            "⅓",
        )
    )
    for suite, label in CLIENT_SUITES.items():
        judged.append(
            _share_budget(f"Outbound ({label}): ≤ 3 % of the bare call", suites.get(suite), 0.03)
        )
    if memory is None:
        judged.append(
            {
                "budget": "Memory: no growth after warm-up",
                "result": NOT_MEASURED,
                "why": "suite not run",
            }
        )
    for probe in memory or ():
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
                "measured": f"{probe.blocks_growth:+,} blocks, {rss} RSS over "
                f"{probe.requests:,} requests",
                "limit": f"≤ {BLOCKS_LIMIT:,} blocks, ≤ {RSS_LIMIT_BYTES // 1024 // 1024} MiB RSS",
                "result": MISS if probe.grows else PASS,
            }
        )
    return judged


CLIENT_SUITES = {
    "httpx-sync": "httpx Client",
    "httpx-async": "httpx AsyncClient",
    "requests": "requests Session",
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
        "| budget | meshprop | limit | result |",
        "| --- | --- | --- | --- |",
    ]
    for budget in document["budgets"]:
        if budget["result"] == NOT_MEASURED:
            lines.append(f"| {budget['budget']} | - | - | **{NOT_MEASURED}**: {budget['why']} |")
            continue
        measured = budget.get("measured") or f"{budget['meshprop_us']:+.2f} µs"
        references = []
        if "explicit_headers_us" in budget:
            references.append(f"literal headers= alone: {budget['explicit_headers_us']:+.2f} µs")
        if "carry_headers_us" in budget:
            references.append(f"carrying them alone: {budget['carry_headers_us']:+.2f} µs")
        if references:
            measured += f" ({'; '.join(references)})"
        limit = budget["limit"]
        if "limit_us" in budget:
            limit = f"{budget['limit_us']:.2f} µs = {limit}"
        if "meshprop_own_us" in budget:
            own = budget["meshprop_own_us"]
            limit += f"; meshprop's own share (meshprop - carry): {own:+.2f} µs"
        lines.append(f"| {budget['budget']} | {measured} | {limit} | **{budget['result']}** |")

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
    "aiohttp-client": "outbound, aiohttp ClientSession to a local aiohttp server (loopback)",
    "httpx-otel": "outbound inside an OpenTelemetry span, httpx Client on MockTransport",
}
