"""``make demo`` runs on its own, stops by itself, and prints a table a person can read."""

from __future__ import annotations

import subprocess
import sys

from ._mesh import PROJECT_ROOT, child_environment
from ._report import ISTIO_HEADERS


def test_demo_exits_zero_and_prints_every_hop() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "integrations.demo"],
        cwd=PROJECT_ROOT,
        env=child_environment(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
    output = finished.stdout
    assert output.count("x-request-id  ") == 2  # one table header per request
    rows = [line for line in output.splitlines() if line[:1].isdigit() and "/" in line]
    assert [row.split()[1] for row in rows] == ["productpage", "reviews", "ratings"] * 2
    assert all(row.rstrip().endswith("yes") for row in rows)
    istio_rows = rows[:3]
    for row in istio_rows:
        assert ISTIO_HEADERS["x-request-id"] in row
        assert row.count(ISTIO_HEADERS["x-b3-traceid"]) == 2  # the B3 and W3C columns
    assert output.rstrip().endswith("All hops matched.")
