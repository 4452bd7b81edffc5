"""The header catalogue and the validators.

Everything here is a pure function of its arguments: no I/O, no state, no framework. The rules
come from the specs (openzipkin b3-propagation, W3C trace-context and baggage) and from what
Envoy does, never from a guess: a validator only decides *whether* a value may be forwarded,
it never rewrites one.
"""

from __future__ import annotations

import re

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
B3 = "b3"
B3_TRACE_ID = "x-b3-traceid"
B3_SPAN_ID = "x-b3-spanid"
B3_PARENT_SPAN_ID = "x-b3-parentspanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"

#: What Istio asks every application to forward.
DEFAULT_HEADERS: tuple[str, ...] = (
    REQUEST_ID,
    TRACEPARENT,
    TRACESTATE,
    B3,
    B3_TRACE_ID,
    B3_SPAN_ID,
    B3_PARENT_SPAN_ID,
    B3_SAMPLED,
    B3_FLAGS,
)

#: Opt-in sets of other tracers' headers: preset name -> (header names, header name prefixes).
PRESETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "baggage": ((BAGGAGE,), ()),
    "lightstep": (("x-ot-span-context",), ()),
    "stackdriver": (("x-cloud-trace-context", "grpc-trace-bin"), ()),
    "skywalking": (("sw8",), ()),
    "datadog": ((), ("x-datadog-",)),
}

#: Headers that are never forwarded, whatever the configuration says: the sidecar owns them.
NEVER_FORWARDED_PREFIX = "x-envoy-"

#: Size caps, in characters, for headers whose specs allow more than the general cap.
DEFAULT_MAX_LENGTHS: dict[str, int] = {BAGGAGE: 8192, TRACESTATE: 512}
DEFAULT_MAX_LENGTH = 200

#: Headers that arrive repeated are joined with commas (RFC 9110 list syntax) instead of the
#: first occurrence winning.
JOINED_HEADERS = frozenset({TRACESTATE, BAGGAGE})

_HEX = "0123456789abcdef"
# RFC 9110 section 5.6.2: the characters of a header name (a token).
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ZERO_16 = "0" * 16
_ZERO_32 = "0" * 32

# W3C trace-context, section 3.3.1: a member's key (simple-key / multi-tenant-key) and value.
TRACESTATE_KEY = (
    r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
)
TRACESTATE_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TRACESTATE_MEMBER = re.compile(f"{TRACESTATE_KEY}={TRACESTATE_VALUE}")
_TRACESTATE_MAX_MEMBERS = 32

# Validators are precompiled matchers: one C-level scan of a value instead of several passes.
_lower_hex = re.compile(r"[0-9a-f]+").fullmatch
_b3_trace_id = re.compile(r"[0-9a-f]{16}(?:[0-9a-f]{16})?").fullmatch
_b3_ids = re.compile(r"(?:[0-9a-f]{16}){1,2}-[0-9a-f]{16}(?:-[0-9a-f]{16})?").fullmatch
_traceparent_fields = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").match
_tracestate_member = _TRACESTATE_MEMBER.fullmatch


def is_safe_value(value: str) -> bool:
    """A value may travel in an HTTP header we send: visible ASCII and spaces only.

    Control characters (CR, LF, NUL, tabs...) would allow header injection downstream, and
    non-ASCII text makes HTTP clients raise when they encode the header.
    """
    return value.isascii() and value.isprintable()


def is_header_name(name: str) -> bool:
    """A well-formed HTTP header name (an RFC 9110 token).

    Names picked up by a configured prefix come from the request, not from the Config, so they
    are checked before they are sent anywhere: a CR, LF, space or colon in a name we send would
    let a caller inject headers downstream.
    """
    return name.isascii() and name != "" and not name.strip(_TOKEN_CHARS)


def is_valid_request_id(value: str, max_length: int = DEFAULT_MAX_LENGTH) -> bool:
    """Printable ASCII without spaces, at most ``max_length`` (by default 200) characters.

    Deliberately not a UUID check: Envoy rewrites the version nibble of the UUIDs it generates
    to carry its sampling decision, and load balancers use other formats altogether.
    """
    return (
        0 < len(value) <= max_length
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def is_hex_id(value: str, length: int) -> bool:
    """Lower-case hex of exactly ``length`` characters, not all zero."""
    return len(value) == length and _lower_hex(value) is not None and value.count("0") != length


def is_b3_trace_id(value: str) -> bool:
    """A B3 trace id: 64-bit (16 hex) or 128-bit (32 hex), lower-case, not all zero."""
    return _b3_trace_id(value) is not None and value.count("0") != len(value)


def are_b3_ids(trace_id: str, span_id: str, parent_id: str | None) -> bool:
    """The multi-header B3 ids as one unit: trace id 16 or 32 hex, span (and parent) 16 hex,
    all lower-case and none all-zero.

    The lengths are checked first, so joining the ids with dashes for a single match cannot
    shift one id's characters into another.
    """
    if len(span_id) != 16 or len(trace_id) not in (16, 32):
        return False
    if parent_id is None:
        joined = trace_id + "-" + span_id
    elif len(parent_id) != 16 or parent_id == _ZERO_16:
        return False
    else:
        joined = trace_id + "-" + span_id + "-" + parent_id
    return (
        _b3_ids(joined) is not None
        and span_id != _ZERO_16
        and trace_id != _ZERO_32
        and trace_id != _ZERO_16
    )


def parse_b3_single(value: str) -> tuple[str, str] | None:
    """Validate a single ``b3`` header; return (trace id, span id), ("", "") for a lone decision.

    Format: ``{trace}-{span}[-{0|1|d}[-{parent}]]`` or a lone ``0`` / ``1`` / ``d``.
    ``None`` means invalid.
    """
    if len(value) == 1:
        return ("", "") if value in "01d" else None
    fields = value.split("-")
    count = len(fields)
    if count < 2 or count > 4:
        return None
    trace_id, span_id = fields[0], fields[1]
    if not is_b3_trace_id(trace_id) or not is_hex_id(span_id, 16):
        return None
    if count >= 3 and fields[2] not in ("0", "1", "d"):
        return None
    if count == 4 and not is_hex_id(fields[3], 16):
        return None
    return trace_id, span_id


def is_b3_sampled(value: str) -> bool:
    """``x-b3-sampled``: ``0``/``1``, with ``true``/``false`` accepted as older tracers send."""
    return value in ("0", "1", "true", "false")


def is_b3_flags(value: str) -> bool:
    """``x-b3-flags``: only ``1`` (debug) has a meaning."""
    return value == "1"


def parse_traceparent(value: str) -> tuple[str, str] | None:
    """Validate a W3C ``traceparent``; return (trace id, parent id), or ``None`` if invalid.

    Version ``00`` must be exactly 55 characters; ``ff`` is invalid; a higher version is judged
    by its first four fields and may carry more after a dash.
    """
    if _traceparent_fields(value) is None:
        return None
    if value.startswith("00"):
        if len(value) != 55:
            return None
    elif value.startswith("ff") or (
        len(value) > 55 and (value[55] != "-" or not is_safe_value(value))
    ):
        # The fields after the fourth are forwarded verbatim, so they must be safe to send.
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    if trace_id == _ZERO_32 or parent_id == _ZERO_16:
        return None
    return trace_id, parent_id


def is_valid_tracestate(value: str) -> bool:
    """W3C ``tracestate``: at most 32 well-formed ``key=value`` members, no repeated key."""
    if "," not in value:  # the common case: one vendor's member
        return _tracestate_member(value.strip(" \t")) is not None
    keys: set[str] = set()
    for member in value.split(","):
        member = member.strip(" \t")
        if not member:
            continue
        if _tracestate_member(member) is None:
            return False
        key = member[: member.index("=")]
        if key in keys:
            return False
        keys.add(key)
    return 0 < len(keys) <= _TRACESTATE_MAX_MEMBERS
