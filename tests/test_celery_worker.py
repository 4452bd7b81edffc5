"""``meshprop.celery`` on real worker processes and a real Redis broker (Debian's redis-server),
all on 127.0.0.1.

Two workers, started once for the module: ``prefork`` (one child process, so every task runs
where the one before it ran) and ``threads`` (eight threads of one process, tasks overlapping).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

import meshprop
import meshprop.celery
from integrations._celery import Worker, running_redis, running_workers
from tests.celery_app import Failed, app, worker_tasks

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
INBOUND = {
    "x-request-id": "req-worker",
    "traceparent": TRACEPARENT,
    "tracestate": "congo=t61rcWkgMzE",
    "x-b3-sampled": "1",
}
WORKERS = (Worker("prefork", "prefork", 1), Worker("threads", "threads", 8))
QUEUES = [worker.queue for worker in WORKERS]
RESULT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def workers() -> Iterator[Celery]:
    with running_redis() as redis_url:
        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        meshprop.celery.setup(app)
        try:
            with running_workers("tests.celery_worker", app, WORKERS, "tests.record"):
                yield app
        finally:
            meshprop.celery.teardown(app)
            app.conf.update(broker_url=None, result_backend=None)


def result_of(task_id: str) -> Any:
    return app.AsyncResult(task_id).get(timeout=RESULT_TIMEOUT)


@pytest.mark.parametrize("queue", QUEUES)
def test_a_request_its_task_and_the_sub_task_see_one_id_and_trace(
    workers: Celery, queue: str
) -> None:

    with meshprop.bind(INBOUND):
        parent = worker_tasks.publish_child.apply_async(queue=queue).get(timeout=RESULT_TIMEOUT)
    child = result_of(parent["child_id"])
    for seen in (parent["seen"], child):
        assert seen["forwarded"] == INBOUND  # verbatim, tracestate and all
        assert seen["request_id"] == "req-worker"
        assert seen["trace_id"] == TRACE_ID
        assert seen["left_behind"] is None
        assert seen["pid"] != os.getpid()


@pytest.mark.parametrize("queue", QUEUES)
def test_a_task_published_outside_a_request_gets_a_new_id(workers: Celery, queue: str) -> None:

    first, second = (worker_tasks.record.apply_async(queue=queue) for _ in range(2))
    seen = [first.get(timeout=RESULT_TIMEOUT), second.get(timeout=RESULT_TIMEOUT)]
    ids = [one["request_id"] for one in seen]
    assert None not in ids and ids[0] != ids[1]
    assert [one["forwarded"] for one in seen] == [{"x-request-id": id_} for id_ in ids]


def later_tasks(queue: str, count: int = 16) -> list[dict[str, Any]]:
    """Tasks sent outside any request after another task: what each of them saw."""

    results = [worker_tasks.record.apply_async(queue=queue) for _ in range(count)]
    return [result.get(timeout=RESULT_TIMEOUT) for result in results]


@pytest.mark.parametrize("queue", QUEUES)
def test_after_a_failed_task_the_next_tasks_start_clean(workers: Celery, queue: str) -> None:

    with meshprop.bind(INBOUND), pytest.raises(Failed) as failure:
        worker_tasks.fail.apply_async(queue=queue).get(timeout=RESULT_TIMEOUT)
    failed = json.loads(str(failure.value))
    assert failed["request_id"] == "req-worker"
    after = later_tasks(queue)
    if queue == "prefork":
        assert {seen["pid"] for seen in after} == {failed["pid"]}  # one child: the same process
    assert [seen["left_behind"] for seen in after] == [None] * len(after)
    assert "req-worker" not in {seen["request_id"] for seen in after}
    assert {seen["trace_id"] for seen in after} == {None}


@pytest.mark.parametrize("queue", QUEUES)
def test_a_retried_task_keeps_its_context_and_the_next_tasks_start_clean(
    workers: Celery, queue: str
) -> None:

    with meshprop.bind(INBOUND):
        runs = worker_tasks.retry_once.apply_async(queue=queue).get(timeout=RESULT_TIMEOUT)["runs"]
    assert [run["request_id"] for run in runs] == ["req-worker", "req-worker"]
    assert [run["forwarded"] for run in runs] == [INBOUND, INBOUND]
    assert [run["left_behind"] for run in runs] == [None, None]
    after = later_tasks(queue)
    if queue == "prefork":
        assert {seen["pid"] for seen in after} == {runs[0]["pid"]}
    assert [seen["left_behind"] for seen in after] == [None] * len(after)
    assert "req-worker" not in {seen["request_id"] for seen in after}


def test_tasks_running_at_once_in_threads_keep_their_own_context(workers: Celery) -> None:
    """Many requests, each publishing a task that pauses while the others run on the same
    worker's threads: every task sees its own request from start to end."""

    results = []
    for index in range(200):
        headers = {"x-request-id": f"req-{index}", "x-b3-traceid": f"{index + 1:032x}",
                   "x-b3-spanid": f"{index + 1:016x}"}  # fmt: skip
        with meshprop.bind(headers):
            results.append(worker_tasks.record_slowly.apply_async(args=(0.02,), queue="threads"))
    threads = set()
    for index, result in enumerate(results):
        seen = result.get(timeout=RESULT_TIMEOUT)
        for moment in ("before", "after"):
            assert seen[moment]["request_id"] == f"req-{index}"
            assert seen[moment]["trace_id"] == f"{index + 1:032x}"
        assert seen["before"]["left_behind"] is None
        threads.add(seen["before"]["thread"])
    assert len(threads) > 1  # they did overlap
