"""The figures each part gathers, the violations it found, and how they are printed."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

EXAMPLE_LIMIT = 600


@dataclass
class _Kind:
    count: int
    example: str


class Violations:
    """Violations grouped by kind: how many, and the shortest example seen. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kinds: dict[str, _Kind] = {}

    def add(self, kind: str, example: str, count: int = 1) -> None:
        with self._lock:
            entry = self.kinds.get(kind)
            if entry is None:
                self.kinds[kind] = _Kind(count, example)
                return
            entry.count += count
            if len(example) < len(entry.example):
                entry.example = example

    def total(self) -> int:
        return sum(entry.count for entry in self.kinds.values())

    def merge(self, other: Violations, prefix: str = "") -> None:
        for kind, entry in other.kinds.items():
            self.add(prefix + kind, entry.example, entry.count)

    def items(self) -> list[tuple[str, int, str]]:
        return sorted(
            ((kind, entry.count, entry.example) for kind, entry in self.kinds.items()),
            key=lambda item: (-item[1], item[0]),
        )


@dataclass
class Figures:
    """One part's figures. ``errors`` are requests that got no usable answer (transport errors,
    timeouts, a 500); ``rejected`` ones the server refused itself (4xx), which is its right."""

    part: str
    inputs: int = 0
    requests: int = 0
    max_concurrency: int = 0
    cross_talk: int = 0
    errors: int = 0
    rejected: int = 0
    memory: list[str] = field(default_factory=list)
    seconds: float = 0.0
    violations: Violations = field(default_factory=Violations)
    notes: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, **increments: int) -> None:
        with self._lock:
            for name, amount in increments.items():
                setattr(self, name, getattr(self, name) + amount)

    def error(self, kind: str, example: str) -> None:
        self.count(errors=1)
        self.violations.add("error: " + kind, example)

    def cross_talk_found(self, kind: str, example: str) -> None:
        """A request saw another request's ids (or an earlier one's): counted, and kept."""
        self.count(cross_talk=1)
        self.violations.add(kind, example)

    def cross_talk_in(self, kind: str, example: str, wrong: Mapping[str, object]) -> None:
        """``wrong``, the fields of one answer that do not hold the request's own ids: if any,
        one cross-talk, kept as ``kind: field, field``."""
        if wrong:
            self.cross_talk_found(f"{kind}: {', '.join(sorted(wrong))}", f"{example}: {wrong}")

    @contextlib.contextmanager
    def harness_failure_on(self, server_kind: str, server_label: str) -> Iterator[None]:
        """A failure of the harness itself on one server is reported as an error of that
        server, never lost, and the part goes on with the next server."""
        try:
            yield
        except Exception as error:
            self.error(f"harness failed on {server_kind}", f"{server_label}: {error!r}")

    @property
    def failed(self) -> bool:
        return bool(self.violations.kinds) or self.cross_talk > 0 or self.errors > 0


def clip(text: str, limit: int = EXAMPLE_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


#: Growth that flags a leak. Generous on purpose for the whole heap (allocators keep what
#: thousands of connections used, servers buffer and cache: hypercorn keeps ~10 objects per
#: request); strict for meshprop's own objects, of which a finished request leaves none (some
#: servers keep the last context of each closed connection a while: at most one per
#: connection, so a quarter of the requests is the bound).
RSS_LIMIT_MIB = 512
OBJECTS_PER_REQUEST = 20
OBJECTS_FLOOR = 20000
MESHPROP_OBJECTS_LIMIT = 100


def memory_check(
    figures: Figures, label: str, before: Mapping[str, Any], after: Mapping[str, Any], requests: int
) -> None:
    """Record one server's (or the process's) growth, and flag it past the limits."""
    rss = (int(after["rss"]) - int(before["rss"])) / 2**20
    objects = int(after["objects"]) - int(before["objects"])
    own = int(after.get("meshprop_objects", 0)) - int(before.get("meshprop_objects", 0))
    line = (
        f"{label}: RSS {rss:+.1f} MiB, gc objects {objects:+d}, meshprop objects {own:+d}"
        f" over {requests} requests"
    )
    figures.memory.append(line)
    if (
        rss > RSS_LIMIT_MIB
        or objects > max(OBJECTS_FLOOR, OBJECTS_PER_REQUEST * requests)
        or own > max(MESHPROP_OBJECTS_LIMIT, requests // 4)
    ):
        figures.violations.add("memory growth past the limit", line)


def render(parts: Iterable[Figures], wall: float) -> str:
    parts = list(parts)
    header = (
        "part",
        "inputs",
        "requests",
        "max-conc",
        "cross-talk",
        "errors",
        "rejected",
        "violations",
        "seconds",
    )
    rows = [
        (
            p.part,
            p.inputs,
            p.requests,
            p.max_concurrency,
            p.cross_talk,
            p.errors,
            p.rejected,
            p.violations.total(),
            f"{p.seconds:.1f}",
        )
        for p in parts
    ]
    rows.append(
        (
            "total",
            sum(p.inputs for p in parts),
            sum(p.requests for p in parts),
            max((p.max_concurrency for p in parts), default=0),
            sum(p.cross_talk for p in parts),
            sum(p.errors for p in parts),
            sum(p.rejected for p in parts),
            sum(p.violations.total() for p in parts),
            f"{wall:.1f}",
        )
    )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["", "== meshprop stress figures"]
    for row in [header, *rows]:
        lines.append("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths, strict=True)))
    lines.append("")
    lines.append("== memory growth")
    for p in parts:
        for line in p.memory:
            lines.append(f"  [{p.part}] {line}")
    for p in parts:
        for note in p.notes:
            lines.append(f"  [{p.part}] note: {note}")
    lines.append("")
    lines.append("== violations")
    found = False
    for p in parts:
        for kind, count, example in p.violations.items():
            found = True
            lines.append(f"  [{p.part}] {kind}  x{count}")
            lines.append(f"      e.g. {clip(example)}")
    if not found:
        lines.append("  none")
    return "\n".join(lines)
