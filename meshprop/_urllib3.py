"""urllib3 under ``instrument()``, with ``Config.cap_timeouts``: a call made when nothing is left
of the caller's deadline fails before it connects or sends, with urllib3's own
``ConnectTimeoutError`` (so ``MaxRetryError`` once the retries are spent, and requests'
``ConnectTimeout``). Raised from http.client, the socket's ``TimeoutError`` would reach the
caller as a ``ProtocolError``: urllib3 reads an error while sending as a dropped connection.
The rest of the cap is http.client's (``_http_client``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError

from ._deadline import time_left_for_call
from ._instrument import active_plan


def request(original: Callable[..., None]) -> Callable[..., None]:
    def patched(self: HTTPConnection, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        plan = active_plan()
        if plan is not None and plan.cap_timeouts and time_left_for_call(plan) == 0.0:
            raise ConnectTimeoutError(
                self, f"Connection to {self.host} timed out. (nothing was left of the deadline)"
            )
        original(self, method, url, *args, **kwargs)

    return patched
