"""Timing variants against each other in one run, interleaved round by round.

A variant is built once and then timed as batches of calls (``Batch``: run ``n`` requests,
return the nanoseconds they took). Every round times one batch of each variant, starting at a
different variant each round, so a slow phase of the machine (another process waking up, a
frequency change) lands on all variants alike instead of on whichever ran then. The garbage
collector is collected before and disabled during each batch, so a collection triggered by one
variant's garbage is not billed to another.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

#: Runs ``n`` requests and returns how many nanoseconds they took.
Batch = Callable[[int], int]


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or the quick smoke run CI uses."""

    quick: bool
    rounds: int
    batch_seconds: float
    min_batch: int
    max_batch: int
    memory_requests: int
    memory_seconds: float
    socket_rounds: int
    socket_seconds: float

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


FULL = Plan(
    quick=False,
    rounds=21,
    batch_seconds=0.02,
    min_batch=200,
    max_batch=2000,
    memory_requests=1_000_000,
    memory_seconds=30.0,
    socket_rounds=9,
    socket_seconds=2.0,
)
QUICK = Plan(
    quick=True,
    rounds=3,
    batch_seconds=0.002,
    min_batch=10,
    max_batch=100,
    memory_requests=1_000,
    memory_seconds=0.5,
    socket_rounds=2,
    socket_seconds=0.5,
)


@dataclass
class Variant:
    """One way of serving (or sending) the benchmark request."""

    name: str
    build: Callable[[], Batch]
    #: Which meshprop module the variant needs, to report a missing adapter as such.
    needs: str | None = None
    #: What the variant switches on for the whole process (``instrument()``), entered around
    #: its build and around each of its batches, never inside the timed loop: a patch that
    #: stayed on would change every other variant too.
    around: Callable[[], AbstractContextManager[object]] = nullcontext


@dataclass
class Measured:
    """What one variant gave: per-call nanoseconds for each round, or why there are none."""

    name: str
    status: str = "ok"  # ok | missing | error
    reason: str = ""
    batch_size: int = 0
    per_call_ns: list[float] = field(default_factory=list)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.per_call_ns)

    @property
    def quartiles_ns(self) -> tuple[float, float]:
        samples = self.per_call_ns
        if len(samples) < 2:
            return samples[0], samples[0]
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return q1, q3

    def as_dict(self, bare: Measured | None) -> dict[str, Any]:
        result: dict[str, Any] = {"name": self.name, "status": self.status}
        if self.status != "ok":
            result["reason"] = self.reason
            return result
        q1, q3 = self.quartiles_ns
        result.update(
            median_us=self.median_ns / 1000,
            q1_us=q1 / 1000,
            q3_us=q3 / 1000,
            iqr_us=(q3 - q1) / 1000,
            rounds=len(self.per_call_ns),
            batch_size=self.batch_size,
            per_call_us=[sample / 1000 for sample in self.per_call_ns],
        )
        if bare is not None and bare.status == "ok" and bare is not self:
            result["overhead_us"] = (self.median_ns - bare.median_ns) / 1000
            result["ratio_to_bare"] = self.median_ns / bare.median_ns
            paired = [v - b for v, b in zip(self.per_call_ns, bare.per_call_ns, strict=False)]
            result["overhead_paired_median_us"] = statistics.median(paired) / 1000
        return result


def classify_failure(error: BaseException, needs: str | None) -> tuple[str, str]:
    """ "missing" when the meshprop adapter a variant needs is not there (yet), else "error"."""
    if needs is not None and isinstance(error, ImportError | AttributeError):
        missing_module = getattr(error, "name", None)
        if missing_module == needs or needs in str(error) or missing_module is None:
            return "missing", f"{needs} is not available: {type(error).__name__}: {error}"
    summary = traceback.format_exception_only(type(error), error)[-1].strip()
    return "error", summary


def timed_batch(batch: Batch, n: int) -> int:
    """One batch with the collector out of the way."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return batch(n)
    finally:
        if was_enabled:
            gc.enable()


def measure(variants: list[Variant], plan: Plan, log: Callable[[str], None]) -> list[Measured]:
    """Build every variant, size its batch, then time all of them interleaved."""
    results: list[Measured] = []
    batches: list[tuple[Measured, Variant, Batch]] = []
    for variant in variants:
        measured = Measured(variant.name)
        results.append(measured)
        try:
            with variant.around():
                batch = variant.build()
                measured.batch_size = _batch_size(batch, plan)
        except Exception as error:
            measured.status, measured.reason = classify_failure(error, variant.needs)
            log(f"    {variant.name}: {measured.status.upper()}: {measured.reason}")
            continue
        batches.append((measured, variant, batch))

    for round_index in range(plan.rounds):
        start = round_index % len(batches) if batches else 0
        for measured, variant, batch in batches[start:] + batches[:start]:
            if measured.status != "ok":
                continue
            try:
                with variant.around():
                    elapsed = timed_batch(batch, measured.batch_size)
            except Exception as error:
                measured.status = "error"
                measured.reason = traceback.format_exception_only(type(error), error)[-1].strip()
                log(f"    {measured.name}: ERROR: {measured.reason}")
                continue
            measured.per_call_ns.append(elapsed / measured.batch_size)
    for measured in results:
        if measured.status == "ok" and not measured.per_call_ns:
            measured.status, measured.reason = "error", "no round completed"
    return results


def _batch_size(batch: Batch, plan: Plan) -> int:
    """Warm the variant up and pick a batch size that takes about ``plan.batch_seconds``."""
    timed_batch(batch, plan.min_batch)
    per_call = max(timed_batch(batch, plan.min_batch) / plan.min_batch, 1.0)
    wanted = int(plan.batch_seconds * 1e9 / per_call)
    return max(plan.min_batch, min(plan.max_batch, wanted))


def sync_batch(call: Callable[[], object]) -> Batch:
    """A batch of ``call()``; the loop itself costs the same for every variant."""

    def batch(n: int) -> int:
        perf_counter_ns = time.perf_counter_ns
        started = perf_counter_ns()
        for _ in range(n):
            call()
        return perf_counter_ns() - started

    return batch


def async_batch(loop: asyncio.AbstractEventLoop, call: Callable[[], Awaitable[object]]) -> Batch:
    """A batch of ``await call()`` inside one coroutine on ``loop``: no loop start per call."""

    async def run(n: int) -> int:
        perf_counter_ns = time.perf_counter_ns
        started = perf_counter_ns()
        for _ in range(n):
            await call()
        return perf_counter_ns() - started

    def batch(n: int) -> int:
        return loop.run_until_complete(run(n))

    return batch
