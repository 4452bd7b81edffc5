"""ASGI middleware: one request's propagation headers in the context, and its id on the response.

Pure ASGI, so it works around any ASGI app and needs no framework installed. Two installs:

``app.add_middleware(MeshPropMiddleware)`` (Starlette / FastAPI) puts it inside Starlette's
``ServerErrorMiddleware``, which answers an unhandled exception with a 500 after this middleware
has let the exception through: that 500 carries no ``x-request-id`` (the app's own ``Exception``
handler, which builds it, can read the id with ``exception_request_id(exc)``).

``app = MeshPropMiddleware(app)`` wraps the whole app, ``ServerErrorMiddleware`` included: the
500 leaves through this middleware's ``send`` and gets the id like any response, and an
``Exception`` handler runs while the request's context is still set.

Either way the middleware never answers a request itself, and the exception reaches the server
marked with its request id, for the server's "Exception in ASGI application" log record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import Token
from typing import Any

from ._capture import capture_asgi
from ._config import Config
from ._plan import plan_for
from ._snapshot import CURRENT, mark_exception

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = ["MeshPropMiddleware"]

_MISSING = Token.MISSING
#: The scope key with which ``instrument()``'s outermost middleware tells the others that the
#: request is served.
_INSTALLED = "meshprop.installed"

# For each scope type served, the messages that open the response and carry its headers. A
# websocket can be accepted, or denied with an HTTP response (the ASGI denial extension).
_RESPONSE_STARTS: dict[str, frozenset[str]] = {
    "http": frozenset({"http.response.start"}),
    "websocket": frozenset({"websocket.accept", "websocket.http.response.start"}),
}


class MeshPropMiddleware:
    """Sets the request's snapshot for the app's whole run and echoes its request id.

    For ``http`` and ``websocket`` scopes only; every other scope type (``lifespan``) goes to the
    app untouched. The context is reset when the app returns, which in ASGI is after the last
    chunk of a streamed body and after background tasks.
    """

    _marks_scope = False

    def __init__(self, app: ASGIApp, config: Config | None = None) -> None:
        self.app = app
        self._plan = plan_for(config)
        self.config = self._plan.config
        self._echo_name = self._plan.echo_name_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response_starts = _RESPONSE_STARTS.get(scope["type"])
        if response_starts is None or _INSTALLED in scope:
            # Not a request, or one an outer meshprop middleware (instrument()'s) serves.
            await self.app(scope, receive, send)
            return

        headers = scope["headers"]
        if not isinstance(headers, (list, tuple)):
            # Any iterable is allowed: read a one-shot iterator once, for this middleware and
            # the app both (a changed scope is a copy, as ASGI asks of middleware).
            headers = list(headers)
            scope = {**scope, "headers": headers}
        if self._marks_scope:
            scope = {**scope, _INSTALLED: True}
        snapshot = capture_asgi(headers, self._plan)
        request_id = snapshot.request_id
        token = CURRENT.set(snapshot)
        try:
            if request_id is None or self._echo_name is None:
                await self.app(scope, receive, send)
            else:
                echo = (self._echo_name, request_id.encode("latin-1"))

                async def send_with_echo(message: Message) -> None:
                    if message["type"] in response_starts:
                        message = _with_echo(message, echo)
                    await send(message)

                await self.app(scope, receive, send_with_echo)
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        finally:
            snapshot.has_ended = True
            CURRENT.reset(token)
            inherited = token.old_value
            if inherited is not _MISSING and inherited is not None and inherited.has_ended:
                # A finished request's, not an outer one's: uvicorn starts a keep-alive
                # connection's next request in the previous request's task. Hide it from the
                # server and the handlers that run after this middleware.
                CURRENT.set(None)


def _with_echo(message: Message, echo: tuple[bytes, bytes]) -> Message:
    """The response-start message with the request id added, unless the app set one itself.

    A new message and a new header list: an app may send the same message, or a Response
    object's same header list, for every request, and must not find the last request's id in it.
    """
    headers = message.get("headers") or ()
    if not isinstance(headers, (list, tuple)):
        headers = list(headers)  # any iterable is allowed, and it is read twice here
        message = {**message, "headers": headers}
    echo_name = echo[0]
    size = len(echo_name)
    for name, _ in headers:
        if len(name) == size and name.lower() == echo_name:  # lower() only where it can match
            return message
    message = dict(message)
    message["headers"] = [*headers, echo]
    return message


class _Outermost(MeshPropMiddleware):
    """What ``instrument()`` puts around a Starlette app's whole middleware stack: the 500 of
    ``ServerErrorMiddleware`` leaves through it, and a ``MeshPropMiddleware`` the app added
    itself passes the request through."""

    _marks_scope = True


def patched_build_stack(original: Callable[[Any], ASGIApp]) -> Callable[[Any], ASGIApp]:
    """``Starlette.build_middleware_stack`` that puts meshprop outermost."""
    from ._instrument import active_plan

    def build_middleware_stack(self: Any) -> ASGIApp:
        app = original(self)
        plan = active_plan()
        return app if plan is None else _Outermost(app, config=plan.config)

    return build_middleware_stack
