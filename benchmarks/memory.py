"""Memory: does anything stay behind per request? Each meshprop adapter serves many requests and
the growth after warm-up is read three ways.

- Over the whole run, untraced (so it can reach a million requests): the interpreter's count of
  allocated memory blocks (``sys.getallocatedblocks``) and the process RSS (``/proc/self/statm``),
  before and after. One object kept per request shows as one block per request; RSS is what an
  operator's dashboard would show, and moves with the allocator's arenas.
- Then a shorter traced stretch: ``tracemalloc`` started after everything above, the bytes
  allocated during it that are still alive at its end (after a collection), with their sizes.

ASGI and WSGI wrap a minimal app, so any growth is the adapter's own; the aiohttp server and the
clients reuse the timing suites' set-ups. Each stretch stops at its request count or its time
limit, whichever comes first, and the report says how many requests it made.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

from . import inbound_aiohttp, outbound
from ._harness import Batch, Plan, Variant, async_batch, classify_failure, sync_batch
from ._workload import ISTIO_HEADERS, asgi_scope, wsgi_environ

#: "No growth after warm-up", judged on the long untraced run. The allowance holds bounded
#: caches, which may fill and be cleared in a sawtooth (a cache of 256 encoded snapshots was
#: about 6 500 blocks, 0.5 MB); a leak of one object per request passes it after 16 384
#: requests, and the full run makes tens of thousands or more per adapter.
BLOCKS_LIMIT = 16_384
RSS_LIMIT_BYTES = 4 * 1024 * 1024


@dataclass
class MemoryResult:
    adapter: str
    status: str = "ok"  # ok | missing | error
    reason: str = ""
    warmup_requests: int = 0
    requests: int = 0
    seconds: float = 0.0
    blocks_growth: int = 0
    rss_growth_bytes: int | None = None
    traced_requests: int = 0
    traced_growth_bytes: int = 0
    #: Where most of the traced bytes still alive were allocated ("file:line: bytes").
    traced_top: str = ""

    @property
    def grows(self) -> bool:
        rss_grows = self.rss_growth_bytes is not None and self.rss_growth_bytes > RSS_LIMIT_BYTES
        return self.blocks_growth > BLOCKS_LIMIT or rss_grows

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def probe(name: str, build: Callable[[], Batch], needs: str | None, plan: Plan) -> MemoryResult:
    """Warm up, serve the long untraced run, then the traced stretch; never raises."""
    result = MemoryResult(name)
    try:
        batch = build()
    except Exception as error:
        result.status, result.reason = classify_failure(error, needs)
        return result
    chunk = 100 if plan.quick else 1000
    # At least a few hundred requests, so bounded caches are full before the counting starts.
    result.warmup_requests = max(
        min(500, plan.memory_requests), min(plan.memory_requests // 10, 20_000)
    )
    try:
        batch(result.warmup_requests)
        gc.collect()
        rss_before = _rss_bytes()
        blocks_before = sys.getallocatedblocks()
        started = time.monotonic()
        result.requests = _serve(batch, plan.memory_requests, plan.memory_seconds, chunk)
        result.seconds = time.monotonic() - started
        gc.collect()
        result.blocks_growth = sys.getallocatedblocks() - blocks_before
        rss_after = _rss_bytes()
        if rss_before is not None and rss_after is not None:
            result.rss_growth_bytes = rss_after - rss_before

        tracemalloc.start()
        try:
            traced_limit = max(chunk, plan.memory_requests // 10)
            result.traced_requests = _serve(batch, traced_limit, plan.memory_seconds / 4, chunk)
            gc.collect()
            result.traced_growth_bytes = tracemalloc.get_traced_memory()[0]
            result.traced_top = _top_allocation(tracemalloc.take_snapshot())
        finally:
            tracemalloc.stop()
    except Exception as error:
        result.status, result.reason = classify_failure(error, None)
    return result


def _top_allocation(snapshot: tracemalloc.Snapshot) -> str:
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    statistics = snapshot.statistics("lineno")
    if not statistics:
        return ""
    top = statistics[0]
    frame = top.traceback[0]
    return f"{frame.filename}:{frame.lineno}: {top.size:,} B in {top.count:,} blocks"


def _serve(batch: Batch, requests: int, seconds: float, chunk: int) -> int:
    """Up to ``requests`` requests in chunks, stopping after ``seconds``; how many were made."""
    done = 0
    deadline = time.monotonic() + seconds
    while done < requests and time.monotonic() < deadline:
        size = min(chunk, requests - done)
        batch(size)
        done += size
    return done


async def _minimal_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def _minimal_wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def probes(
    stack: ExitStack, loop: asyncio.AbstractEventLoop
) -> list[tuple[str, Callable[[], Batch], str | None]]:
    """(adapter, build, meshprop module it needs) for every meshprop adapter."""

    def asgi() -> Batch:
        import meshprop.asgi

        app = meshprop.asgi.MeshPropMiddleware(_minimal_asgi_app)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def drop(message: Any) -> None:
            return None

        return async_batch(loop, lambda: app(asgi_scope(), receive, drop))

    def wsgi() -> Batch:
        import meshprop.wsgi

        app = meshprop.wsgi.MeshPropMiddleware(_minimal_wsgi_app)

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            return lambda data: None

        def serve() -> None:
            body = app(wsgi_environ(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()

        return sync_batch(serve)

    def otel() -> Batch:
        import meshprop.otel

        propagator = meshprop.otel.MeshPropagator()
        incoming = dict(ISTIO_HEADERS)

        def extract_and_inject() -> None:
            carrier: dict[str, str] = {}
            propagator.inject(carrier, context=propagator.extract(incoming))

        # A fresh context per call, as each request has: extract may also set meshprop's own.
        return outbound.in_request(
            sync_batch(lambda: contextvars.copy_context().run(extract_and_inject))
        )

    def meshprop_variant(variants: list[Variant]) -> Callable[[], Batch]:
        return next(variant.build for variant in variants if variant.name == "meshprop")

    def one_call_per_request(variants: list[Variant]) -> Callable[[], Batch]:
        """A client's timing batch runs all its calls in one request context; here every call
        gets a request of its own, as in a service, so per-request state is exercised too."""
        build = meshprop_variant(variants)

        def build_per_request() -> Batch:
            in_one_request = build()

            def batch(n: int) -> int:
                return sum(in_one_request(1) for _ in range(n))

            return batch

        return build_per_request

    return [
        ("asgi", asgi, "meshprop.asgi"),
        ("wsgi", wsgi, "meshprop.wsgi"),
        ("aiohttp server", meshprop_variant(inbound_aiohttp.variants(loop)), "meshprop.aiohttp"),
        (
            "httpx Client",
            one_call_per_request(outbound.httpx_sync_variants(stack)),
            "meshprop.httpx",
        ),
        (
            "httpx AsyncClient",
            one_call_per_request(outbound.httpx_async_variants(stack, loop)),
            "meshprop.httpx",
        ),
        (
            "requests Session",
            one_call_per_request(outbound.requests_variants(stack)),
            "meshprop.requests",
        ),
        (
            "aiohttp ClientSession",
            one_call_per_request(outbound.aiohttp_variants(stack, loop)),
            "meshprop.aiohttp",
        ),
        ("otel MeshPropagator", otel, "meshprop.otel"),
    ]
