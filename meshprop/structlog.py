"""``add_context``: a structlog processor that adds the request id and trace ids to each event.

The same values as ``meshprop.logging.ContextFilter`` (``"-"`` when there is none), from the
same source, so structlog lines and stdlib lines about one request name the same ids.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ._extras import require
from ._log_ids import NO_ID, log_ids

require("structlog", "structlog")

if TYPE_CHECKING:
    from structlog.typing import EventDict, WrappedLogger

__all__ = ["add_context"]


def add_context(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Sets ``request_id``, ``trace_id`` and ``span_id``; keys already in the event are kept.

    An exception being logged (``exc_info``, or ``log.exception()``) names its own request when
    a meshprop adapter marked it. Put it before ``format_exc_info`` / ``dict_tracebacks``, which
    replace ``exc_info`` with its text.
    """
    request_id, trace_id, span_id = log_ids(_logged_exception(event_dict.get("exc_info")))
    event_dict.setdefault("request_id", request_id or NO_ID)
    event_dict.setdefault("trace_id", trace_id or NO_ID)
    event_dict.setdefault("span_id", span_id or NO_ID)
    return event_dict


def _logged_exception(exc_info: object) -> BaseException | None:
    """The exception an ``exc_info`` value names, in each form structlog accepts."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        error = exc_info[1]
        return error if isinstance(error, BaseException) else None
    return None
