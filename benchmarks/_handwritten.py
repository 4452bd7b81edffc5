"""The propagation code teams write by hand today, as the alternatives meshprop is timed against.

Each copies the Istio header set into a ContextVar (and echoes ``x-request-id`` where the issue
says a team's version does), with no validation: the cheapest honest version of each idiom.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._workload import ISTIO_NAMES, ISTIO_NAMES_BYTES

#: Where the hand-written variants keep the request's headers.
TEAM_HEADERS: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("team_headers")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class CopyAndEchoMiddleware:
    """The floor: a minimal pure-ASGI middleware that copies the headers and echoes the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in ISTIO_NAMES_BYTES
        }
        request_id = found.get("x-request-id") or str(uuid.uuid4())
        echoed = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), echoed]
            await send(message)

        token = TEAM_HEADERS.set(found)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            TEAM_HEADERS.reset(token)


async def http_middleware(request: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """The ``@app.middleware("http")`` version most Starlette/FastAPI services carry."""
    headers = request.headers
    found = {name: headers[name] for name in ISTIO_NAMES if name in headers}
    token = TEAM_HEADERS.set(found)
    try:
        response = await call_next(request)
    finally:
        TEAM_HEADERS.reset(token)
    response.headers["x-request-id"] = found.get("x-request-id") or str(uuid.uuid4())
    return response


def flask_before_request() -> None:
    """Flask's idiom: copy the headers into ``g`` before each request."""
    from flask import g, request

    headers = request.headers
    g.propagation_headers = {name: headers[name] for name in ISTIO_NAMES if name in headers}


def copy_into(headers: MutableMapping[str, str]) -> None:
    """An outbound hook: add the request's headers the caller did not set."""
    for name, value in TEAM_HEADERS.get({}).items():
        if name not in headers:
            headers[name] = value
