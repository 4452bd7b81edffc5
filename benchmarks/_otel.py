"""OpenTelemetry set-ups for the comparison: API only, or the SDK recording every span.

"API only" is what an instrumented app costs with no SDK installed (no-op spans); "SDK" records
real spans and hands them to an exporter that drops them, so export I/O is not measured. The
global tracer provider is never set, so the two never leak into each other or into meshprop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def sdk_tracer_provider() -> Any:
    """A TracerProvider that records every span and exports it nowhere."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class DiscardingExporter(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(DiscardingExporter()))
    return provider
