"""A hop through a task queue: a Flask service publishes a Celery task, and a worker runs it and
calls the next hop.

Two processes from this module, on one Redis broker:

- ``python -m integrations.services.celery_service --name N --fd FD --broker URL --next URL``
  serves Flask (meshprop's WSGI middleware in) on waitress; ``/chain`` publishes
  ``call_next`` and answers with its own record followed by what the task answered;
- ``celery -A integrations.services.celery_service -b URL --result-backend URL worker -Q chain``
  runs ``call_next``: the task records what its message carried, calls the next hop through
  ``meshprop.requests.Session``, and returns the records.
"""

from __future__ import annotations

import argparse
import os
import socket
from typing import Any

from celery import Celery, current_task, signals
from flask import Flask, request

import meshprop.celery
import meshprop.requests

from .._parent_watch import exit_with_parent
from ._record import CHAIN_PATH, HopRecord, finish_record, hop_record
from .flask_service import build_hop, serve_app

QUEUE = "chain"
RESULT_TIMEOUT = 20.0

app = Celery("meshprop_chain", set_as_current=False)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
meshprop.celery.setup(app)

_session = meshprop.requests.Session()
_session.trust_env = False


@app.task(name="chain.ping")
def ping() -> str:
    return "pong"


@app.task(name="chain.call_next")
def call_next(next_url: str | None, params: dict[str, str]) -> list[HopRecord]:
    message = current_task.request
    carried = message.headers if isinstance(message.headers, dict) else vars(message)
    pairs = [(name, value) for name, value in carried.items() if isinstance(value, str)]
    record = hop_record("worker", "Celery", "celery worker", pairs)
    downstream: list[HopRecord] = []
    if next_url is not None:
        reply = _session.get(next_url + CHAIN_PATH, params=params, timeout=10.0)
        reply.raise_for_status()
        downstream = reply.json()
    return finish_record(record, downstream)


@signals.worker_init.connect(weak=False)
def _stop_with_the_test_run(**_: Any) -> None:
    """A worker whose launcher is gone stops too."""
    exit_with_parent(os.getppid())


def build_app(name: str, next_url: str | None) -> Flask:
    """The hop that publishes ``call_next`` and waits for what the task answered."""

    def publish_and_wait() -> list[HopRecord]:
        result = call_next.delay(next_url, request.args.to_dict())
        downstream: list[HopRecord] = result.get(timeout=RESULT_TIMEOUT)
        return downstream

    return build_hop(name, publish_and_wait)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m integrations.services.celery_service")
    parser.add_argument("--name", required=True)
    parser.add_argument("--fd", type=int, required=True, help="listening socket to serve on")
    parser.add_argument("--broker", required=True, help="the Redis URL, broker and results")
    parser.add_argument("--next", dest="next_url", help="base URL of the hop the task calls")
    args = parser.parse_args()

    exit_with_parent(os.getppid())
    app.conf.update(broker_url=args.broker, result_backend=args.broker)
    serve_app(build_app(args.name, args.next_url), socket.socket(fileno=args.fd))


if __name__ == "__main__":
    main()
