"""``setup()``: every Sentry event names the request it happened in.

Once ``setup()`` has run, each event (errors, messages, logging events, transactions) gets the
tags ``request_id`` and ``trace_id``, the same values ``meshprop.logging.ContextFilter`` logs,
so an event can be found from a log line and the reverse. Only ids there are get a tag, and a
tag the app set itself is kept. Sentry's own trace context is left as Sentry made it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ._extras import require
from ._log_ids import log_ids

sentry_sdk = require("sentry_sdk", "sentry")

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

__all__ = ["setup"]

_lock = threading.Lock()
_is_set_up = False


def setup() -> None:
    """Registers meshprop's event processor on Sentry's global scope; calling it again does
    nothing. Before or after ``sentry_sdk.init()``, either works."""
    global _is_set_up
    with _lock:
        if not _is_set_up:
            sentry_sdk.get_global_scope().add_event_processor(_add_ids)
            _is_set_up = True


def _add_ids(event: Event, hint: Hint) -> Event:
    # Sentry runs event processors in the thread that captures the event, so the ids are that
    # context's; an exception a meshprop adapter marked names its own request.
    exc_info = hint.get("exc_info") if isinstance(hint, dict) else None
    error = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else None
    request_id, trace_id, _ = log_ids(error if isinstance(error, BaseException) else None)
    tags = event.setdefault("tags", {})
    if isinstance(tags, dict):
        if request_id is not None:
            tags.setdefault("request_id", request_id)
        if trace_id is not None:
            tags.setdefault("trace_id", trace_id)
    return event
