"""The Celery app of the Celery tests: tasks that report the context they ran in.

The test process and the worker processes import this module alike; it sets nothing up, so
importing it connects no signal. The worker's entry point, ``tests.celery_worker``, calls
``meshprop.celery.setup``; the tests call it themselves.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

from celery import Celery, Task, current_task, signals

import meshprop

app = Celery("meshprop_tests", set_as_current=False)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    result_expires=600,
)

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


@app.task(name="tests.record")
def record() -> Seen:
    return seen()


@app.task(name="tests.record_slowly")
def record_slowly(seconds: float) -> dict[str, Seen]:
    """The context before and after a pause, with other tasks running meanwhile."""
    before = seen()
    time.sleep(seconds)
    return {"before": before, "after": seen()}


@app.task(name="tests.publish_child", bind=True)
def publish_child(self: Task[Any, Any]) -> dict[str, Any]:
    """Publish ``record`` from inside this task, on the same queue, and report both ends."""
    delivery_info = self.request.delivery_info or {}
    child = record.apply_async(queue=delivery_info.get("routing_key") or "celery")
    return {"seen": seen(), "child_id": child.id}


class Failed(Exception):
    """A task's failure that tells what the task saw (a JSON text, so any result backend keeps
    it)."""


@app.task(name="tests.fail")
def fail() -> None:
    raise Failed(json.dumps(seen()))


@app.task(name="tests.retry_once", bind=True)
def retry_once(self: Task[Any, Any], runs: list[Seen] | None = None) -> dict[str, Any]:
    """Fails its first run with a retry, then reports what each run saw."""
    runs = [*(runs or []), seen()]
    if self.request.retries == 0:
        raise self.retry(kwargs={"runs": runs}, countdown=0, max_retries=1)
    return {"runs": runs}
