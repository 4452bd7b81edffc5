"""Smoke test of the benchmark runner: every suite runs, reports and writes its files.

No timing is asserted (speed is judged by reading the report, never by a test): a tiny plan
checks only that each variant builds, answers correctly and gets a number, and that a missing
meshprop adapter is reported as such instead of crashing the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from benchmarks import _instruction_probe, _report, _run, instructions, sockets
from benchmarks._harness import QUICK, Variant, measure

TINY = dataclasses.replace(
    QUICK,
    rounds=2,
    batch_seconds=0.0,
    min_batch=2,
    max_batch=2,
    memory_requests=200,
    memory_seconds=0.2,
    socket_rounds=1,
    socket_seconds=0.2,
)


def _truly_absent(reason: str) -> bool:
    """A variant may be "missing" only if its meshprop module really is not there (yet)."""
    module = reason.split(" is not available", 1)[0]
    return module.startswith("meshprop.") and importlib.util.find_spec(module) is None


def _silent(line: str) -> None:
    return None


def test_every_in_process_suite_measures_every_variant(tmp_path: Path) -> None:
    suites = (*_run.TIMING_SUITES, "memory")
    document = _run.run(TINY, suites, tmp_path, log=_silent)

    assert set(document["suites"]) == set(_run.TIMING_SUITES)
    for suite, rows in document["suites"].items():
        names = [row["name"] for row in rows]
        assert names[0] == "bare" and "meshprop" in names, suite
        for row in rows:
            if row["status"] == "ok":
                assert row["median_us"] > 0 and len(row["per_call_us"]) == TINY.rounds
            else:
                assert row["status"] == "missing" and _truly_absent(row["reason"]), row
    for probe in document["memory"]:
        assert probe["status"] == "ok" or _truly_absent(probe["reason"]), probe
        if probe["status"] == "ok":
            assert probe["requests"] > 0
    assert not _run.has_errors(document), document["problems"]
    assert {budget["result"] for budget in document["budgets"]} <= {"PASS", "MISS", "NOT MEASURED"}
    for suite in _report.CLIENT_SUITES:
        rows = {row["name"]: row for row in document["suites"][suite]}
        # Built only if the server received the forwarded x-request-id.
        assert rows["carry"]["status"] == "ok", suite
    outbound = [b for b in document["budgets"] if b["budget"].startswith("Outbound")]
    assert len(outbound) == 2 * len(_report.CLIENT_SUITES)

    written = json.loads((tmp_path / "quick.json").read_text(encoding="utf-8"))
    assert written["budgets"] == document["budgets"]
    report = (tmp_path / "quick.md").read_text(encoding="utf-8")
    assert "## Budgets" in report and "## In-process: ASGI, Starlette" in report
    assert "meshprop - carry" in report


def test_sockets_suite_loads_uvicorn_bare_and_with_meshprop() -> None:
    outcome = sockets.run(TINY, _silent)

    assert outcome["status"] == "ok", outcome.get("reason")
    assert set(outcome["requests_per_second"]) == {"bare", "meshprop"}
    assert outcome["throughput_ratio"] > 0


def test_a_missing_adapter_is_reported_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "meshprop.asgi", None)  # import now fails as if absent

    document = _run.run(TINY, ["asgi-starlette", "sockets"], tmp_path, log=_silent)

    rows = {row["name"]: row for row in document["suites"]["asgi-starlette"]}
    assert rows["meshprop"]["status"] == "missing"
    assert "meshprop.asgi" in rows["meshprop"]["reason"]
    assert rows["asgi-correlation-id"]["status"] == "ok"
    assert document["sockets"]["status"] == "missing"
    starlette_budgets = [b for b in document["budgets"] if "Starlette" in b["budget"]]
    assert [b["result"] for b in starlette_budgets] == ["NOT MEASURED", "NOT MEASURED"]
    assert "asgi-starlette / meshprop-read not measured" in starlette_budgets[0]["why"]
    assert not _run.has_errors(document)
    assert "**MISSING**: meshprop.asgi is not available" in document["markdown"]


def test_a_variant_that_fails_is_an_error_not_a_crash() -> None:
    def broken() -> object:
        raise RuntimeError("the app answered 500, not 200")

    results = measure(
        [Variant("bare", lambda: lambda n: n), Variant("broken", broken)],  # type: ignore[arg-type]
        TINY,
        _silent,
    )

    assert [r.status for r in results] == ["ok", "error"]
    assert "answered 500" in results[1].reason


def test_command_line_quick_run_writes_its_files(tmp_path: Path) -> None:
    exit_code = _run.main(["--quick", "--only", "wsgi-flask", "--output", str(tmp_path)])

    assert exit_code == 0
    assert (
        json.loads((tmp_path / "quick.json").read_text(encoding="utf-8"))["run"]["mode"] == "quick"
    )


@pytest.mark.parametrize(
    ("suite", "variant"),
    [(suite, variant) for suite in instructions.SUITES for variant in ("bare", "meshprop")],
)
def test_the_instruction_probe_runs_each_budget_suite(suite: str, variant: str) -> None:
    """What ``python -m benchmarks.instructions`` runs under callgrind, here without it."""
    _instruction_probe.run(suite, variant, 3)
