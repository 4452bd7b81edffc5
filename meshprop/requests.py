"""``requests.Session`` that forwards the current request's propagation headers.

The headers are added in ``Session.send``, the one method every request goes through:
``session.get`` and ``session.request``, a ``PreparedRequest`` the caller sends itself, and each
redirect hop (``resolve_redirects`` sends every hop with ``send``). The caller's
``PreparedRequest`` is never changed: when there is something to add, a copy carries it, and
that copy is what was sent (``response.request``), as requests itself does for redirect hops.

A redirect hop starts as a copy of the previous hop, headers included, so the headers meshprop
added are taken off again in ``rebuild_auth`` (where requests takes off ``Authorization`` when
the host changes); ``send`` then adds them anew only if the next host is inside the scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ._config import DEFAULT_CONFIG, Config
from ._extras import require
from ._outbound import headers_for_host

require("requests", "requests")

import requests  # noqa: E402
from requests import PreparedRequest, Response  # noqa: E402

__all__ = ["Session"]

# On the copy that was sent: the names of the headers meshprop added to it.
_ADDED_ATTRIBUTE = "_meshprop_added_headers"


class Session(requests.Session):
    """A drop-in ``requests.Session`` that forwards the propagation headers.

    A header set by the caller, on the request or on the session (``session.headers``), always
    wins, in any case. Destinations outside the propagation scope, and calls made outside a
    request, get nothing.
    """

    # What requests pickles: without the Config a pickled session would come back unconfigured.
    __attrs__ = [*requests.Session.__attrs__, "meshprop_config"]  # noqa: RUF012

    def __init__(self, *, config: Config | None = None) -> None:
        super().__init__()
        self.meshprop_config = config or DEFAULT_CONFIG

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        host = urlsplit(str(request.url)).hostname or ""
        forwarded = headers_for_host(host, self.meshprop_config)
        if forwarded:
            request = _with_headers(request, forwarded)
        return super().send(request, **kwargs)

    def rebuild_auth(self, prepared_request: PreparedRequest, response: Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        added = getattr(response.request, _ADDED_ATTRIBUTE, ())
        headers = prepared_request.headers
        for name in added:
            headers.pop(name, None)


def _with_headers(request: PreparedRequest, forwarded: Mapping[str, str]) -> PreparedRequest:
    """A copy of ``request`` with the forwarded headers the caller did not set, or ``request``
    itself when the caller set them all."""
    headers = request.headers
    missing = [name for name in forwarded if name not in headers]
    if not missing:
        return request
    sent = request.copy()
    sent_headers = sent.headers
    for name in missing:
        sent_headers[name] = forwarded[name]
    setattr(sent, _ADDED_ATTRIBUTE, tuple(missing))
    return sent
