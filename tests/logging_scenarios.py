"""The requests every log integration's tests serve, through a real ``MeshPropMiddleware``.

``send_requests(client)`` sends, in order: a request with an incoming id, one without, one with
an id meshprop rejects, and two that overlap — the second starts while the first is still in its
handler, and the first finishes while the second is still in its own. Each handler of
``scenario_app(log)`` calls ``log(message)`` where a service would log; each test asserts the
whole sequence of lines its library wrote, so a line that names another request's id (the bug)
shows in the diff. ``serve_requests(log)`` does both in this process; the access-log tests serve
the same app from a real server.

Two more scenarios, outside a server: ``log_received_then_traced(log)`` logs inside a request
that came with a B3 trace, then inside a span of that trace; ``failed_request_error()`` is an
exception marked as an adapter marks one its request's app raised, for the logging that happens
after that request (maybe inside another).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider

import meshprop
from meshprop._snapshot import CURRENT, mark_exception
from meshprop.asgi import ASGIApp, MeshPropMiddleware, Receive, Scope, Send
from meshprop.otel import MeshPropagator

INCOMING_ID = "incoming-7f3a"
#: Not a valid x-request-id (a space): meshprop drops it and generates one.
REJECTED_ID = "not valid"
FIRST_ID = "overlap-first"
SECOND_ID = "overlap-second"
#: The B3 trace ``log_received_then_traced`` runs in, and the id of the request that failed.
TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
FAILED_ID = "failed-request"
#: The bound on every wait, so a broken handler fails the test instead of hanging it.
WAIT_SECONDS = 10.0


@dataclass(frozen=True)
class Served:
    """The ids the responses echoed for the requests that brought none, or a rejected one."""

    generated: str
    replaced: str


def scenario_app(log: Callable[[str], Any]) -> ASGIApp:
    """The app, without meshprop; ``/boom`` raises before it starts a response."""
    first_started = asyncio.Event()
    second_started = asyncio.Event()
    first_finished = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == "/first":
            log("first: started")
            first_started.set()
            await asyncio.wait_for(second_started.wait(), WAIT_SECONDS)
            log("first: finished")
            first_finished.set()
        elif path == "/second":
            await asyncio.wait_for(first_started.wait(), WAIT_SECONDS)
            log("second: started")
            second_started.set()
            await asyncio.wait_for(first_finished.wait(), WAIT_SECONDS)
            log("second: finished")
        elif path == "/boom":
            raise RuntimeError("boom")
        else:
            log(f"handling {path}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def serve_requests(log: Callable[[str], Any]) -> Served:
    transport = httpx.ASGITransport(app=MeshPropMiddleware(scenario_app(log)))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await send_requests(client)


async def send_requests(client: httpx.AsyncClient) -> Served:
    with_id = await client.get("/with-id", headers={"x-request-id": INCOMING_ID})
    without_id = await client.get("/without-id")
    rejected = await client.get("/rejected-id", headers={"x-request-id": REJECTED_ID})
    first, second = await asyncio.gather(
        client.get("/first", headers={"x-request-id": FIRST_ID}),
        client.get("/second", headers={"x-request-id": SECOND_ID}),
    )
    assert with_id.headers["x-request-id"] == INCOMING_ID
    assert first.headers["x-request-id"] == FIRST_ID
    assert second.headers["x-request-id"] == SECOND_ID
    served = Served(without_id.headers["x-request-id"], rejected.headers["x-request-id"])
    assert REJECTED_ID != served.replaced != served.generated
    return served


def expected(served: Served, line: Callable[[str, str], str]) -> list[str]:
    """The lines ``serve_requests`` must produce, each as ``line(request_id, message)``."""
    return [
        line(INCOMING_ID, "handling /with-id"),
        line(served.generated, "handling /without-id"),
        line(served.replaced, "handling /rejected-id"),
        line(FIRST_ID, "first: started"),
        line(SECOND_ID, "second: started"),
        line(FIRST_ID, "first: finished"),
        line(SECOND_ID, "second: finished"),
    ]


def log_received_then_traced(log: Callable[[str], Any]) -> str:
    """Log ``received`` in request ``abc`` (B3 ``TRACE``/``SPAN`` incoming), then ``traced``
    inside a span started from that context; return the span's own id (16 hex digits)."""
    tracer = TracerProvider().get_tracer("test")
    with meshprop.bind({"x-request-id": "abc", "b3": f"{TRACE}-{SPAN}-1"}):
        log("received")
        with tracer.start_as_current_span(
            "child", context=MeshPropagator().extract({"b3": f"{TRACE}-{SPAN}-1"})
        ) as span:
            log("traced")
    return format(span.get_span_context().span_id, "016x")


def failed_request_error() -> RuntimeError:
    """An exception raised in request ``FAILED_ID``, marked with that request's snapshot; the
    request is over when this returns, as it is when a server logs the app's exception."""
    with meshprop.bind({"x-request-id": FAILED_ID}):
        snapshot = CURRENT.get()
        assert snapshot is not None
        error = RuntimeError("boom")
        mark_exception(error, snapshot)
    return error
