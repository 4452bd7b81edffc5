"""The Celery apps of the Celery tests: tasks that report the context they ran in.

``build(main)`` makes an app with the tests' tasks. An app keeps its broker connections and its
result backend once it has used them, so each test module that talks to a different broker
builds its own; ``app`` is the one the worker processes run (``tests.celery_worker``) and
``test_celery_worker.py`` publishes to. Nothing here calls ``meshprop.celery.setup``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, Task, current_task, signals

import meshprop

Seen = dict[str, Any]

#: The request id the thread's context held as each task started, before meshprop bound the
#: task's own (this receiver is connected first): an id here is one an earlier task left behind.
_left_behind: dict[str, str | None] = {}


@signals.task_prerun.connect(weak=False, dispatch_uid="tests.celery_app.left_behind")
def _note_what_was_left_behind(task_id: str, **_: Any) -> None:
    _left_behind[task_id] = meshprop.request_id()


def seen() -> Seen:
    """What the running task sees of its context, and where it runs."""
    return {
        "left_behind": _left_behind.pop(str(current_task.request.id), "(not noted)"),
        "request_id": meshprop.request_id(),
        "trace_id": meshprop.trace_id(),
        "forwarded": dict(meshprop.current()),
        "pid": os.getpid(),
        "thread": threading.get_ident(),
    }


class Failed(Exception):
    """A task's failure that tells what the task saw (a JSON text, so any result backend keeps
    it)."""


@dataclass(frozen=True)
class Tasks:
    app: Celery
    record: Task[Any, Any]
    record_slowly: Task[Any, Any]
    publish_child: Task[Any, Any]
    fail: Task[Any, Any]
    retry_once: Task[Any, Any]


def build(main: str) -> Tasks:
    """A new app with the tests' tasks, its own alone (``shared=False``: Celery would otherwise
    give them to every app made later)."""
    app = Celery(main, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        result_expires=600,
    )

    @app.task(name="tests.record", shared=False)
    def record() -> Seen:
        return seen()

    @app.task(name="tests.record_slowly", shared=False)
    def record_slowly(seconds: float) -> dict[str, Seen]:
        """The context before and after a pause, with other tasks running meanwhile."""
        before = seen()
        time.sleep(seconds)
        return {"before": before, "after": seen()}

    @app.task(name="tests.publish_child", bind=True, shared=False)
    def publish_child(self: Task[Any, Any]) -> dict[str, Any]:
        """Publish ``record`` from inside this task, on the same queue; report both ends."""
        delivery_info = self.request.delivery_info or {}
        child = record.apply_async(queue=delivery_info.get("routing_key") or "celery")
        return {"seen": seen(), "child_id": child.id}

    @app.task(name="tests.fail", shared=False)
    def fail() -> None:
        raise Failed(json.dumps(seen()))

    @app.task(name="tests.retry_once", bind=True, shared=False)
    def retry_once(self: Task[Any, Any], runs: list[Seen] | None = None) -> dict[str, Any]:
        """Fails its first run with a retry, then reports what each run saw."""
        runs = [*(runs or []), seen()]
        if self.request.retries == 0:
            raise self.retry(kwargs={"runs": runs}, countdown=0, max_retries=1)
        return {"runs": runs}

    return Tasks(app, record, record_slowly, publish_child, fail, retry_once)


worker_tasks = build("meshprop_tests")
app = worker_tasks.app
