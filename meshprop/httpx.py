"""``httpx.Client`` and ``httpx.AsyncClient`` that forward the current request's propagation
headers, and the request event hook ``instrument()`` puts on plain httpx clients.

Both go through httpx's public surface. The drop-in clients add the headers in
``build_request``, where httpx merges the client's default headers with the request's, so they
are visible before sending (``client.get``, ``client.stream``, ``build_request`` + ``send``); a
request the caller builds by hand (``httpx.Request(...)``) is sent as is, as httpx sends it
without the client's default headers. A redirect hop starts as a copy of the previous hop's
headers and passes through the request event hooks: there the headers meshprop added (recorded
in the request's ``extensions``, which httpx hands on to every hop) are taken off, and added
again only if the hop's host is inside the scope. ``response.next_request``, sent by hand, is
such a hop too.

With ``Config.cap_timeouts``, the same request hook caps each hop's timeout (the four values
httpx keeps in ``extensions["timeout"]``) to what is left of the caller's deadline, just before
the hop goes out, and raises ``httpx.ConnectTimeout`` instead of sending a hop when nothing is
left. It caps every destination, inside the propagation scope or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._config import Config
from ._deadline import capped, nothing_left_message, time_left_for_call
from ._extras import require
from ._instrument import active_plan
from ._outbound import (
    RECORDERS,
    EncodedCache,
    headers_for_host,
    names_to_add,
    note_outside,
    record_call,
    watched_names,
)
from ._plan import Plan, plan_for
from ._tracing import tracing

require("httpx", "httpx")

import httpx  # noqa: E402

__all__ = ["OPT_OUT", "AsyncClient", "Client"]

#: The request extension that turns forwarding off for one request:
#: ``client.get(url, extensions={"meshprop": False})``.
OPT_OUT = "meshprop"

# In a request's extensions (shared by its redirect hops): (the id of the last hop meshprop
# decided, what it added there), so a hook never decides one hop twice.
_STATE = "meshprop.state"
_NOTHING: Mapping[str, str] = {}


def _has_list_layout() -> bool:
    """Whether ``Headers`` keeps (raw name, lower-case name, value) entries in ``_list``, as
    httpx 0.27 and 0.28 do: then forwarded headers are appended there, ready-encoded, instead
    of one ``__setitem__`` (a scan of the list) per header."""
    try:
        return httpx.Headers({"A": "b"})._list == [(b"A", b"a", b"b")]
    except Exception:
        return False


_LIST_LAYOUT = _has_list_layout()


class _Encoded:
    """One snapshot's headers encoded the way ``Headers`` stores them."""

    __slots__ = ("all_entries", "entries", "watched")

    def __init__(self, forwarded: Mapping[str, str]) -> None:
        self.entries = {
            name: (name.encode("latin-1"), name.encode("latin-1"), value.encode("latin-1"))
            for name, value in forwarded.items()
        }
        self.all_entries = tuple(self.entries.values())
        self.watched = frozenset(name.encode("latin-1") for name in watched_names(forwarded))


_encoded = EncodedCache(_Encoded)


def _forward(request: httpx.Request, plan: Plan) -> None:
    """Make ``request`` carry what its host should get: take off what meshprop added to an
    earlier hop, then add the forwarded headers its caller did not set."""
    extensions = request.extensions
    state: tuple[int, Mapping[str, str]] | None = extensions.get(_STATE)
    if extensions.get(OPT_OUT) is False:
        extensions[_STATE] = (id(request), _NOTHING)
        return
    headers = request.headers
    if state is not None and state[1]:
        for name, value in state[1].items():
            if headers.get(name) == value:
                del headers[name]
    host = request.url.host
    forwarded = headers_for_host(host, plan)
    if not forwarded:
        extensions[_STATE] = (id(request), _NOTHING)
        if tracing() is not None and not plan.scope.includes_host(host):
            note_outside(request.headers)
        if RECORDERS:
            _record(request, plan, {})
        return
    if _LIST_LAYOUT:
        encoded = _encoded.get(forwarded)
        items = headers._list
        watched = encoded.watched
        for _, lower_name, _ in items:
            if lower_name in watched:
                break
        else:  # the caller set none of them: the usual case
            items += encoded.all_entries
            extensions[_STATE] = (id(request), forwarded)
            if RECORDERS:
                _record(request, plan, forwarded)
            return
        present = {lower_name.decode("latin-1") for _, lower_name, _ in items}
        added = {name: forwarded[name] for name in names_to_add(forwarded, present)}
        items += (encoded.entries[name] for name in added)
    else:
        added = {name: forwarded[name] for name in names_to_add(forwarded, set(headers.keys()))}
        headers.update(added)
    extensions[_STATE] = (id(request), added)
    if RECORDERS:
        _record(request, plan, added)


_TIMEOUT_KINDS = ("connect", "read", "write", "pool")


def _cap_timeout(request: httpx.Request, plan: Plan) -> None:
    """Lower each of the hop's timeouts to what is left of the caller's deadline (a new dict:
    the old one may be the caller's, or an earlier hop's); with nothing left, fail as httpx
    does when it cannot connect in time, before any connection is made."""
    left = time_left_for_call(plan)
    if left is None:
        return
    if left <= 0.0:
        message = nothing_left_message(request.method, str(request.url))
        raise httpx.ConnectTimeout(message, request=request)
    extensions = request.extensions
    timeouts: Mapping[str, Any] = extensions.get("timeout") or {}
    extensions["timeout"] = {
        **timeouts,
        **{kind: capped(timeouts.get(kind), left) for kind in _TIMEOUT_KINDS},
    }


def is_decided(request: httpx.Request) -> bool:
    """Whether meshprop decided this very request (hop) what to forward."""
    state = request.extensions.get(_STATE)
    return state is not None and state[0] == id(request)


def _record(request: httpx.Request, plan: Plan, added: Mapping[str, str]) -> None:
    in_scope = plan.scope.includes_host(request.url.host)
    record_call(
        "httpx", request.method, str(request.url), added, in_scope, request.headers, request
    )


class _Forwarding:
    """What both drop-in clients add to httpx."""

    _meshprop_plan: Plan

    def _meshprop_install(self, config: Config | None, is_async: bool) -> None:
        self._meshprop_plan = plan = plan_for(config)

        def each_hop(request: httpx.Request) -> None:
            # A redirect hop of a request build_request decided (the first hop is decided
            # already); every hop's timeout is capped here, as it goes out.
            state = request.extensions.get(_STATE)
            if state is not None and state[0] != id(request):
                _forward(request, plan)
            if plan.cap_timeouts:
                _cap_timeout(request, plan)

        async def async_each_hop(request: httpx.Request) -> None:
            each_hop(request)

        hooks = self.event_hooks["request"]  # type: ignore[attr-defined]
        hooks.append(async_each_hop if is_async else each_hop)

    def build_request(self, *args: Any, **kwargs: Any) -> httpx.Request:
        request: httpx.Request = super().build_request(*args, **kwargs)  # type: ignore[misc]
        _forward(request, self._meshprop_plan)
        return request


class Client(_Forwarding, httpx.Client):
    """A drop-in ``httpx.Client`` that forwards the propagation headers.

    Takes every ``httpx.Client`` argument, plus ``config``. A header the caller set, on the
    request or in the client's ``headers=``, always wins, in any case. Destinations outside the
    propagation scope, and calls made outside a request, get nothing.
    """

    def __init__(self, *, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._meshprop_install(config, is_async=False)


class AsyncClient(_Forwarding, httpx.AsyncClient):
    """A drop-in ``httpx.AsyncClient`` that forwards the propagation headers.

    Takes every ``httpx.AsyncClient`` argument, plus ``config``. A header the caller set, on the
    request or in the client's ``headers=``, always wins, in any case. Destinations outside the
    propagation scope, and calls made outside a request, get nothing.
    """

    def __init__(self, *, config: Config | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._meshprop_install(config, is_async=True)


# -- instrument(): plain httpx clients ----------------------------------------------------------


def _instrumented_hop(request: httpx.Request) -> None:
    """A plain client's request or redirect hop that no earlier step decided (a drop-in
    client's hops follow that client's Config)."""
    plan = active_plan()
    if plan is not None:
        state = request.extensions.get(_STATE)
        if state is None or state[0] != id(request):
            _forward(request, plan)
            if plan.cap_timeouts:
                _cap_timeout(request, plan)


async def _instrumented_hop_async(request: httpx.Request) -> None:
    _instrumented_hop(request)


def patched_send(original: Any) -> Any:
    """``httpx.Client.send`` that puts the hop hook on the client first (once)."""

    def send(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        hooks = self.event_hooks["request"]
        if _instrumented_hop not in hooks:
            hooks.append(_instrumented_hop)
        response: httpx.Response = original(self, request, **kwargs)
        return response

    return send


def patched_async_send(original: Any) -> Any:
    async def send(
        self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any
    ) -> httpx.Response:
        hooks = self.event_hooks["request"]
        if _instrumented_hop_async not in hooks:
            hooks.append(_instrumented_hop_async)
        response: httpx.Response = await original(self, request, **kwargs)
        return response

    return send
