"""The request id and trace ids on every stdlib log record.

Use them in a format string as ``%(request_id)s %(trace_id)s %(span_id)s``; each is ``"-"`` when
there is none, so the format never fails on a record logged outside a request. ``ContextFilter``
is for ``dictConfig`` and code; ``ContextFormatter`` for an ``.ini`` ``fileConfig``, which cannot
attach filters.
"""

from __future__ import annotations

import logging

from ._log_ids import NO_ID, log_ids

__all__ = ["ContextFilter", "ContextFormatter"]


def _add_ids(record: logging.LogRecord) -> None:
    """Set ``request_id``, ``trace_id`` and ``span_id`` on ``record``, unless already there."""
    exc_info = record.exc_info
    values = record.__dict__
    # What names its own request: the exception being logged, else the request object a
    # framework logs with (Django's 4xx records, after every middleware has returned).
    marked = exc_info[1] if exc_info and exc_info[1] is not None else values.get("request")
    request_id, trace_id, span_id = log_ids(marked)
    values.setdefault("request_id", request_id or NO_ID)
    values.setdefault("trace_id", trace_id or NO_ID)
    values.setdefault("span_id", span_id or NO_ID)


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` to every record; never drops one.

    The ids are the request's (``_log_ids.log_ids``), except that an active OpenTelemetry
    span's win, and that a record of an exception a meshprop adapter marked, or of a request
    object it marked (``record.request``, as Django's ``django.request`` records carry), gets
    that one's own request id. Values already on the record (from ``extra=``) are left alone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _add_ids(record)
        return True


class ContextFormatter(logging.Formatter):
    """A ``logging.Formatter`` that adds the same three fields as ``ContextFilter`` first.

    For configurations that can name a formatter class but not a filter: an ``.ini`` file read
    by ``logging.config.fileConfig`` (also ``uvicorn --log-config logging.ini``). It reads the
    context it formats in, which is the logging call's unless a ``QueueHandler`` hands the record
    to another thread first: there, put ``ContextFilter`` on the ``QueueHandler``.
    """

    def format(self, record: logging.LogRecord) -> str:
        _add_ids(record)
        return super().format(record)
