"""What an outbound call adds: the current snapshot's headers, for destinations in scope.

Every wrapped client asks here, so the scope rule and the "no request, no headers" rule are
decided once for all of them.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._config import DEFAULT_CONFIG, Config
from ._snapshot import CURRENT


def outbound_headers(url: str | None = None, *, config: Config | None = None) -> dict[str, str]:
    """The headers a wrapped client would add to a call to ``url``, as a new dict.

    With no URL the scope check is skipped; with one, a destination outside the propagation
    scope gets nothing. Outside a request, nothing.
    """
    snapshot = CURRENT.get()
    if snapshot is None:
        return {}
    if url is not None and not (config or DEFAULT_CONFIG).in_scope(url):
        return {}
    return dict(snapshot.headers)


def headers_for_host(host: str, config: Config) -> Mapping[str, str] | None:
    """The hot-path form for clients: the snapshot's headers for a call to ``host``, or None.

    The mapping is the snapshot's own: read it, never change it.
    """
    snapshot = CURRENT.get()
    if snapshot is None or not snapshot.headers:
        return None
    if not config._compiled_scope.includes_host(host):
        return None
    return snapshot.headers
