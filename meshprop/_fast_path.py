"""The common request, validated by one regular-expression match.

Inside a mesh nearly every request carries each propagation header at most once, in its usual
form. For such a request the values of the forwarded headers are joined, one line per header in
a fixed order (an empty line for a header that is absent), and the joined text is matched once
against a pattern built from the same rules the validators in ``_headers`` apply. One C-level
match replaces a dozen validator calls, and nothing else is built until something reads the
headers (``Snapshot`` unpacks the lines on first use).

The pattern accepts only a strict subset of what the validators accept: no surrounding blanks,
``traceparent`` version ``00``, ``tracestate`` of at most three members. Anything else (a
repeated header, a rare but valid form, an invalid value) makes the match fail, and the request
goes through the general path in ``_capture``, which judges header by header. So this module never
changes an answer, it only skips work; the tests hold both paths to the same result.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from . import _headers as h
from ._snapshot import Snapshot

if TYPE_CHECKING:
    from ._config import Config

# Written for the cost of Python's backtracking matcher as much as for the language: entering an
# alternative, a lookaround, or a repeat with more pattern after it saves a backtracking point,
# dearer than checking a dozen characters. So alternatives are ordered for the usual request (one
# that starts with a literal is ruled out without being entered), the all-zero checks give up at
# the first digit that is not 0, and no repeat ever needs to give characters back.
_HEX = "[0-9a-f]"
_ID_16 = f"(?!0{{16}}){_HEX}{{16}}"
_ID_32 = f"(?!0{{32}}){_HEX}{{32}}"
_TRACEPARENT_00 = f"00-{_ID_32}-{_ID_16}-{_HEX}{_HEX}"
_B3_AFTER_TRACE_ID = f"-{_ID_16}(?:-[01d](?:-{_ID_16}|)|)"
# An alternative for each length of trace id, here and in the multi-header unit: no choice is
# left inside one.
_B3_SINGLE = f"{_ID_32}{_B3_AFTER_TRACE_ID}|{_ID_16}{_B3_AFTER_TRACE_ID}|[01d]"
_B3_SAMPLED = "0|1|true|false"
_B3_FLAGS = "1"
# A member's value: at most 256 characters, the last one not a space.
_TRACESTATE_VALUE = "[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{1,256}(?<! )"
# Up to three members, none repeating an earlier member's key: groups 1 and 2 hold a key with
# its "=", so that a key which merely starts with an earlier one is not taken for it.
_TRACESTATE = (
    f"({h.TRACESTATE_KEY}=){_TRACESTATE_VALUE}"
    f"(?:,(?!\\1)({h.TRACESTATE_KEY}=){_TRACESTATE_VALUE}"
    f"(?:,(?!\\1)(?!\\2){h.TRACESTATE_KEY}={_TRACESTATE_VALUE}|)|)"
)
# The longest tracestate that pattern accepts (three members of a 256-character key, as
# TRACESTATE_KEY allows, "=" and a 256-character value, two commas): a cap at least this long
# needs no check of its own.
_TRACESTATE_LONGEST = 3 * 513 + 2
# The longest value each structured pattern above accepts, to respect smaller configured caps.
_LONGEST = {
    h.TRACEPARENT: 55,
    h.B3: 68,
    h.B3_TRACE_ID: 32,
    h.B3_SPAN_ID: 16,
    h.B3_PARENT_SPAN_ID: 16,
    h.B3_SAMPLED: 5,
    h.B3_FLAGS: 1,
}
_ORDER = (
    h.TRACEPARENT,
    h.TRACESTATE,
    h.B3,
    h.B3_TRACE_ID,
    h.B3_SPAN_ID,
    h.B3_PARENT_SPAN_ID,
    h.B3_SAMPLED,
    h.B3_FLAGS,
)

# An absent header's line: joins as an empty line, yet is told apart by identity from an empty
# value the server delivered (``b""`` is a shared singleton, a bytearray never is).
_ABSENT = bytearray()


class CaseInsensitiveMultiDict(Protocol):
    """What the fast path reads of a case-insensitive multidict such as aiohttp's headers."""

    def get(self, key: str, default: str, /) -> str: ...

    def getall(self, key: str, default: tuple[()], /) -> list[str] | tuple[()]: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


def _safe_value(cap: int) -> str:
    """A forwarded value without a rule of its own: visible ASCII, inner spaces allowed."""
    if cap == 1:
        return "[\\x21-\\x7e]"
    return f"[\\x21-\\x7e][\\x20-\\x7e]{{0,{cap - 1}}}(?<! )"


def _optional(pattern: str) -> str:
    return f"(?:{pattern}|)"


_BOUNDED_REPEAT = re.compile(r"(\{[0-9]+(?:,[0-9]+)?\})")


def _possessive(pattern: str) -> str:
    """From Python 3.11 on, every bounded repeat made possessive: it then keeps no backtracking
    point, the largest saving there is. The language stays the same because every repeat in the
    pattern is followed by a character it cannot match (or by the end), so giving characters
    back could never lead to a match; the tests hold both forms to the same answers."""
    if sys.version_info < (3, 11):
        return pattern
    return _BOUNDED_REPEAT.sub(r"\1+", pattern)


class FastPath:
    """The fixed line order and the one pattern for a Config's headers, and the capture
    shapes (ASGI pairs, WSGI ``environ``, aiohttp's multidict) that use them."""

    __slots__ = (
        "_absent_lines",
        "_b3_line",
        "_b3_trace_line",
        "_blank_lines",
        "_environ_keys",
        "_generate",
        "_keeps_received_id",
        "_line_by_bytes",
        "_match_bytes",
        "_match_text",
        "_names",
        "_reads_request_id",
        "_repeat_sensitive_names",
        "_traceparent_line",
        "_trust_request_id",
    )

    def __init__(
        self,
        forwarded: tuple[str, ...],
        request_id_name: str,
        request_id_cap: int,
        trust_request_id: bool,
        generate: Callable[[], str] | None,
        caps: Mapping[str, int],
        default_cap: int,
    ) -> None:
        names = [name for name in forwarded if name == request_id_name]
        names += [name for name in _ORDER if name in forwarded and name != request_id_name]
        names += [name for name in forwarded if name not in names]
        self._names = tuple(names)
        self._reads_request_id = request_id_name in forwarded
        self._trust_request_id = trust_request_id
        self._generate = generate
        # The first line holds the request id header, and a received id is kept as it is.
        self._keeps_received_id = self._reads_request_id and trust_request_id
        self._line_by_bytes = {name.encode("ascii"): line for line, name in enumerate(names)}
        self._absent_lines: list[bytes | bytearray] = [_ABSENT] * len(names)
        self._blank_lines = ("",) * len(names)
        self._repeat_sensitive_names = tuple(
            name for name in names if name in h.JOINED_HEADERS or name == h.TRACEPARENT
        )
        self._environ_keys = tuple("HTTP_" + n.upper().replace("-", "_") for n in names)
        line_of = {name: line for line, name in enumerate(names)}
        self._traceparent_line = line_of.get(h.TRACEPARENT)
        self._b3_line = line_of.get(h.B3)
        self._b3_trace_line = line_of.get(h.B3_TRACE_ID) if h.B3_SPAN_ID in line_of else None

        lines = [
            self._line_pattern(name, names, request_id_name, request_id_cap, caps, default_cap)
            for name in names
        ]
        pattern = _possessive("\n".join(line for line in lines if line is not None))
        self._match_text = re.compile(pattern).fullmatch
        self._match_bytes = re.compile(pattern.encode("ascii")).fullmatch

    def _line_pattern(
        self,
        name: str,
        names: list[str],
        request_id_name: str,
        request_id_cap: int,
        caps: Mapping[str, int],
        default_cap: int,
    ) -> str | None:
        """The pattern of one line, or None for a line that the previous line's pattern
        already covers (the parts of a unit: ``tracestate`` after ``traceparent``, the B3 ids)."""
        if name == request_id_name:
            if not self._trust_request_id:
                return "[^\\n]*"  # replaced whatever it is
            return f"[\\x21-\\x7e]{{0,{request_id_cap}}}"
        if name == h.TRACEPARENT:
            if h.TRACESTATE not in names:
                return _optional(_TRACEPARENT_00)
            cap = caps.get(h.TRACESTATE, default_cap)
            state = _TRACESTATE
            if cap < _TRACESTATE_LONGEST:
                # Not more than ``cap`` characters since the line began: a look behind from the
                # line's end, skipped without a look while the text so far is shorter than that.
                state += f"(?<![^\\n]{{{cap + 1}}})"
            return f"(?:{_TRACEPARENT_00}\n{_optional(state)}|\n)"
        if name == h.TRACESTATE:
            return None if h.TRACEPARENT in names else ""  # never forwarded without traceparent
        if name == h.B3:
            return f"(?:|{_B3_SINGLE})"  # absent first: a sidecar sends the multi-header form
        if name in (h.B3_TRACE_ID, h.B3_SPAN_ID, h.B3_PARENT_SPAN_ID):
            return self._b3_ids_pattern(name, names)
        if name == h.B3_SAMPLED:
            return _optional(_B3_SAMPLED)
        if name == h.B3_FLAGS:
            return f"{_B3_FLAGS}?"
        return _optional(_safe_value(caps.get(name, default_cap)))

    @staticmethod
    def _b3_ids_pattern(name: str, names: list[str]) -> str | None:
        """The multi-header B3 ids travel as one unit: a trace id and a span id together, with
        or without a parent, or none of them (these lines follow each other in ``_ORDER``)."""
        if h.B3_TRACE_ID not in names or h.B3_SPAN_ID not in names:
            return ""  # half a unit is never forwarded: only an absent header fits
        if name != h.B3_TRACE_ID:
            return None
        trace_ids = (_ID_32, _ID_16)
        if h.B3_PARENT_SPAN_ID in names:
            ids = [f"{trace_id}\n{_ID_16}\n{_optional(_ID_16)}" for trace_id in trace_ids]
            return f"(?:\n\n|{'|'.join(ids)})"
        ids = [f"{trace_id}\n{_ID_16}" for trace_id in trace_ids]
        return f"(?:\n|{'|'.join(ids)})"

    @classmethod
    def for_config(cls, config: Config) -> FastPath | None:
        """The fast path for a Config, or None where it would not pay: forwarding by prefix
        needs a look at every header name, a cap below a structured header's usual length would
        need a length check per line, and a trace header used as the request id header is
        nothing to optimise for."""
        forwarded = config._forwarded_names
        caps = config._max_lengths
        if config._prefixes or config._request_id_name in _ORDER:
            return None
        for name, longest in _LONGEST.items():
            if name in forwarded and caps.get(name, config.max_length) < longest:
                return None
        return cls(
            forwarded,
            config._request_id_name,
            config._request_id_max_length,
            config.trust_incoming_request_id,
            config.request_id_generator,
            caps,
            config.max_length,
        )

    def capture_asgi(self, headers: Iterable[tuple[bytes, bytes]]) -> Snapshot | None:
        """ASGI lower-case byte pairs; None if a forwarded header is repeated or does not match."""
        lines = self._absent_lines.copy()
        line_of = self._line_by_bytes.get
        for name, value in headers:
            line = line_of(name)
            if line is not None:
                if lines[line] is not _ABSENT:
                    return None  # repeated: each header's spec says what that means
                lines[line] = value
        joined = b"\n".join(lines)
        if self._match_bytes(joined) is None:
            return None
        if self._keeps_received_id and lines[0]:
            return Snapshot(None, lines[0].decode("latin-1"), None, None, joined, self)
        return Snapshot(None, self._new_request_id(), None, None, joined, self)

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
            return Snapshot(None, lines[0], None, None, joined, self)
        return Snapshot(None, self._new_request_id(), None, None, joined, self)

    def capture_multidict(self, headers: CaseInsensitiveMultiDict) -> Snapshot | None:
        """A case-insensitive multidict (aiohttp's ``request.headers``): ``get`` gives a
        name's first value, which decides, as for any repeated header whose spec says nothing
        else; the names whose repeats mean more are checked with ``getall``."""
        getall = headers.getall
        for name in self._repeat_sensitive_names:
            if len(getall(name, ())) > 1:
                return None
        lines = list(map(headers.get, self._names, self._blank_lines))
        joined = "\n".join(lines)
        if self._match_text(joined) is None:
            return None
        if self._keeps_received_id and lines[0]:
            return Snapshot(None, lines[0], None, None, joined, self)
        return Snapshot(None, self._new_request_id(), None, None, joined, self)

    def _new_request_id(self) -> str | None:
        return None if self._generate is None else self._generate()

    def unpack(
        self, joined: bytes | str, request_id: str | None
    ) -> tuple[dict[str, str], str | None, str | None]:
        """The headers and trace ids of lines that matched: what ``Snapshot`` builds on first
        use. The ids come from ``b3``, else the multi-header B3 ids, else ``traceparent``."""
        text = joined.decode("latin-1") if isinstance(joined, bytes) else joined
        values: list[str] = text.split("\n")
        if self._reads_request_id:
            values[0] = request_id or ""
        headers = {name: value for name, value in zip(self._names, values, strict=True) if value}
        b3 = values[self._b3_line] if self._b3_line is not None else ""
        if len(b3) > 1:  # not a lone sampling decision
            fields = b3.split("-", 2)
            return headers, fields[0], fields[1]
        line = self._b3_trace_line
        if line is not None and values[line]:
            return headers, values[line], values[line + 1]
        line = self._traceparent_line
        if line is not None and values[line]:
            traceparent = values[line]
            return headers, traceparent[3:35], traceparent[36:52]
        return headers, None, None
