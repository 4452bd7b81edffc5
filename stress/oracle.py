"""The header and scope rules of the product design, restated from the design alone.

Nothing here reads meshprop: the harness compares what meshprop does with what these rules say,
so a rule meshprop does not implement yet shows up as a violation instead of being learnt from
the code. Where the design leaves a detail open, the rule accepts each reading and says so.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
BAGGAGE = "baggage"
B3 = "b3"
B3_TRACE = "x-b3-traceid"
B3_SPAN = "x-b3-spanid"
B3_PARENT = "x-b3-parentspanid"
B3_SAMPLED = "x-b3-sampled"
B3_FLAGS = "x-b3-flags"
NAMED = frozenset(
    {REQUEST_ID, TRACEPARENT, TRACESTATE, B3, B3_TRACE, B3_SPAN, B3_PARENT, B3_SAMPLED, B3_FLAGS}
)
SIDECAR_PREFIX = "x-envoy-"

DEFAULT_CAP = 200
CAPS = {BAGGAGE: 8192, TRACESTATE: 512}
TRACESTATE_MEMBERS = 32

_STRIPPED = " \t"
_HEX = frozenset("0123456789abcdef")
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TS_KEY = re.compile(r"[0-9a-z][_0-9a-z*/@-]{0,255}")
_TS_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(.*)", re.S)
UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@dataclass(frozen=True)
class Rules:
    """What the adapter under test is configured to forward, restated for the oracle."""

    name: str = "default"
    prefixes: tuple[str, ...] = ()
    baggage: bool = False


DEFAULT = Rules()
#: The configuration the servers' ``tenant`` apps run: prefixes and the baggage preset.
TENANT = Rules("tenant", prefixes=("x-tenant-", "x-"), baggage=True)
RULES = {rules.name: rules for rules in (DEFAULT, TENANT)}


@dataclass(frozen=True)
class Expected:
    """What the app must see for one request.

    ``forwarded`` leaves out ``x-request-id``: ``request_id`` is the id that must travel, or None
    when a new UUID4 must be generated. ``optional`` headers may travel or not (the design
    leaves it open); ``trace_ids`` are the acceptable ``meshprop.trace_id()`` answers.
    """

    forwarded: dict[str, str]
    request_id: str | None
    trace_ids: frozenset[str | None]
    optional: dict[str, str] = field(default_factory=dict)


def ascii_lower(text: str) -> str:
    """Header names compare case-insensitively in ASCII only."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def is_visible(value: str) -> bool:
    """Printable ASCII (space included): what any forwarded value is made of."""
    return all(" " <= c <= "~" for c in value)


def is_request_id(value: str) -> bool:
    return 1 <= len(value) <= DEFAULT_CAP and all("!" <= c <= "~" for c in value)


def is_token(name: str) -> bool:
    return name != "" and all(c in _TOKEN for c in name)


def _hex(value: str, *lengths: int) -> bool:
    return len(value) in lengths and set(value) <= _HEX


def _hex_id(value: str, *lengths: int) -> bool:
    """Lower-case hex of an allowed length and not all zero."""
    return _hex(value, *lengths) and set(value) != {"0"}


def b3_single(value: str) -> str | None:
    """A valid ``b3`` header's trace id ("" for a lone decision); None when invalid."""
    if value in ("0", "1", "d"):
        return ""
    fields = value.split("-")
    if not 2 <= len(fields) <= 4:
        return None
    if not _hex_id(fields[0], 16, 32) or not _hex_id(fields[1], 16):
        return None
    if len(fields) >= 3 and fields[2] not in ("0", "1", "d"):
        return None
    if len(fields) == 4 and not _hex(fields[3], 16):  # an all-zero parent is "no parent"
        return None
    return fields[0]


def traceparent(value: str) -> str | None:
    """A valid ``traceparent``'s trace id, or None."""
    if len(value) > DEFAULT_CAP or not is_visible(value):
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, parent_id, _, rest = match.groups()
    if version == "ff" or set(trace_id) == {"0"} or set(parent_id) == {"0"}:
        return None
    if version == "00" and rest:
        return None
    if rest and not rest.startswith("-"):
        return None
    return trace_id


def tracestate(value: str) -> bool:
    """A ``tracestate`` (repeats already joined) that may travel beside a valid traceparent.

    The design leaves open whether a header of empty members only travels; here it needs at
    least one member, since it carries nothing otherwise.
    """
    if len(value) > CAPS[TRACESTATE] or not all(c == "\t" or " " <= c <= "~" for c in value):
        return False
    members = 0
    for raw in value.split(","):
        member = raw.strip(_STRIPPED)
        if not member:
            continue
        key, equals, member_value = member.partition("=")
        if not equals or not _TS_KEY.fullmatch(key) or not _TS_VALUE.fullmatch(member_value):
            return False
        members += 1
    return 1 <= members <= TRACESTATE_MEMBERS


# The total budget (README, Configuration): at most 32 headers and 16,384 characters of names
# and values, the request id included; the request id and the trace context always travel,
# the others in order while they fit.
MAX_HEADERS = 32
MAX_TOTAL_LENGTH = 16384
_TRACE_CONTEXT = frozenset(
    {TRACEPARENT, TRACESTATE, B3, B3_TRACE, B3_SPAN, B3_PARENT, B3_SAMPLED, B3_FLAGS}
)
_UUID4_LENGTH = 36


def _within_budget(
    forwarded: dict[str, str], request_id: str | None, optional: dict[str, str]
) -> dict[str, str]:
    # An optional header (an all-zero parent id) is trace context: it counts when it travels.
    count = 1 + len(optional)
    size = len(REQUEST_ID) + (len(request_id) if request_id is not None else _UUID4_LENGTH)
    size += sum(len(name) + len(value) for name, value in optional.items())
    kept = {name: value for name, value in forwarded.items() if name in _TRACE_CONTEXT}
    count += len(kept)
    size += sum(len(name) + len(value) for name, value in kept.items())
    for name, value in forwarded.items():
        if (
            name not in kept
            and count < MAX_HEADERS
            and size + len(name) + len(value) <= (MAX_TOTAL_LENGTH)
        ):
            kept[name] = value
            count += 1
            size += len(name) + len(value)
    return {name: value for name, value in forwarded.items() if name in kept}


def expect(
    headers: Iterable[tuple[str, str]], rules: Rules = DEFAULT, *, joined: bool = False
) -> Expected:
    """What the design says the app sees for a request that delivered ``headers``, in order.

    ``joined`` is a WSGI request: the server has already joined repeated headers with commas,
    so a name comes once. The README's repeat rules: a header whose first occurrence wins
    (``x-request-id``, ``b3``, the ``x-b3-*`` headers) counts as the first comma-separated
    member of that occurrence, on every server; ``tracestate``, ``baggage`` and any other
    header join their occurrences in order with commas; two ``traceparent`` are invalid.
    """
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(ascii_lower(name), []).append(value.strip(_STRIPPED))

    def first(name: str) -> str | None:
        found = values.get(name)
        return found[0].split(",")[0].strip(_STRIPPED) if found else None

    forwarded: dict[str, str] = {}
    optional: dict[str, str] = {}

    request_id = first(REQUEST_ID)
    if request_id is not None and not is_request_id(request_id):
        request_id = None

    b3_trace_ids: set[str] = set()
    single = first(B3)
    if single is not None:
        trace_id = b3_single(single)
        if trace_id is not None:
            forwarded[B3] = single
            if trace_id:
                b3_trace_ids.add(trace_id)

    trace, span, parent = first(B3_TRACE), first(B3_SPAN), first(B3_PARENT)
    no_parent = parent is None or parent == "" or parent == "0" * 16
    if (
        trace is not None
        and span is not None
        and _hex_id(trace, 16, 32)
        and _hex_id(span, 16)
        and (no_parent or _hex_id(parent or "", 16))
    ):
        forwarded[B3_TRACE] = trace
        forwarded[B3_SPAN] = span
        b3_trace_ids.add(trace)
        if parent and no_parent:
            optional[B3_PARENT] = parent  # "no parent": whether the zeros travel is left open
        elif parent:
            forwarded[B3_PARENT] = parent

    sampled = first(B3_SAMPLED)
    if sampled in ("0", "1", "true", "false"):
        forwarded[B3_SAMPLED] = sampled
    if first(B3_FLAGS) == "1":
        forwarded[B3_FLAGS] = "1"

    w3c_trace_id = None
    parents = values.get(TRACEPARENT, [])
    if len(parents) == 1:
        w3c_trace_id = traceparent(parents[0])
        if w3c_trace_id is not None:
            forwarded[TRACEPARENT] = parents[0]
            states = values.get(TRACESTATE)
            if states is not None:
                state = ",".join(states)
                if tracestate(state):
                    forwarded[TRACESTATE] = state

    if rules.baggage and BAGGAGE in values:
        baggage = ",".join(values[BAGGAGE])
        if baggage and len(baggage) <= CAPS[BAGGAGE] and is_visible(baggage):
            forwarded[BAGGAGE] = baggage

    for name, occurrences in values.items():
        if name in NAMED or name == BAGGAGE:
            continue
        if not name.startswith(rules.prefixes) or name.startswith(SIDECAR_PREFIX):
            continue
        value = ",".join(occurrences)
        if is_token(name) and value and len(value) <= DEFAULT_CAP and is_visible(value):
            forwarded[name] = value

    forwarded = _within_budget(forwarded, request_id, optional)
    if b3_trace_ids:
        trace_ids: frozenset[str | None] = frozenset(b3_trace_ids)
    else:
        trace_ids = frozenset({w3c_trace_id})
    return Expected(forwarded, request_id, trace_ids, optional)


# ---- scope --------------------------------------------------------------------------------

IN, OUT, OPEN = "in", "out", "open"  # OPEN: the design does not say

_LOOPBACK_AND_PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_UNDECIDED_V4 = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "100.64.0.0/10"))
_PRIVATE_V6 = tuple(ipaddress.ip_network(n) for n in ("::1/128", "fc00::/7"))
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)", re.S)
_NAME_CHARS = re.compile(r"[A-Za-z0-9._~-]*")
_NUMBER_LABEL = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")
_MESH_SUFFIXES = (".svc", ".svc.cluster.local", ".local")


class Unparseable(ValueError):
    """The URL has no host a client could connect to."""


def url_host(url: str) -> str:
    """The host of an absolute URL (lower case, no brackets, no trailing dot); "" for none.

    Raises Unparseable for a URL no client could send: bad characters in the authority, an
    unclosed or invalid bracketed address, a port that is not a number up to 65535.
    """
    match = _URL.fullmatch(url)
    if match is None:
        raise Unparseable(url)
    authority = match.group(2)
    host_port = authority.rpartition("@")[2]
    if host_port.startswith("["):
        end = host_port.find("]")
        if end < 0:
            raise Unparseable(url)
        host, rest = host_port[1:end], host_port[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise Unparseable(url) from None
        if rest and not re.fullmatch(r":[0-9]*", rest):
            raise Unparseable(url)
        port = rest[1:]
    else:
        host, _, port = host_port.partition(":")
        if not _NAME_CHARS.fullmatch(host) or not re.fullmatch(r"[0-9]*", port):
            raise Unparseable(url)
    if port and int(port) > 65535:
        raise Unparseable(url)
    return ascii_lower(host).removesuffix(".")


def numeric_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The address a numeric host denotes, read as resolvers read it (``2852039166``,
    ``0xa9fea9fe``, ``0251.0376.0251.0376``, ``127.1``); None for a name.

    A host whose last label is a number is an address or nothing: Unparseable if it is not one.
    """
    labels = host.split(".")
    if not _NUMBER_LABEL.fullmatch(labels[-1]):
        return None
    if len(labels) > 4:
        raise Unparseable(host)
    numbers: list[int] = []
    for label in labels:
        if not _NUMBER_LABEL.fullmatch(label):
            raise Unparseable(host)
        if label[:2] in ("0x", "0X"):
            numbers.append(int(label[2:] or "0", 16))
        elif len(label) > 1 and label.startswith("0"):
            if set(label) - set("01234567"):
                raise Unparseable(host)
            numbers.append(int(label, 8))
        else:
            numbers.append(int(label))
    last_bytes = 5 - len(numbers)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256**last_bytes:
        raise Unparseable(host)
    value = numbers[-1]
    for index, number in enumerate(numbers[:-1]):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def scope(url: str) -> str:
    """IN, OUT or OPEN for a call to ``url`` under the default mesh scope."""
    try:
        host = url_host(url)
        if not host:
            return OUT
        if ":" in host:
            v6 = ipaddress.IPv6Address(host)
            return IN if any(v6 in network for network in _PRIVATE_V6) else OUT
        v4 = numeric_ipv4(host)
    except Unparseable:
        return OUT
    if v4 is not None:
        if any(v4 in network for network in _LOOPBACK_AND_PRIVATE):
            return IN
        return OPEN if any(v4 in network for network in _UNDECIDED_V4) else OUT
    if "." not in host or host.endswith(_MESH_SUFFIXES):
        return IN
    return OUT
