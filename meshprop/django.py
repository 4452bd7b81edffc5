"""Django middleware: one request's propagation headers in the context, and its id on the response.

``MIDDLEWARE = ["meshprop.django.MeshPropMiddleware", ...]``, first, so every other middleware
runs inside the request's context. One class serves sync and async stacks: Django calls it
synchronously under WSGI and awaits it when the layer below is async (ASGI).

Django turns a view's exception, an unmatched URL and every other error into a response inside
each middleware layer, so this middleware gets Django's own 404 and 500 like any response and
echoes the id on them; Django's "Internal Server Error" record is logged inside the request's
context. Two things happen after the middleware has returned, and are handled here:

- Django logs a 4xx response (``django.request``, "Not Found: ...") once every middleware is
  done. The request is marked with its id, and ``meshprop.logging.ContextFilter`` finds it on
  the record.
- A streamed body is produced by the server (WSGI) or Django's ASGI handler after the view has
  returned. Each chunk is produced in the request's context, and so is the response's
  ``close()``: Django's closing of the body (a generator's ``finally``) and ``request_finished``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import Context, copy_context
from typing import cast

from ._extras import require

require("django", "django")

from asgiref.sync import iscoroutinefunction, markcoroutinefunction  # noqa: E402
from django.conf import settings  # noqa: E402
from django.http import HttpRequest  # noqa: E402
from django.http.response import HttpResponseBase, StreamingHttpResponse  # noqa: E402

from ._capture import capture_environ  # noqa: E402
from ._config import Config  # noqa: E402
from ._instrument import active_plan  # noqa: E402
from ._plan import plan_for  # noqa: E402
from ._snapshot import CURRENT, Snapshot, mark_exception, mark_request  # noqa: E402

__all__ = ["MeshPropMiddleware"]

GetResponse = Callable[[HttpRequest], HttpResponseBase]
GetResponseAsync = Callable[[HttpRequest], Awaitable[HttpResponseBase]]

_END = object()  # what next() returns once the body is done


class MeshPropMiddleware:
    """Sets the request's snapshot while the rest of the stack runs, and echoes its request id.

    Configured by ``config=``, else by the ``MESHPROP_CONFIG`` setting (a ``meshprop.Config``),
    else by the environment. An exception that escapes the layers below (only with
    ``DEBUG_PROPAGATE_EXCEPTIONS``) goes on marked with its request id.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: GetResponse | GetResponseAsync, config: Config | None = None
    ) -> None:
        self.get_response = get_response
        if config is None and settings.configured:
            config = getattr(settings, "MESHPROP_CONFIG", None)
        self._plan = plan_for(config)
        self.config = self._plan.config
        self._echo_name = self._plan.echo_name
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._is_async:
            return self._call_async(request)
        snapshot = self._capture(request)
        token = CURRENT.set(snapshot)
        try:
            response = cast(GetResponse, self.get_response)(request)
            return self._finish(response, snapshot)
        except BaseException as error:
            snapshot.has_ended = True
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)

    async def _call_async(self, request: HttpRequest) -> HttpResponseBase:
        snapshot = self._capture(request)
        token = CURRENT.set(snapshot)
        try:
            response = await cast(GetResponseAsync, self.get_response)(request)
            return self._finish(response, snapshot)
        except BaseException as error:
            snapshot.has_ended = True
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)

    def _capture(self, request: HttpRequest) -> Snapshot:
        # Django's ASGI handler fills META from the scope's headers as a WSGI server does.
        snapshot = capture_environ(request.META, self._plan)
        mark_request(request, snapshot)
        return snapshot

    def _finish(self, response: HttpResponseBase, snapshot: Snapshot) -> HttpResponseBase:
        """The response, echoing the id unless the app set one, its streamed body bound to the
        request's context. Runs while that context is set."""
        request_id = snapshot.request_id
        echo_name = self._echo_name
        if echo_name is not None and request_id is not None and echo_name not in response.headers:
            response.headers[echo_name] = request_id
        if not isinstance(response, StreamingHttpResponse):
            snapshot.has_ended = True
            return response
        context = copy_context()
        if getattr(response, "file_to_stream", None) is None:
            # A FileResponse keeps its file, for the server's sendfile(): reading it runs no
            # code of the app's.
            if response.is_async:
                response.streaming_content = _async_chunks(
                    cast(AsyncIterable[bytes], response.streaming_content), snapshot
                )
            else:
                response.streaming_content = _ChunksInContext(
                    cast(Iterable[bytes], response.streaming_content), context, snapshot
                )
        # The server (or Django's ASGI handler) calls close() once the body is sent or
        # abandoned: it closes the body and sends request_finished.
        close = response.close

        def close_in_context() -> None:
            try:
                context.run(close)
            finally:
                snapshot.has_ended = True

        response.close = close_in_context  # type: ignore[method-assign]
        return response


class _ChunksInContext:
    """A sync body whose chunks are produced in the request's context (one copy, made while
    the middleware ran, for every chunk: what the body sets stays set for its next chunk)."""

    __slots__ = ("_chunks", "_context", "_snapshot")

    def __init__(self, body: Iterable[bytes], context: Context, snapshot: Snapshot) -> None:
        self._chunks = iter(body)
        self._context = context
        self._snapshot = snapshot

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            chunk = self._context.run(next, self._chunks, _END)
        except BaseException as error:
            mark_exception(error, self._snapshot)
            raise
        if chunk is _END:
            raise StopIteration
        return cast(bytes, chunk)


async def _async_chunks(body: AsyncIterable[bytes], snapshot: Snapshot) -> AsyncIterator[bytes]:
    """An async body whose chunks are produced with the request's snapshot set, in the task
    that reads them, and reset before each chunk goes on to the server."""
    chunks = aiter(body)
    while True:
        token = CURRENT.set(snapshot)
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except BaseException as error:
            mark_exception(error, snapshot)
            raise
        finally:
            CURRENT.reset(token)
        yield chunk


# -- instrument(): Django's middleware stack ----------------------------------------------------

_PATH = f"{__name__}.{MeshPropMiddleware.__name__}"


class _Instrumented(MeshPropMiddleware):
    """What ``instrument()`` puts first in the stack: configured by ``instrument()``'s Config."""

    def __init__(self, get_response: GetResponse | GetResponseAsync) -> None:
        plan = active_plan()
        super().__init__(get_response, None if plan is None else plan.config)


def patched_load_middleware(original: Callable[..., None]) -> Callable[..., None]:
    """``BaseHandler.load_middleware`` that builds the stack with meshprop first, unless
    ``MIDDLEWARE`` names it already; the setting itself is left as it was."""

    def load_middleware(self: object, is_async: bool = False) -> None:
        names = list(settings.MIDDLEWARE)
        if active_plan() is None or _PATH in names:
            original(self, is_async)
            return
        settings.MIDDLEWARE = [f"{__name__}._Instrumented", *names]
        try:
            original(self, is_async)
        finally:
            settings.MIDDLEWARE = names

    return load_middleware
