"""The snapshot's lifetime: what a request sees, and that nothing outlives it."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

import meshprop
from meshprop._snapshot import CURRENT, Snapshot, exception_request_id, mark_exception

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_outside_a_request_everything_is_empty() -> None:
    assert dict(meshprop.current()) == {}
    assert meshprop.request_id() is None
    assert meshprop.trace_id() is None
    assert meshprop.span_id() is None


def test_current_is_read_only_inside_a_request() -> None:
    with meshprop.bind({"x-request-id": "r1", "traceparent": TRACEPARENT}) as forwarded:
        current = meshprop.current()
        assert current is forwarded
        assert dict(current) == {"x-request-id": "r1", "traceparent": TRACEPARENT}
        with pytest.raises(TypeError):
            current["x-request-id"] = "changed"  # type: ignore[index]
        assert meshprop.request_id() == "r1"
        assert meshprop.trace_id() == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert meshprop.span_id() == "00f067aa0ba902b7"


def test_bind_resets_on_exit() -> None:
    with meshprop.bind({"x-request-id": "r1"}):
        pass
    assert CURRENT.get() is None
    assert meshprop.request_id() is None


def test_bind_resets_on_exception() -> None:
    with pytest.raises(RuntimeError), meshprop.bind({"x-request-id": "r1"}):
        raise RuntimeError("boom")
    assert CURRENT.get() is None


def test_nested_bind_restores_the_outer_request() -> None:
    with meshprop.bind({"x-request-id": "outer"}):
        with meshprop.bind({"x-request-id": "inner"}):
            assert meshprop.request_id() == "inner"
        assert meshprop.request_id() == "outer"
        with pytest.raises(ValueError), meshprop.bind({"x-request-id": "failing"}):
            raise ValueError
        assert meshprop.request_id() == "outer"
    assert meshprop.request_id() is None


def test_wrap_captures_the_context_when_wrap_is_called() -> None:
    with meshprop.bind({"x-request-id": "at-wrap-time"}):
        wrapped = meshprop.wrap(meshprop.request_id)
    with meshprop.bind({"x-request-id": "at-call-time"}):
        assert wrapped() == "at-wrap-time"
    assert wrapped() == "at-wrap-time"
    assert meshprop.request_id() is None


def test_wrap_keeps_the_function_and_its_arguments() -> None:
    def describe(prefix: str, *, suffix: str) -> str:
        return f"{prefix}{meshprop.request_id()}{suffix}"

    with meshprop.bind({"x-request-id": "r1"}):
        wrapped = meshprop.wrap(describe)
    assert wrapped("<", suffix=">") == "<r1>"
    assert wrapped.__name__ == "describe"


def test_wrap_works_in_an_executor() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert pool.submit(meshprop.request_id).result(timeout=10) is None
        with meshprop.bind({"x-request-id": "r-pool"}):
            plain = pool.submit(meshprop.request_id).result(timeout=10)
            wrapped = pool.submit(meshprop.wrap(meshprop.request_id)).result(timeout=10)
    assert plain is None  # executors do not carry the context by themselves
    assert wrapped == "r-pool"


def test_one_wrapped_function_runs_in_two_threads_at_once() -> None:
    barrier = threading.Barrier(2, timeout=10)
    seen: list[tuple[str | None, str | None]] = []

    def work() -> None:
        before = meshprop.request_id()
        barrier.wait()  # both threads are inside the wrapped call now
        with meshprop.bind({"x-request-id": threading.current_thread().name}):
            barrier.wait()
        seen.append((before, meshprop.request_id()))

    with meshprop.bind({"x-request-id": "shared"}):
        wrapped = meshprop.wrap(work)
    threads = [threading.Thread(target=wrapped, name=f"t{i}") for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == [("shared", "shared"), ("shared", "shared")]


def test_no_leak_between_asyncio_tasks() -> None:
    # asyncio.run, not an async test: the core tests run without any pytest plugin.
    log: list[str] = []
    asyncio.run(asyncio.wait_for(_overlapping_requests(log), timeout=10))
    assert log == ["r1 in: r1", "bystander: None", "r2 in: r2", "r2 out: r2", "r1 out: r1"]
    assert meshprop.request_id() is None


async def _overlapping_requests(log: list[str]) -> None:
    """r1 stays inside its request while a bystander task and a whole r2 request run."""
    started = asyncio.Event()

    async def request(request_id: str, wait_for: asyncio.Event | None) -> None:
        with meshprop.bind({"x-request-id": request_id}):
            log.append(f"{request_id} in: {meshprop.request_id()}")
            started.set()
            if wait_for is not None:
                await wait_for.wait()
            await asyncio.sleep(0)
            log.append(f"{request_id} out: {meshprop.request_id()}")

    async def bystander() -> None:
        await started.wait()
        log.append(f"bystander: {meshprop.request_id()}")

    release = asyncio.Event()
    first = asyncio.create_task(request("r1", release))
    other = asyncio.create_task(bystander())
    await asyncio.wait_for(other, timeout=10)
    second = asyncio.create_task(request("r2", None))
    await asyncio.wait_for(second, timeout=10)
    release.set()
    await asyncio.wait_for(first, timeout=10)


def test_mark_exception_remembers_the_request_id() -> None:
    error = RuntimeError("boom")
    assert exception_request_id(error) is None
    mark_exception(error, Snapshot({}, "r-failed", None, None))
    assert exception_request_id(error) == "r-failed"


def test_mark_exception_without_a_request_id_or_on_a_slotted_exception() -> None:
    error = ValueError()
    mark_exception(error, Snapshot({}, None, None, None))
    assert exception_request_id(error) is None

    class Slotted(Exception):
        __slots__ = ()  # an Exception subclass keeps its instance dict all the same

    class Frozen(BaseException):
        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(name)

    slotted, frozen = Slotted(), Frozen()
    mark_exception(slotted, Snapshot({}, "r1", None, None))
    mark_exception(frozen, Snapshot({}, "r1", None, None))  # must not raise
    assert exception_request_id(slotted) == "r1"
    assert exception_request_id(frozen) is None


def test_the_snapshot_repr_shows_the_headers() -> None:
    assert repr(Snapshot({"b3": "1"}, None, None, None)) == "Snapshot({'b3': '1'})"
