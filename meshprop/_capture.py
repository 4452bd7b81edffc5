"""Turning an inbound request's headers into a snapshot.

A request of the common shape is validated in one match by ``_fast_path``; any other request
takes the general path here: one scan over the request's headers that keeps the raw values of
the names the plan forwards (repeats resolved by each header's rule), then one pass over the
rule table. The entry points differ only in the shape of the headers they read (ASGI's
lower-case byte pairs, WSGI's ``environ``, a case-insensitive multidict, any pairs of str or
bytes in any case); none of them knows a framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import _deadline
from . import _headers as h
from ._config import Config
from ._fast_path import CaseInsensitiveMultiDict
from ._plan import Plan, plan_for
from ._snapshot import CURRENT, Snapshot

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]] | Mapping[Any, Any]

_STRIPPED = " \t"


def _keep(found: dict[str, str], name: str, value: str) -> None:
    """Record one more occurrence of a header, as its rule says repeats are read."""
    if name not in found:
        found[name] = value
        return
    repeats = h.rule_for(name).repeats
    if repeats == "join":
        found[name] = found[name] + "," + value
    elif repeats == "invalid":
        found[name] = ""  # no value: two traceparent headers are invalid (W3C trace-context)


def capture_asgi(headers: Sequence[tuple[bytes, bytes]], plan: Plan) -> Snapshot:
    """Snapshot from ASGI ``scope["headers"]`` (a sequence: it may be read twice).

    ASGI servers deliver header names in lower case, so names are looked up as they come.
    """
    fast_path = plan.fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_asgi(headers)
        if snapshot is not None:
            return snapshot
    names = plan.names_by_bytes
    prefixes = plan.prefixes_bytes
    found: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = names.get(raw_name)
        if name is None:
            if not prefixes or not raw_name.startswith(prefixes):
                continue
            name = raw_name.decode("latin-1")
            if not plan.is_prefixed_name_forwarded(name):
                continue
        _keep(found, name, raw_value.decode("latin-1").strip(_STRIPPED))
    return snapshot_from(found, plan)


def capture_environ(environ: Mapping[str, Any], plan: Plan) -> Snapshot:
    """Snapshot from a WSGI ``environ``, where ``x-request-id`` arrives as ``HTTP_X_REQUEST_ID``
    and the server has joined a repeated header's values with commas."""
    fast_path = plan.fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_environ(environ)
        if snapshot is not None:
            return snapshot
    found: dict[str, str] = {}
    for key, name in plan.names_by_environ_key.items():
        value = environ.get(key)
        if isinstance(value, str):
            found[name] = value.strip(_STRIPPED)
    prefixes = plan.environ_prefixes
    if prefixes:
        for key, value in environ.items():
            if key.startswith(prefixes):
                name = key[5:].lower().replace("_", "-")
                if (
                    name not in found
                    and isinstance(value, str)
                    and plan.is_prefixed_name_forwarded(name)
                ):
                    found[name] = value.strip(_STRIPPED)
    return snapshot_from(found, plan)


def capture_multidict(headers: CaseInsensitiveMultiDict, plan: Plan) -> Snapshot:
    """Snapshot from a case-insensitive multidict: aiohttp's ``request.headers``."""
    fast_path = plan.fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_multidict(headers)
        if snapshot is not None:
            return snapshot
    return capture_pairs(headers.items(), plan)


def capture_pairs(pairs: HeaderPairs, plan: Plan) -> Snapshot:
    """Snapshot from any header pairs (or a mapping), names in any case, str or bytes."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    names = plan.message_names
    prefixes = plan.prefixes
    found: dict[str, str] = {}
    for raw_name, raw_value in items:
        if isinstance(raw_name, bytes):
            raw_name = raw_name.decode("latin-1")
        name = str(raw_name).lower()
        if name not in names and not (
            prefixes and name.startswith(prefixes) and plan.is_prefixed_name_forwarded(name)
        ):
            continue
        if isinstance(raw_value, bytes):
            value = raw_value.decode("latin-1")
        elif isinstance(raw_value, str):
            value = raw_value
        else:
            continue  # not a header value: nothing to forward
        _keep(found, name, value.strip(_STRIPPED))
    return snapshot_from(found, plan)


@contextmanager
def bind(
    headers: HeaderPairs | None, *, config: Config | None = None
) -> Iterator[Mapping[str, str]]:
    """Serve a unit of work as if it were a request that carried ``headers``.

    For jobs, message consumers, scripts and tests: the headers get the same parsing,
    validation and request-id generation as an inbound request, and the previous context comes
    back on exit, also when the block raises. Yields the forwarded headers.

    A message's headers are whatever its producer sent, so anything that is not a header is
    passed over: ``None`` (confluent-kafka's ``headers()`` of a message without any), entries
    that are not pairs, values that are neither str nor bytes (AMQP tables hold numbers).
    """
    plan = plan_for(config)
    if not isinstance(headers, Mapping | list | tuple):  # None, a generator: read once
        headers = _pairs_in(headers)
    try:
        snapshot = capture_pairs(headers, plan)
    except (TypeError, ValueError):  # not pairs all through: read the ones that are
        snapshot = capture_pairs(_pairs_in(headers), plan)
    token = CURRENT.set(snapshot)
    try:
        yield snapshot.view()
    finally:
        CURRENT.reset(token)


def _pairs_in(headers: object) -> list[tuple[str | bytes, str | bytes]]:
    """The (name, value) pairs in ``headers``, whatever else it holds."""
    if isinstance(headers, Mapping):
        return list(headers.items())
    pairs: list[tuple[str | bytes, str | bytes]] = []
    if isinstance(headers, Iterable) and not isinstance(headers, str | bytes):
        for entry in headers:
            if isinstance(entry, tuple | list) and len(entry) == 2:
                pairs.append((entry[0], entry[1]))
    return pairs


def snapshot_from(found: dict[str, str], plan: Plan) -> Snapshot:
    """Validate the raw values of one request (lower-case names, repeats already kept by
    ``_keep``) by the rule table, and build its snapshot."""
    deadline_at = _deadline_at(found) if found else None
    request_id = found.pop(plan.request_id_name, None)
    if request_id is not None:
        request_id = _first_member(request_id)
        if not (
            plan.trust_request_id
            and len(request_id) <= plan.request_id_cap
            and h.is_valid_request_id(request_id)
        ):
            request_id = None
    if request_id is None and plan.generate_request_id is not None:
        request_id = plan.generate_request_id()
    forwarded: dict[str, str] = {}
    if request_id is not None and plan.forwards_request_id:
        forwarded[plan.request_id_name] = request_id
    if not found:
        snapshot = Snapshot(forwarded, request_id, None, None)
        snapshot.deadline_at = deadline_at
        return snapshot

    valid: dict[str, str] = {}
    broken_units: set[str] = set()
    for rule, cap in plan.rules:
        value = found.pop(rule.name, None)
        if not value:
            continue  # absent, or empty: nothing to forward
        if rule.repeats == "first":
            value = _first_member(value)
            if not value:
                continue
        if len(value) <= cap and rule.is_valid(value):
            valid[rule.name] = value
        elif rule.unit:
            broken_units.update(rule.unit)
    for rule, _ in plan.rules:
        name = rule.name
        if (
            name in valid
            and name not in broken_units
            and all(required in valid for required in rule.requires)
        ):
            forwarded[name] = valid[name]
    trace_id, span_id = h.trace_ids(forwarded, plan.prefer_w3c)
    if found:  # headers picked up by a prefix
        for name, value in found.items():
            if value and len(value) <= plan.cap_for(name) and h.is_safe_value(value):
                forwarded[name] = value
    if len(forwarded) > plan.max_headers or _size(forwarded) > plan.max_total_length:
        forwarded = _within_budget(forwarded, plan)
    snapshot = Snapshot(forwarded, request_id, trace_id, span_id)
    snapshot.deadline_at = deadline_at
    return snapshot


def _deadline_at(found: dict[str, str]) -> float | None:
    """Take the deadline headers out of ``found``: the instant the caller stops waiting (the
    nearer where both came), or None."""
    deadline_at = None
    expected = found.pop(_deadline.EXPECTED_TIMEOUT, None)
    if expected is not None:
        seconds = _deadline.expected_timeout_seconds(_first_member(expected))
        if seconds is not None:
            deadline_at = _deadline.at(seconds)
    grpc_timeout = found.pop(_deadline.GRPC_TIMEOUT, None)
    if grpc_timeout is not None:
        seconds = _deadline.grpc_timeout_seconds(_first_member(grpc_timeout))
        if seconds is not None:
            deadline_at = _deadline.nearer(deadline_at, seconds)
    return deadline_at


def _first_member(value: str) -> str:
    """The first member of a comma-joined value: what a WSGI server makes of a repeated header
    whose first occurrence wins."""
    if "," in value:
        return value.split(",", 1)[0].strip(_STRIPPED)
    return value


def _size(headers: Mapping[str, str]) -> int:
    return sum(len(name) + len(value) for name, value in headers.items())


def _within_budget(forwarded: dict[str, str], plan: Plan) -> dict[str, str]:
    """The headers that fit the plan's total budget: the request id and the trace context
    always, then the others in order (named before prefixed) while they fit."""
    kept: dict[str, str] = {}
    size = 0
    for name, value in forwarded.items():
        if name == plan.request_id_name or name in h.TRACE_CONTEXT_NAMES:
            kept[name] = value
            size += len(name) + len(value)
    for name, value in forwarded.items():
        if name in kept:
            continue
        if len(kept) < plan.max_headers and size + len(name) + len(value) <= plan.max_total_length:
            kept[name] = value
            size += len(name) + len(value)
    return {name: kept[name] for name in forwarded if name in kept}
