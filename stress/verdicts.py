"""Judging what an app saw through meshprop against the oracle.

An observation is what the stress apps report for one request (``apps.observe``): the headers
the server delivered, and what ``meshprop.current()``, ``request_id()``, ``trace_id()`` and
``outbound_headers("http://peer/")`` answered. Each disagreement becomes a violation whose kind
names the header, the direction (dropped, forwarded, altered) and the traits of the input that
the design calls out, so one cause is one line of the report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import oracle as o
from .report import Violations, clip


def _tracestate_traits(value: str) -> list[str]:
    traits: list[str] = []
    keys: list[str] = []
    if "\t" in value:
        traits.append("tab")
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        keys.append(member.partition("=")[0])
    if any("@" in key for key in keys):
        traits.append("@ in key")
    if any(key[:1].isdigit() for key in keys):
        traits.append("key starts with a digit")
    if len(set(keys)) < len(keys):
        traits.append("duplicate key")
    if len(keys) > o.TRACESTATE_MEMBERS:
        traits.append("over 32 members")
    return sorted(set(traits))


def traits(name: str, by_name: Mapping[str, Sequence[str]], joined: bool) -> str:
    """The design's special cases present in a header's delivered values, for the kind."""
    found: list[str] = []
    values = by_name.get(name, [])
    value = ",".join(v.strip(" \t") for v in values)
    if len(values) > 1 and name in (o.REQUEST_ID, o.TRACEPARENT):
        found.append("repeated")
    parents = [p.strip(" \t") for p in by_name.get(o.B3_PARENT, [])]
    if name in (o.B3_TRACE, o.B3_SPAN, "trace id") and parents and set(parents[0]) == {"0"}:
        found.append("all-zero x-b3-parentspanid")
    if name == "trace id":
        found += [f"b3 {t[2:-1]}" for t in [traits(o.B3, by_name, joined)] if t]
    if name == o.REQUEST_ID and joined and "," in value:
        found.append("comma in a WSGI x-request-id")
    elif name == o.TRACESTATE:
        found += _tracestate_traits(value)
    elif name == o.B3 and values and values[0].strip(" \t").endswith("-" + "0" * 16):
        found.append("all-zero parent")
    elif name == o.B3_PARENT and value and set(value) == {"0"}:
        found.append("all-zero x-b3-parentspanid")
    return f" [{', '.join(found)}]" if found else ""


def _safe_for(name: str, value: str) -> bool:
    if name == o.TRACESTATE:
        return all(c == "\t" or " " <= c <= "~" for c in value)
    return o.is_visible(value)


def check(
    observation: Mapping[str, Any],
    violations: Violations,
    example: str,
    *,
    echoes: Sequence[str] | None = None,
) -> None:
    """Add to ``violations`` every way ``observation`` breaks the design's rules."""
    example = clip(example)
    rules = o.RULES[observation["rules"]]
    joined = bool(observation["joined"])
    delivered = [(str(n), str(v)) for n, v in observation["delivered"]]
    expected = o.expect(delivered, rules, joined=joined)
    by_name: dict[str, list[str]] = {}
    for name, value in delivered:
        by_name.setdefault(o.ascii_lower(name), []).append(value)

    for error in observation["errors"]:
        violations.add(f"meshprop raised into the app: {str(error).split('(')[0]}", example)
    seen = observation["seen"]
    if not isinstance(seen, dict):
        return

    for name, value in seen.items():
        if not _safe_for(name, value):
            violations.add(f"unsafe value forwarded: {name}", example)
        if len(value) > o.CAPS.get(name, o.DEFAULT_CAP):
            violations.add(f"value over its cap forwarded: {name}", example)
        if name.startswith(o.SIDECAR_PREFIX):
            violations.add("x-envoy-* header forwarded", example)
        if not o.is_token(name):
            violations.add("malformed header name forwarded", example)

    request_id = observation["rid"]
    rid_traits = traits(o.REQUEST_ID, by_name, joined)
    if request_id != seen.get(o.REQUEST_ID):
        violations.add("request_id() is not the forwarded x-request-id", example)
    if expected.request_id is None:
        if not isinstance(request_id, str) or not o.UUID4.fullmatch(request_id):
            violations.add(f"x-request-id kept where a new UUID4 is due{rid_traits}", example)
    elif request_id != expected.request_id:
        direction = "replaced" if request_id and o.UUID4.fullmatch(request_id) else "altered"
        violations.add(f"x-request-id {direction}{rid_traits}", example)
    if echoes is not None:
        if len(echoes) != 1:
            violations.add(f"{len(echoes)} x-request-id headers echoed", example)
        elif not o.is_request_id(echoes[0]):
            violations.add("echoed x-request-id is not a valid id", example)
        elif echoes[0] != request_id:
            violations.add("echoed x-request-id is not request_id()", example)

    for name in sorted({*expected.forwarded, *seen} - {o.REQUEST_ID}):
        want, got = expected.forwarded.get(name), seen.get(name)
        if want == got or (name in expected.optional and got in (None, expected.optional[name])):
            continue
        direction = "dropped" if got is None else "forwarded" if want is None else "altered"
        kind = name if name in o.NAMED or name == o.BAGGAGE else "prefixed header"
        violations.add(f"{kind} {direction}{traits(name, by_name, joined)}", example)

    if observation["tid"] not in expected.trace_ids:
        violations.add(
            f"trace_id() is not the oracle's{traits('trace id', by_name, joined)}", example
        )
    if observation["out"] is not None and observation["out"] != seen:
        violations.add("outbound_headers('http://peer/') is not current()", example)
