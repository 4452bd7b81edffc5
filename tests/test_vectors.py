"""The B3 and W3C trace-context test vectors (tests/vectors/*.json), run through every entry point.

Each case is data: inbound header pairs, the headers meshprop must forward (besides the request
id), and the trace and span ids it must report. Where meshprop differs from the public suite the
case came from, the case carries a ``note`` saying why (DESIGN.md §3 is the product spec).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

import meshprop
from meshprop._capture import capture_asgi, capture_environ, capture_pairs
from meshprop._config import DEFAULT_CONFIG
from meshprop._plan import plan_for
from meshprop._snapshot import Snapshot

# Every rule is checked with the fast matcher and with the general path alone.
pytestmark = pytest.mark.usefixtures("capture_path")

VECTORS = Path(__file__).parent / "vectors"
REQUEST_ID = "vector-request-id"


def _load_cases() -> list[Any]:
    params = []
    for path in sorted(VECTORS.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            params.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return params


def _environ(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """What a WSGI server hands the app: repeated headers joined with commas (as gunicorn does)."""
    environ: dict[str, str] = {}
    for name, value in pairs:
        key = "HTTP_" + name.upper().replace("-", "_")
        raw = value.encode("utf-8").decode("latin-1")
        environ[key] = environ[key] + "," + raw if key in environ else raw
    return environ


def _via_bind(pairs: list[tuple[str, str]]) -> tuple[Mapping[str, str], Any, Any]:
    with meshprop.bind(pairs):
        return dict(meshprop.current()), meshprop.trace_id(), meshprop.span_id()


def _from_snapshot(snapshot: Snapshot) -> tuple[Mapping[str, str], Any, Any]:
    return snapshot.headers, snapshot.trace_id, snapshot.span_id


ROUTES: dict[str, Callable[[list[tuple[str, str]]], tuple[Mapping[str, str], Any, Any]]] = {
    "bind": _via_bind,
    "pairs": lambda pairs: _from_snapshot(capture_pairs(pairs, plan_for(DEFAULT_CONFIG))),
    "asgi": lambda pairs: _from_snapshot(
        capture_asgi(
            # ASGI servers deliver lower-case names and the raw bytes of the value.
            [(n.lower().encode("latin-1"), v.encode("utf-8")) for n, v in pairs],
            plan_for(DEFAULT_CONFIG),
        )
    ),
    "environ": lambda pairs: _from_snapshot(
        capture_environ(_environ(pairs), plan_for(DEFAULT_CONFIG))
    ),
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("case", _load_cases())
def test_vector(case: dict[str, Any], route: str) -> None:
    pairs = [("x-request-id", REQUEST_ID), *((name, value) for name, value in case["headers"])]
    headers, trace_id, span_id = ROUTES[route](pairs)
    assert dict(headers) == {"x-request-id": REQUEST_ID, **case["forwarded"]}
    assert (trace_id, span_id) == (case["trace_id"], case["span_id"])


def test_every_vector_file_is_well_formed() -> None:
    files = sorted(VECTORS.glob("*.json"))
    assert [path.name for path in files] == ["b3.json", "w3c.json"]
    for path in files:
        cases = json.loads(path.read_text(encoding="utf-8"))["cases"]
        names = [case["name"] for case in cases]
        assert len(names) == len(set(names)), f"{path.name} repeats a case name"
        for case in cases:
            assert set(case) <= {
                "name",
                "source",
                "headers",
                "forwarded",
                "trace_id",
                "span_id",
                "note",
            }
            assert all(len(pair) == 2 for pair in case["headers"])
