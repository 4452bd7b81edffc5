"""``httpx.Client`` and ``httpx.AsyncClient`` that forward the current request's propagation
headers.

The headers are added in ``build_request``, where httpx merges the client's default headers
with the request's once: ``client.get``, ``client.request``, ``client.stream`` and a request
from ``client.build_request`` sent with ``client.send`` all pass through it. A request the
caller builds by hand (``httpx.Request(...)``) is sent as is, exactly as httpx sends it without
the client's default headers.

A redirect hop starts as a copy of the previous hop's headers, so the headers meshprop added are
taken off again in ``_build_redirect_request`` (where httpx decides what the next hop carries,
and takes off ``Authorization`` when the origin changes) and added anew only if the next host is
inside the scope. The same method builds ``response.next_request`` when redirects are not
followed, so a redirect the caller follows by hand is treated alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._config import Config
from ._extras import require
from ._instrument import active_plan
from ._outbound import EncodedCache, headers_for_host, names_to_add, watched_names
from ._plan import Plan, plan_for

require("httpx", "httpx")

import httpx  # noqa: E402

__all__ = ["OPT_OUT", "AsyncClient", "Client"]

#: The request extension that turns forwarding off for one request:
#: ``client.get(url, extensions={"meshprop": False})``.
OPT_OUT = "meshprop"

# On a request meshprop added headers to, ``_meshprop_added_headers`` holds the names it added,
# to take them off a redirect hop.


def _has_known_internals() -> bool:
    """meshprop relies on two httpx internals, unchanged across the versions it supports (0.27,
    0.28): the redirect hook, and the (raw name, lower-case name, value) entries of ``Headers``.
    """
    headers = httpx.Headers({"A": "b"})
    return hasattr(httpx.Client, "_build_redirect_request") and headers._list == [
        (b"A", b"a", b"b")
    ]


# Fail at import rather than forward to every redirect target if httpx ever changes them.
if not _has_known_internals():
    raise ImportError(f"meshprop.httpx does not support httpx {httpx.__version__} yet")


class _Forwarding:
    """What both clients add to httpx: the forwarded headers on every request they build, and a
    fresh decision on each redirect hop."""

    _meshprop_plan: Plan

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        request: httpx.Request = super().build_request(*args, **kwargs)  # type: ignore[misc]
        _add_forwarded(request, self._meshprop_plan)
        return request

    def _build_redirect_request(
        self, request: httpx.Request, response: httpx.Response
    ) -> httpx.Request:
        next_request: httpx.Request = super()._build_redirect_request(  # type: ignore[misc]
            request, response
        )
        _readdress(request, next_request, self._meshprop_plan)
        return next_request


class Client(_Forwarding, httpx.Client):
    """A drop-in ``httpx.Client`` that forwards the propagation headers.

    Takes every ``httpx.Client`` argument, plus ``config``. A header the caller set, on the
    request or in the client's ``headers=``, always wins, in any case. Destinations outside the
    propagation scope, and calls made outside a request, get nothing.
    """

    def __init__(self, *, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._meshprop_plan = plan_for(config)


class AsyncClient(_Forwarding, httpx.AsyncClient):
    """A drop-in ``httpx.AsyncClient`` that forwards the propagation headers.

    Takes every ``httpx.AsyncClient`` argument, plus ``config``. A header the caller set, on the
    request or in the client's ``headers=``, always wins, in any case. Destinations outside the
    propagation scope, and calls made outside a request, get nothing.
    """

    def __init__(self, *, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._meshprop_plan = plan_for(config)


def _add_forwarded(request: httpx.Request, plan: Plan) -> None:
    """Add to ``request`` the forwarded headers its caller did not set.

    The lower-case names already present are checked in one pass over the list ``Headers``
    keeps (raw name, lower-case name, value), and the missing headers are appended to it,
    ready-encoded: ``Headers.__contains__`` and ``__setitem__`` each scan the whole list.
    """
    extensions = request.extensions
    if OPT_OUT in extensions and extensions[OPT_OUT] is False:
        return
    forwarded = headers_for_host(request.url.host, plan)
    if forwarded is None:
        return
    encoded = _encoded.get(forwarded)
    items = request.headers._list
    watched = encoded.watched
    for _, lower_name, _ in items:
        if lower_name in watched:
            break
    else:  # the caller set none of them: the usual case
        items += encoded.entries
        request._meshprop_added_headers = encoded.names  # type: ignore[attr-defined]
        return
    present = {lower_name.decode("latin-1") for _, lower_name, _ in items}
    added = names_to_add(forwarded, present)
    for name in added:
        items.append(encoded.entries[encoded.names.index(name)])
    if added:
        request._meshprop_added_headers = added  # type: ignore[attr-defined]


class _Encoded:
    """One snapshot's headers encoded the way ``Headers`` stores them."""

    __slots__ = ("entries", "names", "watched")

    def __init__(self, forwarded: Mapping[str, str]) -> None:
        self.names = tuple(forwarded)
        entries = []
        for name, value in forwarded.items():
            raw_name = name.encode("latin-1")
            entries.append((raw_name, raw_name, value.encode("latin-1")))
        self.entries = tuple(entries)
        self.watched = frozenset(name.encode("latin-1") for name in watched_names(forwarded))


_encoded = EncodedCache(_Encoded)


def _readdress(previous: httpx.Request, next_request: httpx.Request, plan: Plan) -> None:
    """Take the headers meshprop added to ``previous`` off the redirect hop that copied them,
    then add them again if the hop's host is inside the scope."""
    headers = next_request.headers
    for name in getattr(previous, "_meshprop_added_headers", ()):
        headers.pop(name, None)
    _add_forwarded(next_request, plan)


# -- instrument(): plain httpx clients, through their public hooks ------------------------------

#: Where a request's extensions (shared by its redirect hops) record what meshprop added.
_ADDED = "meshprop.added"


def _forward_hop(request: httpx.Request) -> None:
    """A request event hook: take off what an earlier hop got from meshprop, then add what this
    hop's host should get. httpx calls request hooks once per hop."""
    plan = active_plan()
    extensions = request.extensions
    if plan is None or extensions.get(OPT_OUT) is False:
        return
    headers = request.headers
    for name, value in extensions.get(_ADDED, {}).items():
        if headers.get(name) == value:
            del headers[name]
    forwarded = headers_for_host(request.url.host, plan)
    added: dict[str, str] = {}
    if forwarded:
        for name in names_to_add(forwarded, set(headers.keys())):
            headers[name] = added[name] = forwarded[name]
    extensions[_ADDED] = added


async def _forward_hop_async(request: httpx.Request) -> None:
    _forward_hop(request)


def patched_send(original: Any) -> Any:
    """``httpx.Client.send`` that puts the hop hook on the client first (once)."""

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        hooks = self.event_hooks["request"]
        if _forward_hop not in hooks:
            hooks.append(_forward_hop)
        response: httpx.Response = original(self, request, **kwargs)
        return response

    return send


def patched_async_send(original: Any) -> Any:
    async def send(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        hooks = self.event_hooks["request"]
        if _forward_hop_async not in hooks:
            hooks.append(_forward_hop_async)
        response: httpx.Response = await original(self, request, **kwargs)
        return response

    return send
