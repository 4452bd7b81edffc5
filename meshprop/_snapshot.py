"""The immutable snapshot of one request's propagation headers, and the ContextVar that holds it.

One ContextVar for the whole snapshot, not one per header: a new header is a new key, never a
new variable. It is always set with a token and reset with that token, so a request never sees
what an earlier one left behind on the same thread, worker or task.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import NoReturn, ParamSpec, Protocol, TypeVar

from ._tracing import tracing

_P = ParamSpec("_P")
_R = TypeVar("_R")


class ReadOnlyHeaders(dict[str, str]):
    """A snapshot's headers: a dict that refuses changes, so ``meshprop.current()`` can hand it
    out as it is, and ``dict(meshprop.current())`` copies it at a plain dict's speed."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("the forwarded headers are read-only: copy them with dict() first")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class Snapshot:
    """What one request brought in: the headers to forward, and the ids read from them.

    ``headers`` maps lower-case names to values exactly as they arrived (validated, never
    rewritten). Treat it as read-only: ``meshprop.current()`` hands out a read-only view.

    A snapshot from the fast path arrives as the validated lines of its headers, and the dict
    and the trace ids are built from them the first time something reads them: a request whose
    code never forwards or logs a trace id never pays for them.

    ``has_ended`` is set by the adapter when its request is over. Reads ignore it: work the
    request started keeps its headers after the response.

    ``deadline_at`` is the monotonic instant the caller stops waiting (``_deadline``), or None.
    """

    __slots__ = (
        "_headers",
        "_lines",
        "_span_id",
        "_trace_id",
        "_unpacker",
        "deadline_at",
        "has_ended",
        "request_id",
    )

    def __init__(
        self,
        headers: dict[str, str] | None,
        request_id: str | None,
        trace_id: str | None,
        span_id: str | None,
        lines: bytes | str | None = None,
        unpacker: _Unpacker | None = None,
    ) -> None:
        self._headers = None if headers is None else ReadOnlyHeaders(headers)
        self.request_id = request_id
        self._trace_id = trace_id
        self._span_id = span_id
        self._lines = lines
        self._unpacker = unpacker
        self.has_ended = False
        self.deadline_at: float | None = None

    @property
    def headers(self) -> ReadOnlyHeaders:
        headers = self._headers
        if headers is None:
            headers = self._unpack()
        return headers

    @property
    def trace_id(self) -> str | None:
        if self._headers is None:
            self._unpack()
        return self._trace_id

    @property
    def span_id(self) -> str | None:
        if self._headers is None:
            self._unpack()
        return self._span_id

    def _unpack(self) -> ReadOnlyHeaders:
        # Two threads may both unpack: each builds an equal result, and either one is kept.
        assert self._unpacker is not None and self._lines is not None
        headers, self._trace_id, self._span_id = self._unpacker.unpack(self._lines, self.request_id)
        self._headers = headers
        return headers

    def view(self) -> Mapping[str, str]:
        """The headers, read-only."""
        headers = self._headers
        if headers is None:
            headers = self._unpack()
        return headers

    def __repr__(self) -> str:
        return f"Snapshot({self.headers!r})"


class _Unpacker(Protocol):
    """Builds a snapshot's headers and trace ids from its validated lines (``_fast_path``)."""

    def unpack(
        self, lines: bytes | str, request_id: str | None
    ) -> tuple[ReadOnlyHeaders, str | None, str | None]: ...


#: The snapshot of the request being served in this context, or None outside a request.
CURRENT: contextvars.ContextVar[Snapshot | None] = contextvars.ContextVar(
    "meshprop.snapshot", default=None
)

_EMPTY: Mapping[str, str] = MappingProxyType({})


def active() -> Snapshot | None:
    """The snapshot of the request being served: the adapter's, else the one OpenTelemetry's
    ``MeshPropagator.extract`` keeps in its context for a request no meshprop adapter serves."""
    snapshot = CURRENT.get()
    if snapshot is None:
        bridge = tracing()
        if bridge is not None:
            return bridge.stored_snapshot()
    return snapshot


def current() -> Mapping[str, str]:
    """The headers to forward for the current request (lower-case names); empty outside one."""
    snapshot = active()
    return _EMPTY if snapshot is None else snapshot.view()


def request_id() -> str | None:
    """The current request's ``x-request-id`` (received or generated), or None outside one."""
    snapshot = active()
    return None if snapshot is None else snapshot.request_id


def trace_id() -> str | None:
    """The current trace id as received: the B3 trace id, else the W3C ``traceparent`` one."""
    snapshot = active()
    return None if snapshot is None else snapshot.trace_id


def span_id() -> str | None:
    """The span id that came with the trace id (the caller's span, as seen by this service)."""
    snapshot = active()
    return None if snapshot is None else snapshot.span_id


def wrap(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Bind ``fn`` to the context in force now, for threads, executors and callbacks.

    The context is captured when ``wrap`` is called. Each call runs in a fresh copy of it, so
    the wrapped function may run in several threads at once and its own changes to context
    variables stay inside that call.
    """
    context = contextvars.copy_context()

    @functools.wraps(fn)
    def bound(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return context.copy().run(fn, *args, **kwargs)

    return bound


_EXCEPTION_ATTRIBUTE = "__meshprop_request_id__"


def mark_exception(error: BaseException, snapshot: Snapshot) -> None:
    """Remember on an exception which request raised it.

    Servers log an unhandled exception after the adapter has reset the context, so the log
    record can no longer find the request id in it; ``meshprop.logging.ContextFilter`` reads it
    from the exception instead.
    """
    if snapshot.request_id is not None:
        with contextlib.suppress(AttributeError, TypeError):  # exception types with __slots__
            setattr(error, _EXCEPTION_ATTRIBUTE, snapshot.request_id)


def exception_request_id(error: BaseException) -> str | None:
    """The request id ``mark_exception`` stored on ``error``, if any."""
    return marked_request_id(error)


def mark_request(request: object, snapshot: Snapshot) -> None:
    """Remember on a framework's request object which request id it came with.

    Django logs a 4xx response (``django.request``) after every middleware has returned, with
    the request object on the record: ``ContextFilter`` reads the id from it there.
    """
    if snapshot.request_id is not None:
        with contextlib.suppress(AttributeError, TypeError):
            setattr(request, _EXCEPTION_ATTRIBUTE, snapshot.request_id)


def marked_request_id(marked: object) -> str | None:
    """The request id ``mark_exception`` or ``mark_request`` stored on ``marked``, if any."""
    value = getattr(marked, _EXCEPTION_ATTRIBUTE, None)
    return value if isinstance(value, str) else None
