"""``ContextFilter``: the request id and trace ids on every log record.

Use it in a format string as ``%(request_id)s %(trace_id)s %(span_id)s``; each is ``"-"`` when
there is none, so the format never fails on a record logged outside a request.
"""

from __future__ import annotations

import logging
import sys

from ._snapshot import CURRENT, exception_request_id

__all__ = ["ContextFilter"]

_OTEL_TRACE_MODULE = "opentelemetry.trace"
_NONE = "-"


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` to every record; never drops one.

    With an active OpenTelemetry span, ``trace_id``/``span_id`` are that span's (what the trace
    backend shows); otherwise the ids the request came in with. A record logged after the
    request's context is gone (a server logging an unhandled exception) still gets the request
    id when the exception was marked by a meshprop adapter. Values already on the record (from
    ``extra=``) are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        snapshot = CURRENT.get()
        span_ids = None
        if _OTEL_TRACE_MODULE in sys.modules:
            from ._otel_bridge import active_span_ids, current_snapshot

            snapshot = current_snapshot()
            span_ids = active_span_ids()
        request_id = trace_id = span_id = None
        if snapshot is not None:
            request_id, trace_id, span_id = snapshot.request_id, snapshot.trace_id, snapshot.span_id
        if span_ids is not None:
            trace_id, span_id = span_ids
        if request_id is None and record.exc_info and record.exc_info[1] is not None:
            request_id = exception_request_id(record.exc_info[1])
        values = record.__dict__
        values.setdefault("request_id", request_id or _NONE)
        values.setdefault("trace_id", trace_id or _NONE)
        values.setdefault("span_id", span_id or _NONE)
        return True
