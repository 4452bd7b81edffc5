"""The header catalogue: one rule per header, and the validators the rules use.

Pure functions and constants: no I/O, no state, no framework. The rules come from the specs
(openzipkin b3-propagation as brave reads it, W3C trace-context and baggage) and from what
Envoy does. A validator only decides *whether* a value may be forwarded; it never rewrites one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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
    "skywalking": (("sw8", "sw8-correlation", "sw8-x"), ()),
    "datadog": ((), ("x-datadog-",)),
    "aws": (("x-amzn-trace-id",), ()),
}

#: Headers that are never forwarded, whatever the configuration says: the sidecar owns them.
NEVER_FORWARDED_PREFIX = "x-envoy-"

#: Credentials: never picked up by a prefix; naming one explicitly forwards it, with a warning.
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-amz-security-token",
        "x-csrf-token",
        "x-xsrf-token",
    }
)

#: The cap, in characters, of a header without a cap of its own (``Config.max_length``).
DEFAULT_MAX_LENGTH = 200
#: No cap may exceed this: Envoy's default limit for all request headers together is 60 KiB.
LARGEST_CAP = 65536

_ZERO_16 = "0" * 16
_ZERO_32 = "0" * 32
# RFC 9110 section 5.6.2: the characters of a header name (a token).
_TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# W3C trace-context (editor's draft), tracestate list members: the key and the value.
TRACESTATE_KEY = "[0-9a-z][_0-9a-z*/@-]{0,255}"
TRACESTATE_VALUE = "[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{0,255}[\\x21-\\x2b\\x2d-\\x3c\\x3e-\\x7e]"
TRACESTATE_MAX_MEMBERS = 32

_OPTIONAL_WHITESPACE = re.compile("[ \t]*([,;=])[ \t]*")
_lower_hex = re.compile("[0-9a-f]+").fullmatch
_b3_trace_id = re.compile("[0-9a-f]{16}(?:[0-9a-f]{16})?").fullmatch
_traceparent_fields = re.compile("[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").match
_tracestate_member = re.compile(f"{TRACESTATE_KEY}={TRACESTATE_VALUE}").fullmatch


def is_safe_value(value: str) -> bool:
    """Visible ASCII and spaces only: what may travel in a header we send.

    Control characters (CR, LF, NUL, tabs...) would allow header injection downstream, and
    non-ASCII text makes HTTP clients raise when they encode the header.
    """
    return value.isascii() and value.isprintable()


def is_safe_list(value: str) -> bool:
    """``is_safe_value`` for a list header (``tracestate``, ``baggage``), where tabs may stand as
    optional whitespace around the separators, and nowhere else."""
    return is_safe_value(_OPTIONAL_WHITESPACE.sub(r"\1", value))


def is_header_name(name: str) -> bool:
    """A well-formed HTTP header name (an RFC 9110 token)."""
    return name.isascii() and name != "" and not name.strip(_TOKEN_CHARS)


def is_valid_request_id(value: str) -> bool:
    """Printable ASCII without spaces or commas.

    Never a UUID check: Envoy rewrites the version nibble of the UUIDs it generates to carry
    its sampling decision, and load balancers use other formats. No comma, because a WSGI server
    joins a repeated header with commas, and the first occurrence must win on every server.
    """
    return (
        value != ""
        and value.isascii()
        and value.isprintable()
        and " " not in value
        and "," not in value
    )


def is_b3_trace_id(value: str) -> bool:
    """64-bit (16 hex) or 128-bit (32 hex), lower-case, not all zero."""
    return _b3_trace_id(value) is not None and value.count("0") != len(value)


def is_b3_span_id(value: str) -> bool:
    """16 lower-case hex, not all zero."""
    return len(value) == 16 and _lower_hex(value) is not None and value != _ZERO_16


def is_b3_parent_id(value: str) -> bool:
    """16 lower-case hex; all zero is valid and means "no parent", as brave reads it."""
    return len(value) == 16 and _lower_hex(value) is not None


def b3_single_ids(value: str) -> tuple[str, str] | None:
    """A single ``b3`` header's (trace id, span id); ("", "") for a lone sampling decision;
    None if invalid. Format: ``{trace}-{span}[-{0|1|d}[-{parent}]]`` or ``0`` / ``1`` / ``d``."""
    if len(value) == 1:
        return ("", "") if value in "01d" else None
    fields = value.split("-")
    count = len(fields)
    if count < 2 or count > 4:
        return None
    trace_id, span_id = fields[0], fields[1]
    if not is_b3_trace_id(trace_id) or not is_b3_span_id(span_id):
        return None
    if count >= 3 and fields[2] not in ("0", "1", "d"):
        return None
    if count == 4 and not is_b3_parent_id(fields[3]):
        return None
    return trace_id, span_id


def is_b3_single(value: str) -> bool:
    return b3_single_ids(value) is not None


def is_b3_sampled(value: str) -> bool:
    """``0`` / ``1``, with ``true`` / ``false`` accepted as older tracers send."""
    return value in ("0", "1", "true", "false")


def is_b3_flags(value: str) -> bool:
    """Only ``1`` (debug) has a meaning."""
    return value == "1"


def traceparent_ids(value: str) -> tuple[str, str] | None:
    """A W3C ``traceparent``'s (trace id, parent id), or None if invalid.

    Version ``00`` is exactly 55 characters; ``ff`` is invalid; a higher version is judged by
    its first four fields and may carry more after a dash.
    """
    if _traceparent_fields(value) is None:
        return None
    if value.startswith("00"):
        if len(value) != 55:
            return None
    elif value.startswith("ff") or (
        len(value) > 55 and (value[55] != "-" or not is_safe_value(value))
    ):
        return None
    trace_id = value[3:35]
    parent_id = value[36:52]
    if trace_id == _ZERO_32 or parent_id == _ZERO_16:
        return None
    return trace_id, parent_id


def is_traceparent(value: str) -> bool:
    return traceparent_ids(value) is not None


def is_tracestate(value: str) -> bool:
    """W3C ``tracestate``: 1 to 32 well-formed members, separated by commas with optional
    spaces and tabs around them; empty members are allowed, and so is a repeated key (a
    pass-through keeps the header as it came)."""
    if not is_safe_list(value):
        return False
    members = 0
    for member in value.split(","):
        member = member.strip(" \t")
        if member:
            if _tracestate_member(member) is None:
                return False
            members += 1
    return 0 < members <= TRACESTATE_MAX_MEMBERS


# What the fast matcher in ``_fast_path`` may accept of each header: a regular expression for a
# strict subset of the values the rule's validator accepts (its usual form), never more.
_HEX = "[0-9a-f]"
_ID_16 = f"(?!0{{16}}){_HEX}{{16}}"
_ID_32 = f"(?!0{{32}}){_HEX}{{32}}"
_B3_AFTER_TRACE_ID = f"-{_ID_16}(?:-[01d](?:-{_HEX}{{16}}|)|)"
_TRACESTATE_MEMBER = f"{TRACESTATE_KEY}=[\\x20-\\x2b\\x2d-\\x3c\\x3e-\\x7e]{{1,256}}(?<! )"


def _safe_fragment(cap: int) -> str:
    """Any visible ASCII with inner spaces, at most ``cap`` characters."""
    if cap == 1:
        return "[\\x21-\\x7e]"
    return f"[\\x21-\\x7e][\\x20-\\x7e]{{0,{cap - 1}}}(?<! )"


def _request_id_fragment(cap: int) -> str:
    return f"[\\x21-\\x2b\\x2d-\\x7e]{{1,{cap}}}"


@dataclass(frozen=True)
class Rule:
    """How one header is judged.

    ``is_valid`` decides on a value stripped of surrounding blanks and with repeats resolved;
    ``cap`` is its length limit (None: ``Config.max_length``). ``repeats`` says what two
    occurrences mean: ``"first"`` (the first wins; a comma-joined value, the form a WSGI server
    gives a repeated header, counts as its first member), ``"join"`` (joined in order with
    commas) or ``"invalid"``. ``requires`` names headers that must travel for this one to;
    ``unit`` names headers that travel together or not at all (one invalid member drops them
    all). ``fragment`` is the fast matcher's pattern for the value (None: no fast form), and
    ``longest`` the longest value it matches; without a fragment, ``bounded_fragment`` gives
    one that takes the cap as its bound.
    ``is_trace_context``: part of the trace context, which outbound is decided as a whole;
    ``names_trace``: a caller who sets this header has set the trace context.
    """

    name: str
    is_valid: Callable[[str], bool]
    cap: int | None = None
    repeats: str = "join"
    requires: tuple[str, ...] = ()
    unit: tuple[str, ...] = ()
    fragment: str | None = None
    longest: int | None = None
    bounded_fragment: Callable[[int], str] = _safe_fragment
    is_trace_context: bool = False
    names_trace: bool = False


_B3_UNIT = (B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID)

#: The rules of the headers meshprop knows; any other forwarded header gets ``generic_rule``.
RULES: dict[str, Rule] = {
    rule.name: rule
    for rule in (
        Rule(
            REQUEST_ID, is_valid_request_id, repeats="first", bounded_fragment=_request_id_fragment
        ),
        Rule(
            TRACEPARENT,
            is_traceparent,
            repeats="invalid",
            fragment=f"00-{_ID_32}-{_ID_16}-{_HEX}{_HEX}",
            longest=55,
            is_trace_context=True,
            names_trace=True,
        ),
        Rule(
            TRACESTATE,
            is_tracestate,
            cap=512,
            requires=(TRACEPARENT,),
            fragment=f"{_TRACESTATE_MEMBER}(?:,{_TRACESTATE_MEMBER}){{0,31}}",
            longest=32 * 513 + 31,
            is_trace_context=True,
        ),
        Rule(
            B3,
            is_b3_single,
            repeats="first",
            fragment=f"{_ID_32}{_B3_AFTER_TRACE_ID}|{_ID_16}{_B3_AFTER_TRACE_ID}|[01d]",
            longest=68,
            is_trace_context=True,
            names_trace=True,
        ),
        Rule(
            B3_TRACE_ID,
            is_b3_trace_id,
            repeats="first",
            requires=(B3_SPAN_ID,),
            unit=_B3_UNIT,
            fragment=f"{_ID_32}|{_ID_16}",
            longest=32,
            is_trace_context=True,
            names_trace=True,
        ),
        Rule(
            B3_SPAN_ID,
            is_b3_span_id,
            repeats="first",
            requires=(B3_TRACE_ID,),
            unit=_B3_UNIT,
            fragment=_ID_16,
            longest=16,
            is_trace_context=True,
            names_trace=True,
        ),
        Rule(
            B3_PARENT_SPAN_ID,
            is_b3_parent_id,
            repeats="first",
            requires=(B3_TRACE_ID, B3_SPAN_ID),
            unit=_B3_UNIT,
            fragment=f"{_HEX}{{16}}",
            longest=16,
            is_trace_context=True,
            names_trace=True,
        ),
        Rule(
            B3_SAMPLED,
            is_b3_sampled,
            repeats="first",
            fragment="0|1|true|false",
            longest=5,
            is_trace_context=True,
        ),
        Rule(
            B3_FLAGS, is_b3_flags, repeats="first", fragment="1", longest=1, is_trace_context=True
        ),
        Rule(BAGGAGE, is_safe_list, cap=8192),
        Rule("sw8", is_safe_value, cap=2048),
        Rule("sw8-correlation", is_safe_value, cap=1024),
        Rule("x-datadog-tags", is_safe_value, cap=512),
        Rule("x-amzn-trace-id", is_safe_value, cap=512),
    )
}


def generic_rule(name: str) -> Rule:
    """The rule of a header without one of its own: any safe value within the cap; repeats are
    joined, as RFC 9110 lets a recipient join a list header (and as WSGI servers do)."""
    return Rule(name, is_safe_value)


def rule_for(name: str) -> Rule:
    return RULES.get(name) or generic_rule(name)


def fragment_for(rule: Rule, cap: int) -> str:
    """The fast matcher's pattern for values of ``rule`` within ``cap`` characters."""
    if rule.fragment is None:
        return rule.bounded_fragment(cap)
    if rule.longest is not None and cap < rule.longest:
        # No more than ``cap`` characters since the line began: a look behind from its end.
        return f"(?:{rule.fragment})(?<![^\\n]{{{cap + 1}}})"
    return rule.fragment


def trace_ids(headers: Mapping[str, str], prefer_w3c: bool) -> tuple[str | None, str | None]:
    """(trace id, span id) named by validated headers: the single ``b3`` header, else the
    multi-header B3 ids, else ``traceparent`` (``traceparent`` first when W3C is preferred)."""
    traceparent = headers.get(TRACEPARENT)
    if prefer_w3c and traceparent is not None:
        return traceparent[3:35], traceparent[36:52]
    single = headers.get(B3)
    if single is not None and len(single) > 1:
        fields = single.split("-", 2)
        return fields[0], fields[1]
    trace_id = headers.get(B3_TRACE_ID)
    if trace_id is not None:
        return trace_id, headers[B3_SPAN_ID]
    if traceparent is not None:
        return traceparent[3:35], traceparent[36:52]
    return None, None


#: The trace context, decided as a whole outbound: a caller who sets one of
#: ``TRACE_NAMING_NAMES`` on a call gets none of these forwarded beside it.
TRACE_CONTEXT_NAMES = frozenset(name for name, rule in RULES.items() if rule.is_trace_context)
TRACE_NAMING_NAMES = frozenset(name for name, rule in RULES.items() if rule.names_trace)
