"""A SpanExporter that appends each finished span to a file as one JSON line."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class JsonLinesExporter(SpanExporter):
    """Writes what the test asserts on: ids, parent, kind, name and attributes."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.get_span_context()
            assert context is not None
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": format(context.trace_id, "032x"),
                        "span_id": format(context.span_id, "016x"),
                        "parent_id": None if parent is None else format(parent.span_id, "016x"),
                        "attributes": dict(span.attributes or {}),
                    }
                )
            )
        with self._lock, open(self._path, "a", encoding="utf-8") as file:
            file.write("".join(line + "\n" for line in lines))
        return SpanExportResult.SUCCESS
