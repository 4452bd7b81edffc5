"""The requests every log integration's tests serve, through a real ``MeshPropMiddleware``.

``send_requests(client)`` sends, in order: a request with an incoming id, one without, one with
an id meshprop rejects, and two that overlap — the second starts while the first is still in its
handler, and the first finishes while the second is still in its own. Each handler of
``scenario_app(log)`` calls ``log(message)`` where a service would log; each test asserts the
whole sequence of lines its library wrote, so a line that names another request's id (the bug)
shows in the diff. ``serve_requests(log)`` does both in this process; the access-log tests serve
the same app from a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from meshprop.asgi import ASGIApp, MeshPropMiddleware, Receive, Scope, Send

INCOMING_ID = "incoming-7f3a"
#: Not a valid x-request-id (a space): meshprop drops it and generates one.
REJECTED_ID = "not valid"
FIRST_ID = "overlap-first"
SECOND_ID = "overlap-second"
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
