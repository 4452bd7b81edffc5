"""``requests.Session`` that forwards the current request's propagation headers.

The headers are added in ``Session.send``, the one method every request goes through:
``session.get`` and ``session.request``, a ``PreparedRequest`` the caller sends itself, and each
redirect hop (``resolve_redirects`` sends every hop with ``send``). The caller's
``PreparedRequest`` is never changed: when there is something to add, a copy carries it, and
that copy is what was sent (``response.request``), as requests itself does for redirect hops.

A redirect hop starts as a copy of the previous hop, headers included, so the headers meshprop
added are taken off again in ``rebuild_auth`` (where requests takes off ``Authorization`` when
the host changes); ``send`` then adds them anew only if the next host is inside the scope.

With ``Config.cap_timeouts``, ``send`` also caps the ``timeout`` it is given to what is left of
the caller's deadline (every hop: redirects are sent with ``send`` too), and raises
``requests.exceptions.ConnectTimeout`` instead of sending when nothing is left. It caps every
destination, inside the propagation scope or not.
"""

from __future__ import annotations

from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from ._config import Config
from ._deadline import capped, nothing_left_message, time_left_for_call
from ._extras import require
from ._http_client import decided_above
from ._instrument import active_plan
from ._outbound import (
    RECORDERS,
    EncodedCache,
    headers_for_host,
    names_to_add,
    note_outside,
    record_call,
    take_back_injected,
    watched_names,
)
from ._plan import Plan, plan_for
from ._scope import url_host
from ._tracing import tracing

require("requests", "requests")

import requests  # noqa: E402
from requests import PreparedRequest, Response  # noqa: E402
from requests.structures import CaseInsensitiveDict  # noqa: E402
from urllib3.util import Timeout, parse_url  # noqa: E402

__all__ = ["Session"]

# On the copy that was sent, ``_meshprop_added_headers`` holds the names of the headers meshprop
# added to it; on a prepared request, ``_meshprop_removed_headers`` the names its caller set to
# None (requests' way to remove a header, which leaves no trace in the prepared headers).
_ADDED_ATTRIBUTE = "_meshprop_added_headers"
_REMOVED_ATTRIBUTE = "_meshprop_removed_headers"


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
        self._meshprop_plan = plan_for(config)

    @property
    def meshprop_config(self) -> Config:
        return self._meshprop_plan.config

    @meshprop_config.setter
    def meshprop_config(self, config: Config) -> None:
        self._meshprop_plan = plan_for(config)

    def prepare_request(self, request: requests.Request) -> PreparedRequest:
        prepared = super().prepare_request(request)
        _note_removed(self, request, prepared)
        return prepared

    def send(self, request: PreparedRequest, **kwargs: Any) -> Response:
        plan = self._meshprop_plan
        if plan.cap_timeouts:
            _cap_timeout(request, kwargs, plan)
        return super().send(_to_send(request, plan), **kwargs)

    def rebuild_auth(self, prepared_request: PreparedRequest, response: Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        _take_off_added(prepared_request, response)


def _note_removed(
    session: requests.Session, request: requests.Request, prepared: PreparedRequest
) -> None:
    """Remember the names the caller set to None, requests' way to remove a header."""
    if not (_has_none(request.headers) or _has_none(session.headers)):
        return  # the usual call: nothing removed
    removed = [
        str(name).lower()
        for headers in (request.headers, session.headers)
        if headers
        for name, value in headers.items()
        if value is None
    ]
    setattr(prepared, _REMOVED_ATTRIBUTE, frozenset(removed))


def _has_none(headers: Any) -> bool:
    """Whether a headers mapping holds a None value, looked for without a Python-level loop
    where the mapping's type allows (a dict, or the store of requests' own headers)."""
    if not headers:
        return False
    if type(headers) is dict:
        return None in headers.values()
    if type(headers) is _STORED_HEADERS:
        return None in map(_stored_value, headers._store.values())  # type: ignore[attr-defined]
    return None in headers.values()


def _to_send(request: PreparedRequest, plan: Plan) -> PreparedRequest:
    """What to send: ``request``, or a copy with the forwarded headers it lacks (never twice:
    a request meshprop already added to is sent as it is)."""
    if hasattr(request, _ADDED_ATTRIBUTE):
        return request
    host = _host(str(request.url))
    forwarded = headers_for_host(host, plan)
    if forwarded:
        sent = _with_headers(request, forwarded)
        if RECORDERS:
            added = {name: forwarded[name] for name in getattr(sent, _ADDED_ATTRIBUTE, ())}
            _record(request, sent, added, True)
        return sent
    if tracing() is not None and not plan.scope.includes_host(host):
        take_back_injected(request.headers)  # an OpenTelemetry wrapper outside this one
        note_outside(request.headers)  # ...or inside it
    if RECORDERS:
        _record(request, request, {}, plan.scope.includes_host(host))
    return request


def _cap_timeout(request: PreparedRequest, send_kwargs: dict[str, Any], plan: Plan) -> None:
    """Lower the ``timeout`` in ``send_kwargs`` to what is left of the caller's deadline; with
    nothing left, fail as requests does when it cannot connect in time, before connecting."""
    left = time_left_for_call(plan)
    if left is None:
        return
    if left <= 0.0:
        message = nothing_left_message(str(request.method), str(request.url))
        raise requests.exceptions.ConnectTimeout(message, request=request)
    send_kwargs["timeout"] = _capped_timeout(send_kwargs.get("timeout"), left)


def _capped_timeout(timeout: Any, left: float) -> Any:
    """Any timeout requests takes, lowered to ``left`` and of the same kind: a number or None
    (both connect and read), a ``(connect, read)`` pair, or a urllib3 ``Timeout``, copied, whose
    ``total`` bounds connect and read together. Anything else is left for requests to refuse."""
    if isinstance(timeout, Timeout):
        own = timeout.clone()
        total = own.total if isinstance(own.total, (int, float)) else None  # None or "default"
        own.total = capped(total, left)
        return own
    if isinstance(timeout, tuple):
        return tuple(_capped_seconds(part, left) for part in timeout)
    return _capped_seconds(timeout, left)


def _capped_seconds(seconds: Any, left: float) -> Any:
    if seconds is None or (isinstance(seconds, (int, float)) and not isinstance(seconds, bool)):
        return capped(seconds, left)
    return seconds


def _record(
    request: PreparedRequest, sent: PreparedRequest, added: Mapping[str, str], in_scope: bool
) -> None:
    record_call(
        "requests", request.method, str(request.url), added, in_scope, sent.headers, request
    )


def _take_off_added(prepared_request: PreparedRequest, response: Response) -> None:
    """A redirect hop starts as a copy of the last one: take off what meshprop added there."""
    headers = prepared_request.headers
    for name in getattr(response.request, _ADDED_ATTRIBUTE, ()):
        headers.pop(name, None)


# -- instrument(): plain requests sessions --------------------------------------------------


def patched_prepare_request(original: Any) -> Any:
    def prepare_request(self: requests.Session, request: requests.Request) -> PreparedRequest:
        prepared: PreparedRequest = original(self, request)
        _note_removed(self, request, prepared)
        return prepared

    return prepare_request


def patched_send(original: Any) -> Any:
    def send(self: requests.Session, request: PreparedRequest, **kwargs: Any) -> Response:
        plan = active_plan()
        if plan is None:
            response: Response = original(self, request, **kwargs)
            return response
        if plan.cap_timeouts:
            _cap_timeout(request, kwargs, plan)
        token = decided_above.set(True)
        try:
            response = original(self, _to_send(request, plan), **kwargs)
        finally:
            decided_above.reset(token)
        return response

    return send


def patched_rebuild_auth(original: Any) -> Any:
    def rebuild_auth(
        self: requests.Session, prepared_request: PreparedRequest, response: Response
    ) -> None:
        original(self, prepared_request, response)
        _take_off_added(prepared_request, response)

    return rebuild_auth


def _has_known_store() -> bool:
    """``_with_headers`` relies on the store ``CaseInsensitiveDict`` has kept since requests
    1.0: lower-case name -> (name as set, value)."""
    headers = CaseInsensitiveDict({"A": "b"})
    return getattr(headers, "_store", None) == {"a": ("A", "b")}


# The headers type whose store ``_with_headers`` reads directly; None (always the plain way)
# if requests ever changes that store.
_STORED_HEADERS = CaseInsensitiveDict if _has_known_store() else None
_stored_value = itemgetter(1)

# The last URL's host: the calls a request makes usually go to the same URL, and parsing it
# costs more than comparing it. One entry, replaced whole, so threads can only miss.
_last_url_host = ("", "")


def _host(url: str) -> str:
    global _last_url_host
    last_url, last_host = _last_url_host
    if url == last_url:
        return last_host
    host = _connected_host(url)
    _last_url_host = (url, host)
    return host


def _connected_host(url: str) -> str:
    """The host urllib3 connects to for ``url``, "" if it reads none. A URL whose host every
    client reads alike (``url_host``) skips urllib3's parser, which costs ten times more."""
    host = url_host(url)
    if host is not None:
        return host
    try:
        return parse_url(url).host or ""
    except ValueError:  # urllib3's LocationParseError: it would not connect either
        return ""


def _with_headers(request: PreparedRequest, forwarded: Mapping[str, str]) -> PreparedRequest:
    """A copy of ``request`` with the forwarded headers the caller did not set, or ``request``
    itself when the caller set them all.

    This is the per-call hot path. ``CaseInsensitiveDict`` answers ``in`` through ``__getitem__``
    and a caught ``KeyError``, and ``PreparedRequest.copy`` rebuilds the headers one by one and
    a whole cookie jar, together several times meshprop's own work. So the lower-case names
    requests keeps (``_store``: lower-case name -> (name, value)) are checked against the
    forwarded ones in one C-level pass, and the copy is made attribute for attribute with the
    header store copied whole. It shares the body and hooks, as ``PreparedRequest.copy`` does,
    and the cookie jar, which requests only reads once a request is prepared (a redirect hop
    or a digest-auth retry copies the request before writing to its jar).
    """
    headers = request.headers
    removed = getattr(request, _REMOVED_ATTRIBUTE, None)
    if type(headers) is not _STORED_HEADERS or removed:  # the plain way
        return _with_headers_copied(request, forwarded, removed or frozenset())
    encoded = _encoded.get(forwarded)
    store = headers._store  # type: ignore[attr-defined]
    if encoded.watched.isdisjoint(store):
        missing = encoded.names
        entries = encoded.entries
    else:
        missing = names_to_add(forwarded, store)
        if not missing:
            return request
        entries = {name: encoded.entries[name] for name in missing}
    sent_store = store.copy()
    sent_store.update(entries)
    sent_headers: CaseInsensitiveDict[str] = CaseInsensitiveDict.__new__(CaseInsensitiveDict)
    sent_headers._store = sent_store  # type: ignore[attr-defined]
    sent = PreparedRequest.__new__(PreparedRequest)
    sent.__dict__.update(request.__dict__)
    sent.headers = sent_headers
    setattr(sent, _ADDED_ATTRIBUTE, missing)
    return sent


def _with_headers_copied(
    request: PreparedRequest, forwarded: Mapping[str, str], removed: frozenset[str]
) -> PreparedRequest:
    """``_with_headers`` through the public ``Mapping`` and ``copy`` API, for any headers (a
    plain ``dict`` too: names are compared in lower case)."""
    present = {str(name).lower() for name in request.headers} | removed
    missing = names_to_add(forwarded, present)
    if not missing:
        return request
    sent = request.copy()
    sent_headers = sent.headers
    for name in missing:
        sent_headers[name] = forwarded[name]
    setattr(sent, _ADDED_ATTRIBUTE, missing)
    return sent


class _Encoded:
    """One snapshot's headers in the layout of ``CaseInsensitiveDict._store``."""

    __slots__ = ("entries", "names", "watched")

    def __init__(self, forwarded: Mapping[str, str]) -> None:
        self.names = tuple(forwarded)  # already lower-case
        self.watched = watched_names(forwarded)
        self.entries = {name: (name, value) for name, value in forwarded.items()}


_encoded = EncodedCache(_Encoded)
