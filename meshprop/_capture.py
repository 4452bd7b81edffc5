"""Turning an inbound request's headers into a snapshot.

This is the per-request hot path. A request of the common shape is validated in one match by
``_fast_path``; any other request, and any Config that forwards by prefix, takes the general
path here: one scan over the request's headers that keeps the raw values of the names the Config
forwards, then one validation pass, header by header. The entry points differ only in the shape
of the headers they read (ASGI's lower-case byte pairs, WSGI's ``environ``, a case-insensitive
multidict, and any pairs of str or bytes in any case); none of them knows a framework.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from . import _headers as h
from ._config import DEFAULT_CONFIG, Config
from ._fast_path import CaseInsensitiveMultiDict
from ._snapshot import CURRENT, Snapshot

HeaderPairs = Iterable[tuple[str | bytes, str | bytes]] | Mapping[Any, Any]

_STRIPPED = " \t"


def _keep(found: dict[str, str], name: str, value: str) -> None:
    """Record one occurrence of a header, by its spec's rule for repeats."""
    if name not in found:
        found[name] = value
    elif name in h.JOINED_HEADERS:
        found[name] = found[name] + "," + value
    elif name == h.TRACEPARENT:
        found[name] = ""  # two traceparent headers are invalid (W3C trace-context 3.2)


def capture_asgi(headers: Sequence[tuple[bytes, bytes]], config: Config) -> Snapshot:
    """Snapshot from ASGI ``scope["headers"]`` (a sequence: it may be read twice).

    The ASGI spec has servers deliver header names in lower case (uvicorn, hypercorn, daphne and
    httpx's ASGITransport all do), so names are looked up as they come, with no per-header
    ``lower()`` on the hot path.
    """
    fast_path = config._fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_asgi(headers)
        if snapshot is not None:
            return snapshot
    return _capture_asgi_by_header(headers, config)


def _capture_asgi_by_header(headers: Iterable[tuple[bytes, bytes]], config: Config) -> Snapshot:
    names = config._names_by_bytes
    prefixes = config._prefixes_bytes
    found: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = names.get(raw_name)
        if name is None:
            if not prefixes or not raw_name.startswith(prefixes):
                continue
            name = raw_name.decode("latin-1")
            if not _is_prefixed_name_forwarded(name, config):
                continue
        value = raw_value.decode("latin-1").strip(_STRIPPED)
        if name in found:
            _keep(found, name, value)
        else:
            found[name] = value
    return snapshot_from(found, config)


def capture_environ(environ: Mapping[str, Any], config: Config) -> Snapshot:
    """Snapshot from a WSGI ``environ``, where ``x-request-id`` arrives as ``HTTP_X_REQUEST_ID``.

    WSGI servers join repeated headers with commas before the app sees them, so a repeated
    ``traceparent`` arrives as one value that fails validation, as it should.
    """
    fast_path = config._fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_environ(environ)
        if snapshot is not None:
            return snapshot
    return _capture_environ_by_header(environ, config)


def _capture_environ_by_header(environ: Mapping[str, Any], config: Config) -> Snapshot:
    found: dict[str, str] = {}
    for key, name in config._names_by_environ_key.items():
        value = environ.get(key)
        if value is not None:
            found[name] = value.strip(_STRIPPED)
    prefixes = config._environ_prefixes
    if prefixes:
        for key, value in environ.items():
            if key.startswith(prefixes):
                name = key[5:].lower().replace("_", "-")
                if (
                    name not in found
                    and isinstance(value, str)
                    and _is_prefixed_name_forwarded(name, config)
                ):
                    found[name] = value.strip(_STRIPPED)
    return snapshot_from(found, config)


def capture_multidict(headers: CaseInsensitiveMultiDict, config: Config) -> Snapshot:
    """Snapshot from a case-insensitive multidict: aiohttp's ``request.headers``."""
    fast_path = config._fast_path
    if fast_path is not None:
        snapshot = fast_path.capture_multidict(headers)
        if snapshot is not None:
            return snapshot
    return capture_pairs(headers.items(), config)


@contextmanager
def bind(headers: HeaderPairs, *, config: Config | None = None) -> Iterator[Mapping[str, str]]:
    """Serve a unit of work as if it were a request that carried ``headers``.

    For jobs, message consumers, scripts and tests: the headers get the same parsing,
    validation and request-id generation as an inbound request, and the previous context comes
    back on exit, also when the block raises. Yields the forwarded headers.
    """
    snapshot = capture_pairs(headers, config or DEFAULT_CONFIG)
    token = CURRENT.set(snapshot)
    try:
        yield snapshot.view()
    finally:
        CURRENT.reset(token)


def capture_pairs(pairs: HeaderPairs, config: Config) -> Snapshot:
    """Snapshot from any header pairs (or a mapping), names in any case, str or bytes.

    Byte names (aiohttp's ``raw_headers``) are looked up without decoding: only a name that
    matches a configured prefix is decoded.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    names_by_bytes = config._names_by_bytes
    forwarded = config._forwarded_name_set
    prefixes = config._prefixes
    found: dict[str, str] = {}
    for raw_name, raw_value in items:
        if isinstance(raw_name, bytes):
            lowered = raw_name.lower()
            name = names_by_bytes.get(lowered)
            if name is None:
                if not prefixes or not lowered.startswith(config._prefixes_bytes):
                    continue
                name = lowered.decode("latin-1")
                if not _is_prefixed_name_forwarded(name, config):
                    continue
        else:
            name = str(raw_name).lower()
            if name not in forwarded and not (
                prefixes and name.startswith(prefixes) and _is_prefixed_name_forwarded(name, config)
            ):
                continue
        value = raw_value.decode("latin-1") if isinstance(raw_value, bytes) else str(raw_value)
        _keep(found, name, value.strip(_STRIPPED))
    return snapshot_from(found, config)


def snapshot_from(found: dict[str, str], config: Config) -> Snapshot:
    """Validate the raw values of one request and build its snapshot.

    ``found`` maps lower-case names to raw values (repeats already resolved) and is consumed.
    """
    forwarded: dict[str, str] = {}
    trace_id: str | None = None
    span_id: str | None = None
    caps = config._max_lengths
    default_cap = config.max_length

    request_id_name = config._request_id_name
    request_id = found.pop(request_id_name, None)
    if request_id is not None and not (
        config.trust_incoming_request_id
        and h.is_valid_request_id(request_id, config._request_id_max_length)
    ):
        request_id = None
    if request_id is None and config.request_id_generator is not None:
        request_id = config.request_id_generator()
    if request_id is not None and config._forwards_request_id:
        forwarded[request_id_name] = request_id

    if found:
        b3 = found.pop(h.B3, None)
        if b3 is not None and len(b3) <= caps.get(h.B3, default_cap):
            ids = h.parse_b3_single(b3)
            if ids is not None:
                forwarded[h.B3] = b3
                if ids[0]:
                    trace_id, span_id = ids

        if h.B3_TRACE_ID in found or h.B3_SPAN_ID in found or h.B3_PARENT_SPAN_ID in found:
            multi_trace_id = _take_b3_multi_ids(found, forwarded)
            if multi_trace_id is not None and trace_id is None:
                trace_id, span_id = multi_trace_id, forwarded[h.B3_SPAN_ID]
        sampled = found.pop(h.B3_SAMPLED, None)
        if sampled is not None and h.is_b3_sampled(sampled):
            forwarded[h.B3_SAMPLED] = sampled
        flags = found.pop(h.B3_FLAGS, None)
        if flags is not None and h.is_b3_flags(flags):
            forwarded[h.B3_FLAGS] = flags

        traceparent = found.pop(h.TRACEPARENT, None)
        tracestate = found.pop(h.TRACESTATE, None)
        if traceparent is not None and len(traceparent) <= caps.get(h.TRACEPARENT, default_cap):
            ids = h.parse_traceparent(traceparent)
            if ids is not None:
                forwarded[h.TRACEPARENT] = traceparent
                if trace_id is None:
                    trace_id, span_id = ids
                if (
                    tracestate is not None
                    and len(tracestate) <= caps.get(h.TRACESTATE, default_cap)
                    and h.is_safe_value(tracestate)
                    and h.is_valid_tracestate(tracestate)
                ):
                    forwarded[h.TRACESTATE] = tracestate

        for name, value in found.items():
            if value and len(value) <= caps.get(name, default_cap) and h.is_safe_value(value):
                forwarded[name] = value

    return Snapshot(forwarded, request_id, trace_id, span_id)


def _is_prefixed_name_forwarded(name: str, config: Config) -> bool:
    """Whether a header that matched a configured prefix may travel.

    Its name comes from the request rather than from the Config, so it must be a well-formed
    header name, and neither excluded nor one of the sidecar's own ``x-envoy-*`` headers (a
    prefix such as ``x-`` would otherwise pick those up).
    """
    return (
        name not in config._excluded
        and not name.startswith(h.NEVER_FORWARDED_PREFIX)
        and h.is_header_name(name)
    )


def _take_b3_multi_ids(found: dict[str, str], forwarded: dict[str, str]) -> str | None:
    """Forward the multi-header B3 ids as one unit; return the trace id if they were forwarded.

    If any id is malformed, or a trace id comes without a span id (or the reverse, or a parent
    without both), none of them travels: half a B3 context would start a broken trace. An empty
    parent id is no parent (a root span's), as some proxies send it.
    """
    trace_id = found.pop(h.B3_TRACE_ID, None)
    span_id = found.pop(h.B3_SPAN_ID, None)
    parent_id = found.pop(h.B3_PARENT_SPAN_ID, None) or None
    if trace_id is None or span_id is None or not h.are_b3_ids(trace_id, span_id, parent_id):
        return None
    forwarded[h.B3_TRACE_ID] = trace_id
    forwarded[h.B3_SPAN_ID] = span_id
    if parent_id is not None:
        forwarded[h.B3_PARENT_SPAN_ID] = parent_id
    return trace_id
