"""WSGI middleware: one request's propagation headers in the context, and its id on the response.

Plain WSGI, so it wraps any WSGI app (Flask's ``app.wsgi_app``, Django's ``WSGIHandler``, a bare
callable) and needs no framework installed.

WSGI servers serve many requests on one thread, and the app's code runs in three separate calls
from the server: the app call, each ``next()`` of the response body (a streamed body, Flask's
``stream_with_context``, a generator view) and ``close()``. Each request gets its own copy of the
server's context, made when the app is called, with the snapshot set in it; those three calls
run inside that copy (``Context.run``), and the server's own context is never changed. So
nothing depends on the server calling ``close()``, on ``close()`` running in the thread or
context that called the app, or on a body being read to its end: nothing of one request can be
seen by the next request on that thread.

The copy is the request's context for all three calls, so a context variable the app sets in
one of them is still set in the next: Flask's ``stream_with_context`` pushes its request context
during the app call and pops it in the body's last ``next()``, and OpenTelemetry's WSGI
middleware, wrapped inside this one, detaches its span in ``close()``. What the app sets stays
in its request: the server, and any middleware wrapped around this one, never see it. A
context is entered by one thread at a time, which PEP 3333 servers respect: they never read a
body in one thread while closing it in another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextvars import copy_context
from functools import partial
from types import TracebackType
from typing import Any

from ._capture import capture_environ
from ._config import Config
from ._plan import plan_for
from ._snapshot import CURRENT, Snapshot, mark_exception

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
_Run = Callable[..., Any]

__all__ = ["MeshPropMiddleware"]

_set_current = CURRENT.set  # bound once, not per request
_END = object()  # what next() returns once the app's body is done
#: The environ key that tells an inner meshprop middleware the request is served already.
_INSTALLED = "meshprop.installed"


class MeshPropMiddleware:
    """Runs the app's code in the request's own context, and echoes its request id.

    An unhandled exception (from the app call, the body or its ``close()``) goes on to the
    server, marked with its request id for the server's log record.
    """

    def __init__(self, app: WSGIApp, config: Config | None = None) -> None:
        self.app = app
        self._plan = plan_for(config)
        self.config = self._plan.config
        self._echo_name = self._plan.echo_name

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if _INSTALLED in environ:  # an outer meshprop middleware serves this request
            return self.app(environ, start_response)
        environ[_INSTALLED] = True
        snapshot = capture_environ(environ, self._plan)
        request_id = snapshot.request_id
        echo_name = self._echo_name
        if echo_name is not None and request_id is not None:
            start_response = partial(_echo, start_response, echo_name, request_id)
        run = copy_context().run
        run(_set_current, snapshot)
        try:
            body = run(self.app, environ, start_response)
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        body_type = type(body)
        if body_type is list or body_type is tuple:
            return body  # nothing of the app's runs while these are read
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
            return body  # the server must recognise its own wrapper to use sendfile()
        return _BodyInContext(body, run, snapshot)


def _echo(
    start_response: StartResponse,
    echo_name: str,
    request_id: str,
    status: str,
    headers: Headers,
    exc_info: ExcInfo | None = None,
) -> Callable[[bytes], object]:
    """``start_response`` that adds the request id header unless the app set one itself.

    Each call is judged on its own headers: a second call (with ``exc_info``, for an error page
    after an exception) replaces the first call's headers, so it needs the echo too. The app's
    list is left as it is, since it may belong to a response object that is sent again. Bound
    to one request with ``functools.partial``.
    """
    for name, _ in headers:
        if name.lower() == echo_name:
            break
    else:
        headers = [*headers, (echo_name, request_id)]
    if exc_info is None:
        return start_response(status, headers)
    return start_response(status, headers, exc_info)


class _BodyInContext:
    """The app's response body, read and closed inside the request's context.

    ``close()`` is forwarded in the same way, so finally blocks of a generator that the server
    closes early (client gone) and Flask's teardown of a streamed response still see the id.
    """

    __slots__ = ("_body", "_run", "_snapshot")

    def __init__(self, body: Iterable[bytes], run: _Run, snapshot: Snapshot) -> None:
        self._body = body
        self._run = run
        self._snapshot = snapshot

    def __iter__(self) -> Iterator[bytes]:
        # A generator: the body's end costs no StopIteration here, and each chunk no method call.
        run = self._run
        try:
            iterator = run(iter, self._body)
        except BaseException as error:
            mark_exception(error, self._snapshot)
            raise
        while True:
            try:
                chunk = run(next, iterator, _END)
            except BaseException as error:
                mark_exception(error, self._snapshot)
                raise
            if chunk is _END:
                return
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is None:
            return
        try:
            self._run(close)
        except BaseException as error:
            mark_exception(error, self._snapshot)
            raise


def patched_flask_wsgi_app(original: Callable[..., Iterable[bytes]]) -> Callable[..., Any]:
    """``Flask.wsgi_app`` that runs each request through a ``MeshPropMiddleware``."""
    from ._instrument import active_plan

    def wsgi_app(self: Any, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        plan = active_plan()
        if plan is None:
            return original(self, environ, start_response)
        return MeshPropMiddleware(partial(original, self), config=plan.config)(
            environ, start_response
        )

    return wsgi_app
