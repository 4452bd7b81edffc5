"""``ContextFilter``: the request id and trace ids on every log record.

Use it in a format string as ``%(request_id)s %(trace_id)s %(span_id)s``; each is ``"-"`` when
there is none, so the format never fails on a record logged outside a request.
"""

from __future__ import annotations

import logging

from ._snapshot import active, marked_request_id
from ._tracing import tracing

__all__ = ["ContextFilter"]

_NONE = "-"


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` to every record; never drops one.

    The values are what ``meshprop.request_id()`` / ``trace_id()`` / ``span_id()`` read, except
    that an active OpenTelemetry span's ids win (what the trace backend shows), and that a
    record of an exception a meshprop adapter let through gets the request id marked on it: the
    exception names the request that raised it, and a server logs it after that request's
    context is gone, in a task that may hold another's. Likewise a record that carries the
    request it is about (``record.request``, as Django's ``django.request`` records do) gets the
    id an adapter marked on that request. Values already on the record (from ``extra=``) are
    left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        snapshot = active()
        request_id = trace_id = span_id = None
        if snapshot is not None:
            request_id, trace_id, span_id = snapshot.request_id, snapshot.trace_id, snapshot.span_id
        bridge = tracing()
        if bridge is not None:
            span_ids = bridge.span_ids()
            if span_ids is not None:
                trace_id, span_id = span_ids
        values = record.__dict__
        about = values.get("request")
        if about is not None:
            request_id = marked_request_id(about) or request_id
        if record.exc_info and record.exc_info[1] is not None:
            request_id = marked_request_id(record.exc_info[1]) or request_id
        values.setdefault("request_id", request_id or _NONE)
        values.setdefault("trace_id", trace_id or _NONE)
        values.setdefault("span_id", span_id or _NONE)
        return True
