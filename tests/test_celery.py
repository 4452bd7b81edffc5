"""``meshprop.celery.setup``: what a published task message carries, and the context a task runs
in, on Celery's in-memory transport and in eager mode.

The in-memory transport is the real kombu message path (the message headers are what a broker
would carry); the worker here runs in a thread of the test process. The same tasks on a real
worker process and a real Redis broker are in ``test_celery_worker.py``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (the ping task start_worker checks with)
import pytest
from celery import Celery, signals
from celery import _state as celery_state
from celery.contrib.testing.worker import start_worker

import meshprop
import meshprop.celery
from meshprop import Config
from tests.celery_app import Failed, build

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
INBOUND = {"x-request-id": "req-celery", "traceparent": TRACEPARENT}
INSPECTED = "inspected"

tasks = build("meshprop_memory_tests")
app = tasks.app


@pytest.fixture(scope="module")
def configured() -> Iterator[Celery]:
    """The app set up, on kombu's in-memory transport."""
    app.conf.update(
        broker_url="memory://",
        result_backend="cache+memory://",
        broker_transport_options={"polling_interval": 0.01},
    )
    meshprop.celery.setup(app)
    try:
        yield app
    finally:
        meshprop.celery.teardown(app)
        app.conf.update(broker_url=None, result_backend=None, broker_transport_options={})


@pytest.fixture
def set_up(configured: Celery) -> Iterator[Celery]:
    """The app set up as ``configured`` left it, whatever the test changed."""
    try:
        yield configured
    finally:
        meshprop.celery.setup(app)


@pytest.fixture
def memory_broker(set_up: Celery) -> Celery:
    """The app with an empty ``inspected`` queue, which no worker consumes."""
    with app.connection() as connection:
        queue = connection.SimpleQueue(INSPECTED)
        queue.clear()
        queue.close()
    return set_up


@pytest.fixture(scope="module")
def running_worker(configured: Celery) -> Iterator[Celery]:
    """A worker in a thread of this process, consuming the default queue; one for the module,
    as stopping it takes seconds."""
    try:
        with start_worker(configured, pool="solo", perform_ping_check=True):
            yield configured
    finally:
        # The worker's pool leaves the process marked as a worker's ("never wait for a result
        # in a task"); this process is the tests' again.
        celery_state._set_task_join_will_block(False)  # type: ignore[attr-defined]


@pytest.fixture
def worker(running_worker: Celery, set_up: Celery) -> Celery:
    return running_worker


@pytest.fixture
def eager(set_up: Celery) -> Iterator[Celery]:
    app.conf.task_always_eager = True
    try:
        yield app
    finally:
        app.conf.task_always_eager = False


def published_headers(connection_app: Celery) -> dict[str, Any]:
    """The headers of the message waiting in the ``inspected`` queue."""
    with connection_app.connection() as connection:
        queue = connection.SimpleQueue(INSPECTED)
        try:
            message = queue.get(timeout=5)
            message.ack()
            return dict(message.headers)
        finally:
            queue.close()


def receivers_of(signal: Any) -> int:
    return sum(1 for key, _ in signal.receivers if key[0] == "meshprop.celery")


def test_setup_connects_once_and_teardown_disconnects(set_up: Celery) -> None:
    meshprop.celery.setup(app)
    meshprop.celery.setup(app, config=Config(request_id_generator=None))
    for signal in (signals.before_task_publish, signals.task_prerun, signals.task_postrun):
        assert receivers_of(signal) == 1
    meshprop.celery.teardown(app)
    for signal in (signals.before_task_publish, signals.task_prerun, signals.task_postrun):
        assert receivers_of(signal) == 0


def test_a_task_published_in_a_request_carries_its_headers(memory_broker: Celery) -> None:
    tasks.record.apply_async(queue=INSPECTED)
    outside = published_headers(memory_broker)
    with meshprop.bind(INBOUND):
        result = tasks.record.apply_async(queue=INSPECTED)
    headers = published_headers(memory_broker)
    assert {name: headers[name] for name in INBOUND} == INBOUND
    assert set(headers) == set(outside) | set(INBOUND)  # Celery's own keys, and ours beside
    assert headers["id"] == result.id
    assert headers["task"] == outside["task"] == "tests.record"


def test_a_header_the_caller_set_wins(memory_broker: Celery) -> None:
    own = "00-11111111111111111111111111111111-2222222222222222-01"
    with meshprop.bind({**INBOUND, "x-b3-sampled": "1"}):
        tasks.record.apply_async(
            queue=INSPECTED, headers={"X-Request-ID": "mine", "traceparent": own}
        )
    headers = published_headers(memory_broker)
    assert headers["X-Request-ID"] == "mine"
    assert "x-request-id" not in headers
    assert headers["traceparent"] == own
    assert "x-b3-sampled" not in headers  # a trace of its own: none of the forwarded one


def test_a_task_published_outside_a_request_carries_nothing(memory_broker: Celery) -> None:
    tasks.record.apply_async(queue=INSPECTED)
    headers = published_headers(memory_broker)
    assert not set(headers) & {"x-request-id", "traceparent"}


def test_without_setup_nothing_is_added(memory_broker: Celery) -> None:
    meshprop.celery.teardown(app)
    with meshprop.bind(INBOUND):
        tasks.record.apply_async(queue=INSPECTED)
    assert "x-request-id" not in published_headers(memory_broker)


def test_the_worker_runs_a_task_in_its_publishers_context(worker: Celery) -> None:
    with meshprop.bind(INBOUND):
        result = tasks.record.delay()
    seen = result.get(timeout=10)
    assert seen["request_id"] == "req-celery"
    assert seen["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert seen["forwarded"] == INBOUND


def test_a_task_published_by_a_task_carries_the_context_on(worker: Celery) -> None:
    with meshprop.bind(INBOUND):
        parent = tasks.publish_child.delay().get(timeout=10)
    child = worker.AsyncResult(parent["child_id"]).get(timeout=10)
    assert parent["seen"]["forwarded"] == child["forwarded"] == INBOUND


def test_a_task_published_outside_a_request_gets_a_new_id(worker: Celery) -> None:
    first = tasks.record.delay().get(timeout=10)
    second = tasks.record.delay().get(timeout=10)
    assert first["request_id"] and second["request_id"]
    assert first["request_id"] != second["request_id"]
    assert first["left_behind"] is second["left_behind"] is None
    assert first["forwarded"] == {"x-request-id": first["request_id"]}


def test_after_a_failed_task_the_next_one_starts_clean(worker: Celery) -> None:
    with meshprop.bind(INBOUND), pytest.raises(Failed) as failure:
        tasks.fail.delay().get(timeout=10)
    failed = json.loads(str(failure.value))
    after = tasks.record.delay().get(timeout=10)
    assert failed["request_id"] == "req-celery"
    assert after["thread"] == failed["thread"]  # the solo pool: the same thread
    assert after["left_behind"] is None
    assert after["request_id"] != "req-celery"
    assert after["trace_id"] is None


def test_a_retried_task_keeps_its_context_and_the_next_one_starts_clean(worker: Celery) -> None:
    with meshprop.bind(INBOUND):
        runs = tasks.retry_once.delay().get(timeout=10)["runs"]
    after = tasks.record.delay().get(timeout=10)
    assert [run["request_id"] for run in runs] == ["req-celery", "req-celery"]
    assert [run["left_behind"] for run in runs] == [None, None]
    assert after["left_behind"] is None
    assert after["request_id"] != "req-celery"


def test_a_worker_of_an_app_without_setup_binds_nothing(worker: Celery) -> None:
    other = Celery("other", set_as_current=False)
    meshprop.celery.setup(other)
    meshprop.celery.teardown(app)  # the signals stay connected for `other`
    try:
        with meshprop.bind(INBOUND):
            seen = tasks.record.apply_async(headers=INBOUND).get(timeout=10)
        assert seen["request_id"] is None
    finally:
        meshprop.celery.teardown(other)


def test_an_eager_task_runs_in_the_callers_context(eager: Celery) -> None:
    with meshprop.bind(INBOUND) as forwarded:
        outer = meshprop.current()
        seen = tasks.record.delay().get()
        assert meshprop.current() is outer  # the caller's context is back
        assert dict(forwarded) == INBOUND
    assert seen["forwarded"] == INBOUND


def test_an_eager_task_prefers_the_headers_it_was_given(eager: Celery) -> None:
    with meshprop.bind(INBOUND):
        seen = tasks.record.apply(headers={"x-request-id": "given"}).get()
    assert seen["request_id"] == "given"
    assert seen["forwarded"]["traceparent"] == TRACEPARENT


def test_an_eager_task_outside_a_request_gets_a_new_id(eager: Celery) -> None:
    seen = tasks.record.delay().get()
    assert seen["request_id"] is not None
    assert meshprop.request_id() is None


def test_eager_tasks_reset_after_failure_and_retry(eager: Celery) -> None:
    with meshprop.bind(INBOUND):
        with pytest.raises(Failed):
            tasks.fail.apply(throw=True)
        assert meshprop.request_id() == "req-celery"
        runs = tasks.retry_once.apply().get()["runs"]
        assert [run["request_id"] for run in runs] == ["req-celery", "req-celery"]
        assert meshprop.request_id() == "req-celery"


def test_an_eager_task_inside_an_eager_task(eager: Celery) -> None:
    with meshprop.bind(INBOUND):
        parent = tasks.publish_child.delay().get()
        assert meshprop.request_id() == "req-celery"
    child = eager.AsyncResult(parent["child_id"])
    assert parent["seen"]["request_id"] == "req-celery"
    assert child.id == parent["child_id"]


def test_the_config_can_turn_id_generation_off(eager: Celery) -> None:
    meshprop.celery.setup(app, config=Config(request_id_generator=None))
    seen = tasks.record.delay().get()
    assert seen["request_id"] is None
    assert seen["forwarded"] == {}


def test_eager_tasks_in_many_threads_keep_their_own_context(eager: Celery) -> None:
    count = 64
    start = threading.Barrier(8)

    def run(index: int) -> dict[str, Any]:
        if index < 8:
            start.wait(timeout=10)  # the first eight at once
        with meshprop.bind({"x-request-id": f"req-{index}"}):
            result = tasks.record_slowly.delay(0.001).result
            assert meshprop.request_id() == f"req-{index}"
        assert isinstance(result, dict)
        return result

    with ThreadPoolExecutor(max_workers=8) as executor:
        results = list(executor.map(run, range(count)))
    for index, result in enumerate(results):
        assert result["before"]["request_id"] == result["after"]["request_id"] == f"req-{index}"
