"""The in-process tests' log handler: it keeps each record, as the filter left it."""

from __future__ import annotations

import logging
import threading

RECORDS: list[logging.LogRecord] = []
_LOCK = threading.Lock()


class RecordsHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        with _LOCK:
            RECORDS.append(record)
