"""The three ids every log integration writes: one source for stdlib logging, structlog, loguru
and Sentry, so a line and an event about the same request always name the same ids."""

from __future__ import annotations

from ._snapshot import active, marked_request_id
from ._tracing import tracing

#: What a log line shows for an id there is none of, so a format string never fails.
NO_ID = "-"


def log_ids(marked: object | None = None) -> tuple[str | None, str | None, str | None]:
    """(request id, trace id, span id) for a record logged now, each None when there is none.

    The ids are the current request's (``meshprop.request_id()`` …), except that an active
    OpenTelemetry span's ids win, as the trace backend shows them, and that ``marked`` (the
    exception being logged, or a framework's request object) names its own request when a
    meshprop adapter marked it: a server logs an unhandled exception after that request's
    context is gone, in a task that may hold another request's.
    """
    snapshot = active()
    request_id = trace_id = span_id = None
    if snapshot is not None:
        request_id, trace_id, span_id = snapshot.request_id, snapshot.trace_id, snapshot.span_id
    bridge = tracing()
    if bridge is not None:
        span_ids = bridge.span_ids()
        if span_ids is not None:
            trace_id, span_id = span_ids
    if marked is not None:
        request_id = marked_request_id(marked) or request_id
    return request_id, trace_id, span_id
