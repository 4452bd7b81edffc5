"""Celery: the propagation headers travel in each task message, and each task runs in the
context of the request that published it.

``setup(app)`` connects three of Celery's public signals:

- ``before_task_publish``: the current request's headers go into the message headers (task
  protocol 2, Celery's default since 4.0), where a worker finds them on ``task.request``.
  A header the caller set (``apply_async(headers=...)``) wins, and Celery's own keys are left
  alone. The scope is not asked: a task's consumer is a worker of the same system, whatever
  broker carries the message.
- ``task_prerun``: the task runs bound to the headers its message carried, read as an inbound
  request's are, so a task published outside any request gets a new request id (when the
  Config generates ids), and a task it publishes carries that context on.
- ``task_postrun``: the context is reset with its token. Celery sends it after every run that
  had a ``task_prerun``: success, failure, retry, reject and ignore alike.

Celery's signals are process-wide: once any app is set up, every task published in the process
carries the headers; a worker binds the tasks of the apps that were set up. The tokens are kept
per task id and thread, so tasks running at once in a thread pool, or an eager task run inside
another, each reset their own.

An eager task (``task.apply()``, ``task_always_eager``) is never published: it takes the caller's
context directly, with the headers given to ``apply(headers=...)`` winning.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from contextvars import Token
from typing import Any
from weakref import WeakKeyDictionary

from ._extras import require

require("celery", "celery")

from celery import Celery, Task, signals  # noqa: E402
from celery.app.task import Context  # noqa: E402

from ._capture import capture_pairs  # noqa: E402
from ._config import Config  # noqa: E402
from ._inject import inject  # noqa: E402
from ._plan import Plan, plan_for  # noqa: E402
from ._snapshot import CURRENT, Snapshot  # noqa: E402

__all__ = ["setup", "teardown"]

_DISPATCH_UID = "meshprop.celery"

#: The plan of each app that was set up; a worker binds only their tasks.
_plans: WeakKeyDictionary[Celery, Plan] = WeakKeyDictionary()
_publish_config: Config | None = None
#: (task id, thread) -> the runs in progress there, innermost last: (token, snapshot).
_runs: dict[tuple[str, int], list[tuple[Token[Snapshot | None], Snapshot]]] = {}


def setup(app: Celery, config: Config | None = None) -> None:
    """Propagate the headers through ``app``'s tasks, on the publishing and the worker side.

    Calling it again for the same app replaces its Config; the signals stay connected once.
    """
    global _publish_config
    plan = plan_for(config)
    _plans[app] = plan
    _publish_config = plan.config
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=_DISPATCH_UID)
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=_DISPATCH_UID)


def teardown(app: Celery) -> None:
    """Undo ``setup(app)``; the signals are disconnected once no app is set up."""
    _plans.pop(app, None)
    if not _plans:
        signals.before_task_publish.disconnect(_on_publish, dispatch_uid=_DISPATCH_UID)
        signals.task_prerun.disconnect(_on_prerun, dispatch_uid=_DISPATCH_UID)
        signals.task_postrun.disconnect(_on_postrun, dispatch_uid=_DISPATCH_UID)


def _on_publish(headers: object = None, **_: Any) -> None:
    if isinstance(headers, dict):
        inject(headers, config=_publish_config)


def _on_prerun(task_id: str | None = None, task: Task[Any, Any] | None = None, **_: Any) -> None:
    if task_id is None or task is None:
        return
    plan = _plans.get(task.app)
    if plan is None:
        return
    request = task.request
    snapshot = capture_pairs(_task_headers(request, plan), plan)
    token = CURRENT.set(snapshot)
    _runs.setdefault((task_id, threading.get_ident()), []).append((token, snapshot))


def _on_postrun(task_id: str | None = None, **_: Any) -> None:
    key = (str(task_id), threading.get_ident())
    runs = _runs.get(key)
    if not runs:
        return
    token, snapshot = runs.pop()
    if not runs:
        del _runs[key]
    snapshot.has_ended = True
    CURRENT.reset(token)


def _task_headers(request: Context, plan: Plan) -> Mapping[Any, Any]:
    """The headers a task's message carried.

    A worker copies every message header onto ``task.request`` as an attribute, and recent
    Celery also gathers the ones that are not its own in ``request.headers``. An
    eager request holds the caller's ``apply(headers=...)``, to which the caller's context
    adds what a publish would have.
    """
    custom = getattr(request, "headers", None)
    if getattr(request, "is_eager", False):
        carrier = dict(custom) if isinstance(custom, Mapping) else {}
        return inject(carrier, config=plan.config)
    if isinstance(custom, Mapping):
        return custom
    attributes: dict[str, Any] = vars(request)
    return attributes
