"""The one slot through which OpenTelemetry joins meshprop.

The core never imports OpenTelemetry. Once the process has imported it, ``tracing()`` loads
``_otel_bridge``, which fills the slot; from then on the read paths (``current()``,
``request_id()``, the logging filter) and the clients ask the bridge for what OpenTelemetry
adds: the snapshot a ``MeshPropagator.extract`` left in its context, and the active span's ids.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ._snapshot import Snapshot

_OTEL_TRACE_MODULE = "opentelemetry.trace"


class Tracing(Protocol):
    """What the OpenTelemetry bridge provides."""

    def stored_snapshot(self) -> Snapshot | None:
        """The snapshot ``MeshPropagator.extract`` stored in the current OpenTelemetry context."""

    def span_ids(self) -> tuple[str, str] | None:
        """(trace id, span id) of the active span, in hex, or None."""

    def headers_for(self, snapshot: Snapshot) -> Mapping[str, str]:
        """What a call made now forwards: the active span's ids in place of the inbound trace
        headers, or the snapshot's headers when no span is active. Shared: never change it."""


_slot: Tracing | None = None


def join(bridge: Tracing) -> None:
    """Called once by ``_otel_bridge`` when it is imported."""
    global _slot
    _slot = bridge


def tracing() -> Tracing | None:
    """The OpenTelemetry bridge, or None while the process has not imported OpenTelemetry."""
    if _slot is None and _OTEL_TRACE_MODULE in sys.modules:
        importlib.import_module("meshprop._otel_bridge")
    return _slot
