"""What an outbound call adds: the current snapshot's headers, for destinations in scope.

Every client asks here, so the scope rule, the "no request, no headers" rule, the caller-wins
rule and the OpenTelemetry rule (while a span is active, its ids replace the inbound trace
headers) are decided once for all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, MutableMapping
from contextvars import ContextVar
from typing import Any, Generic, NamedTuple, TypeVar

from . import _headers as h
from ._config import Config
from ._plan import Plan, plan_for
from ._snapshot import CURRENT
from ._tracing import tracing

_Encoded = TypeVar("_Encoded")


def outbound_headers(url: str | None = None, *, config: Config | None = None) -> dict[str, str]:
    """The headers a client would add to a call to ``url``, as a new dict.

    With no URL the scope check is skipped; with one, a destination outside the propagation
    scope (or a URL that cannot be read unambiguously) gets nothing. Outside a request, nothing.
    """
    plan = plan_for(config)
    if url is not None and not plan.scope.includes_url(url):
        return {}
    snapshot = CURRENT.get()
    bridge = tracing()
    if bridge is not None:
        if snapshot is None:
            snapshot = bridge.stored_snapshot()
        return {} if snapshot is None else dict(bridge.headers_for(snapshot))
    return {} if snapshot is None else dict(snapshot.headers)


def headers_for_host(host: str, plan: Plan) -> Mapping[str, str] | None:
    """The clients' hot path: the headers for a call to ``host``, or None. The mapping is
    shared: read it, never change it."""
    snapshot = CURRENT.get()
    bridge = tracing()
    if bridge is not None and snapshot is None:
        snapshot = bridge.stored_snapshot()
    if snapshot is None or not snapshot.headers or not plan.scope.includes_host(host):
        return None
    if bridge is not None:
        return bridge.headers_for(snapshot)
    return snapshot.headers


def names_to_add(forwarded: Mapping[str, str], present: Collection[str]) -> tuple[str, ...]:
    """The forwarded names a call gets when its caller set the (lower-case) names ``present``:
    a header the caller set always wins, and a caller who set any trace header gets none of
    the forwarded trace context, so one call never carries two traces."""
    if any(name in present for name in h.TRACE_NAMING_NAMES):
        return tuple(
            name for name in forwarded if name not in present and name not in h.TRACE_CONTEXT_NAMES
        )
    return tuple(name for name in forwarded if name not in present)


class EncodedCache(Generic[_Encoded]):
    """The last snapshot's headers in a client's own form, built once per snapshot rather than
    once per call (a handler usually makes several calls for one request). One entry, replaced
    whole, so concurrent requests can only miss, never see another's headers, and memory does
    not grow with traffic."""

    __slots__ = ("_build", "_entry")

    def __init__(self, build: Callable[[Mapping[str, str]], _Encoded]) -> None:
        self._build = build
        self._entry: tuple[Mapping[str, str], _Encoded] | None = None

    def get(self, forwarded: Mapping[str, str]) -> _Encoded:
        entry = self._entry
        if entry is None or entry[0] is not forwarded:
            entry = self._entry = (forwarded, self._build(forwarded))
        return entry[1]


def watched_names(forwarded: Mapping[str, str]) -> frozenset[str]:
    """The names whose presence on a call changes what it gets: the forwarded ones, and the
    trace headers (a caller's own trace context replaces the forwarded one)."""
    return frozenset(forwarded) | h.TRACE_NAMING_NAMES


# -- the scope for what OpenTelemetry's instrumentations inject (while instrument() is on) -----
#
# ``MeshPropagator.inject`` never sees the destination; the clients do, before or after it. A
# client that judges a destination outside the scope first notes the carrier it will send;
# one that judges after takes back what the propagator last wrote.

_outside_carrier: ContextVar[int] = ContextVar("meshprop.outside_carrier", default=0)
_injected: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("meshprop.injected", default=())


def note_outside(carrier: object) -> None:
    """``carrier``'s call goes outside the scope: an injection into it is refused."""
    _outside_carrier.set(id(carrier))


def is_noted_outside(carrier: object) -> bool:
    return _outside_carrier.get() == id(carrier)


def note_injected(pairs: tuple[tuple[str, str], ...]) -> None:
    """What ``MeshPropagator.inject`` just wrote, for a client that judges after it."""
    _injected.set(pairs)


def take_back_injected(headers: MutableMapping[str, str]) -> None:
    """Remove from ``headers`` what the propagator last wrote, where it is still unchanged."""
    for name, value in _injected.get():
        if headers.get(name) == value:
            del headers[name]
    _injected.set(())


# -- recording, for meshprop.testing ----------------------------------------------------------


class OutboundCall(NamedTuple):
    """One outbound call as meshprop decided it.

    ``added`` is what meshprop added to it (after the caller-wins rule); ``carried`` every
    header the call carried at that moment as (lower-case name, value) pairs, or None where the
    client does not hand them over (``http.client``); ``request_id`` the id of the request
    context the call was made in, None outside any request.
    """

    client: str
    method: str | None
    destination: str
    added: Mapping[str, str]
    in_scope: bool
    in_request: bool
    request_id: str | None
    carried: tuple[tuple[str, str], ...] | None
    through_meshprop: bool = True


#: Called with each call and the client's own object for it (or None) while not empty. The
#: clients test it before they call ``record_call``, so recording costs nothing until a
#: recorder (the ``meshprop_calls`` fixture) is registered.
RECORDERS: list[Callable[[OutboundCall, object], None]] = []


def record_call(
    client: str,
    method: str | None,
    destination: str,
    added: Mapping[str, str],
    in_scope: bool,
    carried: object = None,
    subject: object = None,
    *,
    through_meshprop: bool = True,
) -> None:
    """Hand one outbound call to every recorder. ``carried`` is the call's headers in the
    client's own form (a mapping, a multi-mapping or pairs), ``subject`` the client's object
    for the call, so a recorder can tell one call decided twice (a drop-in client under
    ``instrument()``) from two calls."""
    if not RECORDERS:
        return
    snapshot = CURRENT.get()
    bridge = tracing()
    if snapshot is None and bridge is not None:
        snapshot = bridge.stored_snapshot()
    call = OutboundCall(
        client,
        method,
        destination,
        dict(added),
        in_scope,
        snapshot is not None,
        None if snapshot is None else snapshot.request_id,
        None if carried is None else _pairs(carried),
        through_meshprop,
    )
    for recorder in tuple(RECORDERS):
        recorder(call, subject)


def _pairs(headers: Any) -> tuple[tuple[str, str], ...]:
    items = headers.multi_items() if hasattr(headers, "multi_items") else None
    if items is None:
        items = headers.items() if hasattr(headers, "items") else headers
    return tuple(
        (
            (name.decode("latin-1") if isinstance(name, bytes) else str(name)).lower(),
            value.decode("latin-1") if isinstance(value, bytes) else str(value),
        )
        for name, value in items
    )
