"""WSGI middleware: one request's propagation headers in the context, and its id on the response.

Plain WSGI, so it wraps any WSGI app (Flask's ``app.wsgi_app``, Django's ``WSGIHandler``, a bare
callable) and needs no framework installed.

WSGI servers serve many requests on one thread, and the app's code runs in three separate calls
from the server: the app call, each ``next()`` of the response body (a streamed body, Flask's
``stream_with_context``, a generator view) and ``close()``. The snapshot is set and reset around
each of those calls, never left set in between. So the reset never depends on the server
calling ``close()``, on ``close()`` running in the context that set it, or on a body being read
to its end: nothing of one request can be seen by the next request on that thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any

from ._capture import capture_environ
from ._config import DEFAULT_CONFIG, Config
from ._snapshot import CURRENT, Snapshot, mark_exception

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Headers = list[tuple[str, str]]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

__all__ = ["MeshPropMiddleware"]


class MeshPropMiddleware:
    """Sets the request's snapshot while the app's code runs and echoes its request id.

    An unhandled exception (from the app call or from the body) goes on to the server, marked
    with its request id for the server's log record.
    """

    def __init__(self, app: WSGIApp, config: Config | None = None) -> None:
        self.app = app
        self.config = config or DEFAULT_CONFIG
        self._echo_name = self.config._echo_name

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        snapshot = capture_environ(environ, self.config)
        request_id = snapshot.request_id
        echo_name = self._echo_name
        if echo_name is not None and request_id is not None:
            start_response = _echoing(start_response, echo_name, request_id)
        token = CURRENT.set(snapshot)
        try:
            body = self.app(environ, start_response)
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)
        if type(body) is list or type(body) is tuple or _is_file_wrapper(body, environ):
            # Nothing of the app's runs when these are read or closed, and the server must
            # still recognise its own file wrapper to send the file with sendfile().
            return body
        return _BodyInContext(body, snapshot)


def _echoing(start_response: StartResponse, echo_name: str, request_id: str) -> StartResponse:
    """``start_response`` that adds the request id header unless the app set one itself.

    Each call is judged on its own headers: a second call (with ``exc_info``, for an error page
    after an exception) replaces the first call's headers, so it needs the echo too. The app's
    list is left as it is, since it may belong to a response object that is sent again.
    """

    def start_response_with_echo(
        status: str, headers: Headers, exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], object]:
        for name, _ in headers:
            if name.lower() == echo_name:
                break
        else:
            headers = [*headers, (echo_name, request_id)]
        if exc_info is None:
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return start_response_with_echo


def _is_file_wrapper(body: object, environ: Environ) -> bool:
    wrapper = environ.get("wsgi.file_wrapper")
    return isinstance(wrapper, type) and isinstance(body, wrapper)


class _BodyInContext:
    """The app's response body, read and closed with the request's snapshot set.

    ``close()`` is forwarded in the same way, so finally blocks of a generator that the server
    closes early (client gone) and Flask's teardown of a streamed response still see the id.
    """

    __slots__ = ("_body", "_iterator", "_snapshot")

    def __init__(self, body: Iterable[bytes], snapshot: Snapshot) -> None:
        self._body = body
        self._snapshot = snapshot
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> _BodyInContext:
        return self

    def __next__(self) -> bytes:
        token = CURRENT.set(self._snapshot)
        try:
            iterator = self._iterator
            if iterator is None:
                iterator = self._iterator = iter(self._body)
            return next(iterator)
        except StopIteration:
            raise
        except BaseException as error:
            mark_exception(error, self._snapshot)
            raise
        finally:
            CURRENT.reset(token)

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is None:
            return
        token = CURRENT.set(self._snapshot)
        try:
            close()
        except BaseException as error:
            mark_exception(error, self._snapshot)
            raise
        finally:
            CURRENT.reset(token)
