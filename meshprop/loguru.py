"""``patcher``: puts the request id and trace ids into every loguru record's ``extra``.

``logger.configure(patcher=meshprop.loguru.patcher)``, then ``{extra[request_id]}`` in a format.
The same values as ``meshprop.logging.ContextFilter`` (``"-"`` when there is none), from the
same source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extras import require
from ._log_ids import NO_ID, log_ids

require("loguru", "loguru")

if TYPE_CHECKING:
    from loguru import Record

__all__ = ["patcher"]


def patcher(record: Record) -> None:
    """Sets ``request_id``, ``trace_id`` and ``span_id`` in ``record["extra"]``, keeping any
    already there (``logger.bind(request_id=...)``, ``contextualize``).

    loguru runs patchers in the thread that logs, before any ``enqueue=True`` hand-off, so the
    ids are the logging call's. A logged exception that a meshprop adapter marked names its own
    request.
    """
    exception = record["exception"]
    request_id, trace_id, span_id = log_ids(None if exception is None else exception.value)
    extra = record["extra"]
    extra.setdefault("request_id", request_id or NO_ID)
    extra.setdefault("trace_id", trace_id or NO_ID)
    extra.setdefault("span_id", span_id or NO_ID)
