"""How much each part does: ``local`` (the default, for a thorough run by hand) and ``ci``
(bounded so the whole run fits in four minutes on a 2-core machine)."""

from __future__ import annotations

from dataclasses import dataclass

from .serve import KINDS


@dataclass(frozen=True)
class Budget:
    name: str
    hostile_kinds: tuple[str, ...]
    hostile_seconds: float
    inflight_kinds: tuple[str, ...]
    inflight_count: int
    inflight_rounds: int
    inflight_call_every: int
    inflight_seconds: float
    abandoned_kinds: tuple[str, ...]
    abandoned_requests: int
    abandoned_seconds: float
    pipeline_kinds: tuple[str, ...]
    pipeline_connections: int
    pipeline_depth: int
    pipeline_seconds: float
    fuzz_examples: int
    fuzz_seconds: float


CI = Budget(
    name="ci",
    hostile_kinds=KINDS,
    hostile_seconds=60,
    inflight_kinds=("uvicorn-httptools", "aiohttp"),
    inflight_count=10_000,
    inflight_rounds=1,
    inflight_call_every=50,
    inflight_seconds=70,
    abandoned_kinds=("gunicorn", "waitress"),
    abandoned_requests=2000,
    abandoned_seconds=30,
    pipeline_kinds=KINDS,
    pipeline_connections=120,
    pipeline_depth=8,
    pipeline_seconds=20,
    fuzz_examples=15_000,
    fuzz_seconds=50,
)

LOCAL = Budget(
    name="local",
    hostile_kinds=KINDS,
    hostile_seconds=180,
    inflight_kinds=("uvicorn-httptools", "uvicorn-h11", "aiohttp"),
    inflight_count=10_000,
    inflight_rounds=2,
    inflight_call_every=20,
    inflight_seconds=300,
    abandoned_kinds=("gunicorn", "waitress"),
    abandoned_requests=12_000,
    abandoned_seconds=180,
    pipeline_kinds=KINDS,
    pipeline_connections=500,
    pipeline_depth=8,
    pipeline_seconds=120,
    fuzz_examples=60_000,
    fuzz_seconds=240,
)

BUDGETS = {budget.name: budget for budget in (CI, LOCAL)}
