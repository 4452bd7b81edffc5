"""The accelerator: a request of the common shape validated by one regular-expression match.

Inside a mesh nearly every request carries each propagation header at most once, in its usual
form. For such a request the values of the forwarded headers are joined, one line per header in
a fixed order (an empty line for an absent header), and matched once against a pattern built
from the rule table's fragments (``_headers.RULES``): each line's fragment, and for headers that
travel together (``requires``) only the combinations the rules allow. Nothing else is built
until something reads the headers (``Snapshot`` unpacks the lines on first use).

Every fragment accepts a subset of what its rule's validator accepts, so a match never changes
an answer; anything else (a repeat, a rare but valid form, an invalid value) declines, and the
request goes through the general path in ``_capture``. ``MESHPROP_FAST_PATH=0`` turns it off.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

from . import _deadline
from . import _headers as h
from ._snapshot import ReadOnlyHeaders, Snapshot

if TYPE_CHECKING:
    from ._plan import Plan

# An absent header's line: joins as an empty line, yet is told apart by identity from an empty
# value the server delivered (``b""`` is a shared singleton, a bytearray never is).
_ABSENT = bytearray()
_has_value = itemgetter(1)
_BOUNDED_REPEAT = re.compile(r"(\{[0-9]+(?:,[0-9]+)?\})")


def _deadline_at(value: bytes | bytearray | str) -> float | None:
    """The deadline of a matched, non-empty ``x-envoy-expected-rq-timeout-ms`` line."""
    seconds = _deadline.expected_timeout_seconds(value)
    return None if seconds is None else _deadline.at(seconds)


class CaseInsensitiveMultiDict(Protocol):
    """What the fast path reads of a case-insensitive multidict such as aiohttp's headers."""

    def get(self, key: str, default: str, /) -> str: ...

    def getall(self, key: str, default: tuple[()], /) -> list[str] | tuple[()]: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def possessive(pattern: str) -> str:
    """Every bounded repeat made possessive (Python 3.11+ syntax): it then keeps no
    backtracking point. The language stays the same because every repeat in the fragments is
    followed by a character it cannot match (or by the end of the line)."""
    return _BOUNDED_REPEAT.sub(r"\1+", pattern)


def _lines_pattern(fragments: list[str], allowed: list[tuple[bool, ...]], depth: int = 0) -> str:
    """The lines from ``depth`` on, as a tree of choices: at each line the header is present
    (its fragment) or absent (an empty line), keeping only the combinations in ``allowed``.
    Present comes first, as in the usual request."""
    if depth == len(fragments):
        return ""
    newline = "\n" if depth + 1 < len(fragments) else ""
    branches = []
    for present in (True, False):
        rest = [combination for combination in allowed if combination[depth] is present]
        if rest:
            head = f"(?:{fragments[depth]})" if present else ""
            branches.append(head + newline + _lines_pattern(fragments, rest, depth + 1))
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


def _groups(rules: list[h.Rule]) -> list[list[h.Rule]]:
    """The rules in groups of headers that travel together (linked by ``requires``), each group
    and the groups in the order given."""
    group_of: dict[str, list[h.Rule]] = {}
    groups: list[list[h.Rule]] = []
    for rule in rules:
        linked = [group_of[name] for name in rule.requires if name in group_of]
        group = linked[0] if linked else []
        if not linked:
            groups.append(group)
        group.append(rule)
        group_of[rule.name] = group
    return groups


def _allowed(group: list[h.Rule], forwarded: set[str]) -> list[tuple[bool, ...]]:
    """Which members of a group may be present together: each present member's requirements
    present too (a requirement that is not forwarded at all means the member never travels)."""
    allowed = []
    for mask in range(1 << len(group)):
        present = {rule.name for i, rule in enumerate(group) if mask >> i & 1}
        if all(
            n in present for rule in group if rule.name in present for n in rule.requires
        ) and all(n in forwarded for rule in group if rule.name in present for n in rule.requires):
            allowed.append(tuple(rule.name in present for rule in group))
    # Most present first: the usual request carries the whole group.
    return sorted(allowed, key=lambda combination: -sum(combination))


class FastPath:
    """The line order and the one pattern for a plan's headers, and the capture shapes (ASGI
    pairs, WSGI ``environ``, aiohttp's multidict) that use them."""

    __slots__ = (
        "_absent_lines",
        "_b3_ids_line",
        "_b3_line",
        "_b3_span_line",
        "_blank_lines",
        "_environ_keys",
        "_generate",
        "_keeps_received_id",
        "_line_by_bytes",
        "_match_bytes",
        "_match_text",
        "_names",
        "_prefer_w3c",
        "_read_names",
        "_reads_request_id",
        "_repeat_sensitive_names",
        "_traceparent_line",
        "pattern",
    )

    def __init__(self, plan: Plan) -> None:
        rules = [rule for rule, _ in plan.rules]
        caps = {rule.name: cap for rule, cap in plan.rules}
        table_order = {name: i for i, name in enumerate(h.RULES)}
        rules.sort(key=lambda rule: table_order.get(rule.name, len(table_order)))
        groups = _groups(rules)
        forwarded = {rule.name for rule in rules}
        names: list[str] = []
        lines: list[str] = []
        self._reads_request_id = plan.forwards_request_id
        if plan.forwards_request_id:
            names.append(plan.request_id_name)
            if plan.trust_request_id:
                rule = h.RULES[h.REQUEST_ID]
                lines.append(f"(?:{h.fragment_for(rule, plan.request_id_cap)}|)")
            else:
                lines.append("[^\\n]*")  # replaced, whatever it is
        for group in groups:
            fragments = [h.fragment_for(rule, caps[rule.name]) for rule in group]
            lines.append(_lines_pattern(fragments, _allowed(group, forwarded)))
            names += [rule.name for rule in group]
        self._names = tuple(names)
        # The last line is the deadline's: read, never forwarded (``unpack`` leaves it out).
        lines.append(f"(?:{_deadline.EXPECTED_TIMEOUT_FRAGMENT})?")
        names.append(_deadline.EXPECTED_TIMEOUT)
        self._read_names = tuple(names)
        self._keeps_received_id = plan.forwards_request_id and plan.trust_request_id
        self._generate = plan.generate_request_id
        self._line_by_bytes = {name.encode("ascii"): line for line, name in enumerate(names)}
        self._absent_lines: list[bytes | bytearray] = [_ABSENT] * len(names)
        self._blank_lines = ("",) * len(names)
        self._repeat_sensitive_names = tuple(
            name for name in self._names if h.rule_for(name).repeats != "first"
        )
        self._environ_keys = tuple("HTTP_" + n.upper().replace("-", "_") for n in names)
        line_of = {name: line for line, name in enumerate(names)}
        # Where the trace ids are read from (-1: not forwarded): b3, the multi-header ids, and
        # traceparent, in that order unless W3C is preferred.
        self._b3_line = line_of.get(h.B3, -1)
        has_ids = h.B3_TRACE_ID in line_of and h.B3_SPAN_ID in line_of
        self._b3_ids_line = line_of[h.B3_TRACE_ID] if has_ids else -1
        self._b3_span_line = line_of[h.B3_SPAN_ID] if has_ids else -1
        self._traceparent_line = line_of.get(h.TRACEPARENT, -1)
        self._prefer_w3c = plan.prefer_w3c
        pattern = "\n".join(lines)
        if sys.version_info >= (3, 11):
            pattern = possessive(pattern)
        self.pattern = pattern
        self._match_text = re.compile(pattern).fullmatch
        self._match_bytes = re.compile(pattern.encode("ascii")).fullmatch

    @classmethod
    def for_plan(cls, plan: Plan) -> FastPath | None:
        """The fast path of a plan, or None where it does not apply: forwarding by prefix needs
        a look at every header name, a request id header that is also a trace header is
        nothing to optimise for, and a budget that named headers could exceed needs a count."""
        if plan.prefixes or (
            plan.request_id_name in h.RULES and plan.request_id_name != (h.REQUEST_ID)
        ):
            return None
        if not plan.fits_budget():
            return None
        return cls(plan)

    def capture_asgi(self, headers: Iterable[tuple[bytes, bytes]]) -> Snapshot | None:
        """ASGI lower-case byte pairs; None if a forwarded header is repeated or does not match."""
        lines = self._absent_lines.copy()
        line_of = self._line_by_bytes.get
        for name, value in headers:
            line = line_of(name)
            if line is not None:
                if lines[line] is not _ABSENT:
                    return None  # repeated: each header's rule says what that means
                lines[line] = value
        joined = b"\n".join(lines)
        if self._match_bytes(joined) is None:
            return None
        if self._keeps_received_id and lines[0]:
            snapshot = Snapshot(None, lines[0].decode("latin-1"), None, None, joined, self)
        else:
            snapshot = Snapshot(None, self._new_request_id(), None, None, joined, self)
        if lines[-1]:
            snapshot.deadline_at = _deadline_at(lines[-1])
        return snapshot

    def capture_environ(self, environ: Mapping[str, Any]) -> Snapshot | None:
        """A WSGI ``environ`` (the server has already joined repeated headers)."""
        lines = list(map(environ.get, self._environ_keys, self._blank_lines))
        try:
            joined = "\n".join(lines)
        except TypeError:  # a value that is not a str: the general path decides
            return None
        if self._match_text(joined) is None:
            return None
        if self._keeps_received_id and lines[0]:
            snapshot = Snapshot(None, lines[0], None, None, joined, self)
        else:
            snapshot = Snapshot(None, self._new_request_id(), None, None, joined, self)
        if lines[-1]:
            snapshot.deadline_at = _deadline_at(lines[-1])
        return snapshot

    def capture_multidict(self, headers: CaseInsensitiveMultiDict) -> Snapshot | None:
        """A case-insensitive multidict (aiohttp's ``request.headers``): ``get`` gives a
        name's first value, which decides where the rule says the first wins; the names whose
        repeats mean more are checked with ``getall``."""
        getall = headers.getall
        for name in self._repeat_sensitive_names:
            if len(getall(name, ())) > 1:
                return None
        lines = list(map(headers.get, self._read_names, self._blank_lines))
        joined = "\n".join(lines)
        if self._match_text(joined) is None:
            return None
        if self._keeps_received_id and lines[0]:
            snapshot = Snapshot(None, lines[0], None, None, joined, self)
        else:
            snapshot = Snapshot(None, self._new_request_id(), None, None, joined, self)
        if lines[-1]:
            snapshot.deadline_at = _deadline_at(lines[-1])
        return snapshot

    def _new_request_id(self) -> str | None:
        generate: Callable[[], str] | None = self._generate
        return None if generate is None else generate()

    def unpack(
        self, joined: bytes | str, request_id: str | None
    ) -> tuple[ReadOnlyHeaders, str | None, str | None]:
        """The headers and trace ids of lines that matched: what ``Snapshot`` builds on first
        use."""
        text = joined.decode("latin-1") if isinstance(joined, bytes) else joined
        values = text.split("\n")
        if self._reads_request_id:
            values[0] = request_id or ""
        # One value more than names: the deadline's line, which zip leaves out.
        headers = ReadOnlyHeaders(filter(_has_value, zip(self._names, values)))  # noqa: B905
        traceparent = values[self._traceparent_line] if self._traceparent_line >= 0 else ""
        if traceparent and self._prefer_w3c:
            return headers, traceparent[3:35], traceparent[36:52]
        if self._b3_line >= 0:
            b3 = values[self._b3_line]
            if len(b3) > 1:  # not a lone sampling decision
                fields = b3.split("-", 2)
                return headers, fields[0], fields[1]
        if self._b3_ids_line >= 0 and values[self._b3_ids_line]:
            return headers, values[self._b3_ids_line], values[self._b3_span_line]
        if traceparent:
            return headers, traceparent[3:35], traceparent[36:52]
        return headers, None, None
