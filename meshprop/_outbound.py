"""What an outbound call adds: the current snapshot's headers, for destinations in scope.

Every wrapped client asks here, so the scope rule, the "no request, no headers" rule and the
OpenTelemetry rule are decided once for all of them.

The OpenTelemetry rule: while a span is active, a client sends that span's ids instead of the
trace headers that came in, so the app's spans and the sidecars' spans form one trace. Whether
OpenTelemetry is in use is one dictionary lookup (is ``opentelemetry.trace`` imported?), and
only then is ``_otel_bridge``, which imports OpenTelemetry, loaded: a process without
OpenTelemetry never imports it and pays nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

from ._config import DEFAULT_CONFIG, Config
from ._snapshot import CURRENT, Snapshot

_OTEL_TRACE_MODULE = "opentelemetry.trace"
_loaded_modules = sys.modules

_HeadersWithSpan = Callable[[Snapshot | None, str | None, Config], Mapping[str, str] | None]
_headers_with_span: _HeadersWithSpan | None = None


def _otel_headers() -> _HeadersWithSpan:
    global _headers_with_span
    if _headers_with_span is None:
        from ._otel_bridge import headers_for_host

        _headers_with_span = headers_for_host
    return _headers_with_span


def outbound_headers(url: str | None = None, *, config: Config | None = None) -> dict[str, str]:
    """The headers a wrapped client would add to a call to ``url``, as a new dict.

    With no URL the scope check is skipped; with one, a destination outside the propagation
    scope gets nothing. Outside a request, nothing.
    """
    config = config or DEFAULT_CONFIG
    if url is not None and not config.in_scope(url):
        return {}
    snapshot = CURRENT.get()
    if _OTEL_TRACE_MODULE in _loaded_modules:
        forwarded = _otel_headers()(snapshot, None, config)
        return dict(forwarded) if forwarded else {}
    if snapshot is None:
        return {}
    return dict(snapshot.headers)


def headers_for_host(host: str, config: Config) -> Mapping[str, str] | None:
    """The hot-path form for clients: the headers for a call to ``host``, or None.

    Without an active OpenTelemetry span the mapping is the snapshot's own: read it, never
    change it.
    """
    snapshot = CURRENT.get()
    if _OTEL_TRACE_MODULE in _loaded_modules:
        return (_headers_with_span or _otel_headers())(snapshot, host, config)
    if snapshot is None or not snapshot.headers:
        return None
    if not config._compiled_scope.includes_host(host):
        return None
    return snapshot.headers
