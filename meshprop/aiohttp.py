"""aiohttp: the server middleware that captures each request's headers, and the client tracing
that forwards them.

Server, two installs:

``setup(app)`` (recommended) puts the middleware first in ``app.middlewares``, so every other
middleware sees the request's context, and adds an ``on_response_prepare`` handler. That signal
is aiohttp's public hook for a response about to send its headers, so the id reaches the
responses the middleware never gets to touch: a ``StreamResponse`` or ``WebSocketResponse`` the
handler prepares itself, and the 500 aiohttp builds for an unhandled exception after the
middleware has let the exception through.

``web.Application(middlewares=[middleware()])`` echoes the id on every response the handler
returns and on every ``web.HTTPException`` (the router's 404 and 405 included), but not on those
two: by the time the middleware could add a header, it is sent or not yet built.

Either way the middleware never answers a request itself, and an unhandled exception reaches
aiohttp marked with its request id, for the "Error handling request" log record.

Client, three ways, each adding the current request's headers to calls inside the propagation
scope (the caller's own headers win):

``aiohttp.ClientSession(trace_configs=[trace_config()])`` works with every aiohttp. Turning
tracing on makes aiohttp build and send all its tracing signals (see the benchmark report).

``aiohttp.ClientSession(middlewares=[client_middleware()])`` (aiohttp 3.12+) does the same for
much less: a client middleware runs once per hop, redirects included, on
that hop's own request. A call given its own ``middlewares=`` replaces the session's, and so
goes without meshprop.

``ClientSession(...)`` here builds an ``aiohttp.ClientSession`` with the middleware where aiohttp
has client middlewares, and the trace config where it does not.

All of them run in the task that makes the call, so they see that task's request context.

With ``Config.cap_timeouts``, the client middleware (so ``ClientSession(...)``) gives each hop
no more than what is left of the caller's deadline, for its connect, send, response and body:
past it the call fails with ``aiohttp.ServerTimeoutError``, and a call made when nothing is
left fails before connecting with ``aiohttp.ConnectionTimeoutError`` (both are the
``asyncio.TimeoutError`` aiohttp raises for its own timeouts, which still apply). Under
``instrument()`` the same holds from the send on: the connect comes before the patched
``ClientRequest.send``. The trace config cannot end a call, so it caps nothing.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Mapping
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ._extras import require
from ._instrument import active_plan

require("aiohttp", "aiohttp")

import aiohttp  # noqa: E402
from aiohttp import ClientSession as _ClientSession  # noqa: E402
from aiohttp import TraceConfig, TraceRequestRedirectParams, TraceRequestStartParams, web  # noqa: E402
from multidict import CIMultiDict  # noqa: E402
from yarl import URL  # noqa: E402

from ._capture import capture_multidict  # noqa: E402
from ._config import Config  # noqa: E402
from ._deadline import time_left_for_call  # noqa: E402
from ._outbound import (  # noqa: E402
    RECORDERS,
    EncodedCache,
    headers_for_host,
    names_to_add,
    record_call,
    take_back_injected,
    watched_names,
)
from ._plan import Plan, plan_for  # noqa: E402
from ._snapshot import CURRENT, mark_exception  # noqa: E402
from ._tracing import tracing  # noqa: E402

if TYPE_CHECKING:
    from aiohttp import ClientHandlerType, ClientMiddlewareType, ClientRequest, ClientResponse
    from aiohttp.connector import Connection
    from aiohttp.streams import StreamReader
    from aiohttp.typedefs import Handler, Middleware

__all__ = ["ClientSession", "client_middleware", "middleware", "setup", "trace_config"]

_HAS_CLIENT_MIDDLEWARES = "middlewares" in inspect.signature(_ClientSession).parameters
# What aiohttp raises when a connect times out (3.10+), else its older server timeout.
_ConnectionTimeoutError: type[aiohttp.ServerTimeoutError] = getattr(
    aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError
)

# Where the middleware leaves the request id for the on_response_prepare handler, which may run
# after the context is reset (aiohttp prepares a returned response, and its own 500, later).
_REQUEST_ID_KEY: Any
try:
    _REQUEST_ID_KEY = web.RequestKey("meshprop_request_id", str)
except AttributeError:  # older aiohttp has no RequestKey, and does not warn about str keys
    _REQUEST_ID_KEY = "meshprop_request_id"
_SETUP_KEY: Any
try:
    _SETUP_KEY = web.AppKey("meshprop_setup", bool)
except AttributeError:
    _SETUP_KEY = "meshprop_setup"


def middleware(config: Config | None = None) -> Middleware:
    """The server middleware: ``web.Application(middlewares=[meshprop.aiohttp.middleware()])``.

    The handler and the middlewares after this one run with the request's snapshot in the
    context; it is reset when the handler returns or raises. ``setup(app)`` installs it too, and
    also echoes the id where this middleware cannot (see the module docstring).
    """
    plan = plan_for(config)
    echo_name = plan.echo_name

    @web.middleware
    async def meshprop_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _REQUEST_ID_KEY in request:  # captured already: a parent application's, or twice
            return await handler(request)
        snapshot = capture_multidict(request.headers, plan)
        request_id = snapshot.request_id
        request[_REQUEST_ID_KEY] = request_id
        token = CURRENT.set(snapshot)
        try:
            response = await handler(request)
        except web.HTTPException as error:
            # A raised 4xx/5xx (the router's 404 too) is sent as a response: echo on it.
            if echo_name is not None and request_id is not None:
                _echo(error.headers, echo_name, request_id)
            raise
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)
        if echo_name is not None and request_id is not None and not response.prepared:
            _echo(response.headers, echo_name, request_id)
        return response

    return meshprop_middleware


def setup(app: web.Application, config: Config | None = None) -> None:
    """Install meshprop on ``app``: the middleware first of all, and the echo on every response.

    Call it before the app starts (aiohttp freezes its middlewares and signals then). A second
    call on the same application does nothing.
    """
    if app.get(_SETUP_KEY):
        return
    app[_SETUP_KEY] = True
    app.middlewares.insert(0, middleware(config))
    echo_name = plan_for(config).echo_name
    if echo_name is None:
        return

    async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(_REQUEST_ID_KEY)
        if request_id is not None:
            _echo(response.headers, echo_name, request_id)

    app.on_response_prepare.append(echo_request_id)


def _echo(headers: CIMultiDict[str], name: str, request_id: str) -> None:
    # Never a second x-request-id, and never in place of one the app set itself.
    if name not in headers:
        headers[name] = request_id


def trace_config(config: Config | None = None) -> TraceConfig:
    """Client tracing: ``aiohttp.ClientSession(trace_configs=[meshprop.aiohttp.trace_config()])``.

    Each call gets the current request's headers when its host is in the propagation scope,
    except those the caller set (names compared case-insensitively). On a redirect the headers
    meshprop added are taken back, then added again only if the next host is in scope too.
    """
    plan = plan_for(config)

    async def on_request_start(
        session: _ClientSession, context: SimpleNamespace, params: TraceRequestStartParams
    ) -> None:
        _forward(context, params.headers, params.url.host, plan)

    async def on_request_redirect(
        session: _ClientSession, context: SimpleNamespace, params: TraceRequestRedirectParams
    ) -> None:
        _forward(context, params.headers, _next_host(params), plan)

    tracing = TraceConfig()
    tracing.on_request_start.append(on_request_start)
    tracing.on_request_redirect.append(on_request_redirect)
    return tracing


def client_middleware(config: Config | None = None) -> ClientMiddlewareType:
    """Client middleware (aiohttp 3.12+):
    ``aiohttp.ClientSession(middlewares=[meshprop.aiohttp.client_middleware()])``.

    aiohttp builds each hop's request afresh from the caller's headers, so a hop out of the
    scope never sees what meshprop added to an earlier one. Put it last among the session's
    middlewares, so a header another middleware sets counts as the caller's.
    """
    plan = plan_for(config)

    async def meshprop_client_middleware(
        request: ClientRequest, handler: ClientHandlerType
    ) -> ClientResponse:
        host = request.url.host
        forwarded = None if host is None else headers_for_host(host, plan)
        if forwarded is not None:
            added = _add(request.headers, forwarded)
            if RECORDERS:
                _record(request, request.headers, host, added, plan)
        elif RECORDERS:
            _record(request, request.headers, host, {}, plan)
        if plan.cap_timeouts:
            return await _within_deadline(request, handler, plan)
        return await handler(request)

    return meshprop_client_middleware


async def _within_deadline(
    request: ClientRequest, handler: ClientHandlerType, plan: Plan
) -> ClientResponse:
    """One hop made within what is left of the deadline: its connect, its send and the wait
    for its response; then its body (``_fail_a_late_body``)."""
    left = time_left_for_call(plan)
    if left is None:
        return await handler(request)
    if left == 0.0:
        raise _nothing_left(request.url)
    response = await _call_within(left, handler(request), request.url)
    _fail_a_late_body(response, plan)
    return response


def _fail_a_late_body(response: ClientResponse, plan: Plan) -> None:
    """Make a body still arriving when the deadline passes fail as aiohttp fails one that
    times out (the exception set on the stream, whoever reads it and however). A body fully
    received in time stays readable."""
    content = response.content
    left = time_left_for_call(plan)
    if left is None or content.is_eof():
        return
    late = asyncio.get_running_loop().call_later(left, _end_late_body, content, response.url)
    content.on_eof(late.cancel)


def _end_late_body(content: StreamReader, url: URL) -> None:
    if not content.is_eof() and content.exception() is None:
        content.set_exception(_deadline_passed(url))


if sys.version_info >= (3, 11):

    async def _call_within(
        left: float, call: Awaitable[ClientResponse], url: URL
    ) -> ClientResponse:
        timeout = asyncio.timeout(left)
        try:
            async with timeout:
                return await call
        except TimeoutError:
            if timeout.expired():
                raise _deadline_passed(url) from None
            raise  # one of aiohttp's own timeouts, shorter than what was left

else:

    async def _call_within(
        left: float, call: Awaitable[ClientResponse], url: URL
    ) -> ClientResponse:
        try:
            return await asyncio.wait_for(call, left)
        except asyncio.TimeoutError as error:
            if isinstance(error, aiohttp.ServerTimeoutError):
                raise  # aiohttp's own connect or read timeout
            raise _deadline_passed(url) from None


def _nothing_left(url: URL) -> aiohttp.ServerTimeoutError:
    return _ConnectionTimeoutError(
        f"Connection timeout to host {url} (nothing was left of the caller's deadline)"
    )


def _deadline_passed(url: URL) -> aiohttp.ServerTimeoutError:
    return aiohttp.ServerTimeoutError(f"Timeout on request to {url}: the caller's deadline passed")


class _Encoded:
    """One snapshot's headers as a ``CIMultiDict``: when the caller set none of the names that
    matter, one ``extend`` adds them all."""

    __slots__ = ("headers", "watched")

    def __init__(self, forwarded: Mapping[str, str]) -> None:
        self.watched = watched_names(forwarded)
        self.headers = CIMultiDict(forwarded)


_encoded = EncodedCache(_Encoded)


def _add(headers: CIMultiDict[str], forwarded: Mapping[str, str]) -> Mapping[str, str]:
    """Add to a request's headers the forwarded ones its caller did not set; return them."""
    encoded = _encoded.get(forwarded)
    if encoded.watched.isdisjoint(map(str.lower, headers)):
        headers.extend(encoded.headers)
        return forwarded
    present = {name.lower() for name in headers}
    added = {name: forwarded[name] for name in names_to_add(forwarded, present)}
    headers.update(added)
    return added


def ClientSession(*args: Any, config: Config | None = None, **kwargs: Any) -> _ClientSession:
    """An ``aiohttp.ClientSession`` that forwards the headers: every aiohttp argument works.

    A function rather than a subclass, as aiohttp asks. It appends ``client_middleware(config)``
    to the ``middlewares`` given (aiohttp 3.12+), else ``trace_config(config)`` to the
    ``trace_configs``.
    """
    if _HAS_CLIENT_MIDDLEWARES:
        kwargs["middlewares"] = (*(kwargs.get("middlewares") or ()), client_middleware(config))
    else:
        kwargs["trace_configs"] = [*(kwargs.get("trace_configs") or ()), trace_config(config)]
    return _ClientSession(*args, **kwargs)


def _forward(
    context: SimpleNamespace, headers: CIMultiDict[str], host: str | None, plan: Plan
) -> None:
    """Make ``headers`` carry what a call to ``host`` should get, and remember what was added.

    ``context`` is aiohttp's per-call tracing namespace; one call may pass here once per hop.
    """
    added: tuple[Mapping[str, str], list[str]] | None = getattr(context, "meshprop_added", None)
    if added is not None:
        forwarded, names = added
        for name in names:
            if headers.get(name) == forwarded[name]:
                del headers[name]
        context.meshprop_added = None
    if host is None:
        return
    forwarded_now = headers_for_host(host, plan)
    if forwarded_now is None:
        if RECORDERS:
            _record(None, headers, host, {}, plan)
        return
    names = list(names_to_add(forwarded_now, {name.lower() for name in headers}))
    for name in names:
        headers[name] = forwarded_now[name]
    if names:
        context.meshprop_added = (forwarded_now, names)
    if RECORDERS:
        _record(None, headers, host, {name: forwarded_now[name] for name in names}, plan)


def _record(
    request: ClientRequest | None,
    headers: CIMultiDict[str],
    host: str | None,
    added: Mapping[str, str],
    plan: Plan,
) -> None:
    """Hand the call to meshprop.testing's recorders; ``request`` is None under the trace
    config, which sees the URL's host and headers but not the request."""
    in_scope = host is not None and plan.scope.includes_host(host)
    method = None if request is None else request.method
    destination = str(request.url) if request is not None else host or ""
    record_call("aiohttp", method, destination, added, in_scope, headers, request)


def _next_host(params: TraceRequestRedirectParams) -> str | None:
    """The host aiohttp follows the redirect to; ``None`` (so nothing is added) if unclear."""
    response_headers = params.response.headers
    location = response_headers.get("Location") or response_headers.get("URI")
    if location is None:
        return None
    try:
        target = URL(location)
    except ValueError:
        return None
    # A location without an authority ("/next", "http:/next") stays on the current host.
    return target.host if target.host is not None else params.url.host


# -- instrument(): every aiohttp client request and application -------------------------------


def patched_send(original: Any) -> Any:
    """``ClientRequest.send`` that adds what the request's host should get: aiohttp builds each
    redirect hop as a new request from the caller's headers, so each hop is decided alone.
    With ``cap_timeouts``, a request made when nothing is left of the deadline fails before a
    byte is written (the connection is open by then, or taken from the pool)."""

    async def send(self: ClientRequest, conn: Any) -> ClientResponse:
        plan = active_plan()
        host = self.url.host
        if plan is not None and plan.cap_timeouts and time_left_for_call(plan) == 0.0:
            raise _nothing_left(self.url)
        if plan is not None and host is not None:
            forwarded = headers_for_host(host, plan)
            headers = self.headers
            added: Mapping[str, str] = {}
            if forwarded:
                added = _add(headers, forwarded)
            elif tracing() is not None and not plan.scope.includes_host(host):
                take_back_injected(headers)  # OpenTelemetry's trace config injected earlier
            if RECORDERS:
                _record(self, headers, host, added, plan)
        response: ClientResponse = await original(self, conn)
        return response

    return send


def patched_start(original: Any) -> Any:
    """``ClientResponse.start`` (the wait for the response headers) within what is left of the
    deadline, and then the body, with ``cap_timeouts``."""

    async def start(self: ClientResponse, connection: Connection) -> ClientResponse:
        plan = active_plan()
        left = None if plan is None or not plan.cap_timeouts else time_left_for_call(plan)
        if plan is None or left is None:
            response: ClientResponse = await original(self, connection)
            return response
        response = await _call_within(left, original(self, connection), self.url)
        _fail_a_late_body(response, plan)
        return response

    return start


def patched_app_init(original: Any) -> Any:
    """``web.Application.__init__`` that ends with ``setup(app)``."""

    def __init__(self: web.Application, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        plan = active_plan()
        if plan is not None:
            setup(self, plan.config)

    return __init__
