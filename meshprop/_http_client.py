"""``http.client`` under ``instrument()``: the forwarded headers added to each request a
connection sends, so ``urllib.request``, urllib3 and requests forward them too.

The names a request's caller put are recorded as they are put (``putheader``), and the missing
forwarded headers are put last, just before the headers end (``endheaders``), judged by the
connection's host: a redirect is a new request, decided again.

With ``Config.cap_timeouts``, the connect and the send (``endheaders``) and the wait for the
response (``getresponse``) each get no more than what is left of the caller's deadline, so they
fail with the socket's own ``TimeoutError``, which urllib3 and ``urllib.request`` report as they
report any timeout. A request made when nothing is left fails before a byte is sent.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ._deadline import capped, time_left_for_call
from ._instrument import active_plan
from ._outbound import RECORDERS, headers_for_host, names_to_add, record_call
from ._plan import Plan

#: The names put so far on the request a connection is building (an attribute of ours).
_PUT_NAMES = "_meshprop_put_names"

#: Set on a connection whose socket timeout meshprop lowered for one request (an attribute of
#: ours): the next request puts the connection's own timeout back.
_CAPPED_SOCKET = "_meshprop_capped_socket"

#: True while a client above http.client (requests' ``Session.send``) has decided the request's
#: headers itself: it knows what its caller removed, which http.client cannot see.
decided_above: ContextVar[bool] = ContextVar("meshprop.decided_above", default=False)


def putrequest(original: Callable[..., None]) -> Callable[..., None]:
    def patched(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        original(self, method, url, *args, **kwargs)
        # A request the client above decided (requests' Session.send) needs no names kept.
        if decided_above.get():
            self.__dict__.pop(_PUT_NAMES, None)
        else:
            self.__dict__[_PUT_NAMES] = set()

    return patched


def putheader(original: Callable[..., None]) -> Callable[..., None]:
    def patched(self: Any, header: str | bytes, *values: Any) -> None:
        names = self.__dict__.get(_PUT_NAMES)
        if names is not None:
            name = header.decode("latin-1") if isinstance(header, bytes) else str(header)
            names.add(name.lower())
        original(self, header, *values)

    return patched


def endheaders(original: Callable[..., None]) -> Callable[..., None]:
    def patched(self: Any, *args: Any, **kwargs: Any) -> None:
        names = self.__dict__.pop(_PUT_NAMES, None)
        plan = active_plan()
        if names is not None and plan is not None and not decided_above.get():
            host = getattr(self, "_tunnel_host", None) or self.host
            forwarded = headers_for_host(host, plan) if isinstance(host, str) else None
            added: tuple[str, ...] = ()
            if forwarded:
                added = names_to_add(forwarded, names)
                for name in added:
                    self.putheader(name, forwarded[name])
            if RECORDERS and isinstance(host, str):
                in_scope = plan.scope.includes_host(host)
                destination = f"{host}:{self.port}"
                added_headers = {name: forwarded[name] for name in added} if forwarded else {}
                method = getattr(self, "_method", None)
                record_call("http.client", method, destination, added_headers, in_scope)
        if plan is not None and plan.cap_timeouts:
            _end_within_deadline(self, plan, lambda: original(self, *args, **kwargs))
        else:
            original(self, *args, **kwargs)

    return patched


def getresponse(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def patched(self: Any) -> Any:
        plan = active_plan()
        if plan is not None and plan.cap_timeouts:
            _cap_the_wait(self, plan)
        return original(self)

    return patched


def _end_within_deadline(connection: Any, plan: Plan, end: Callable[[], None]) -> None:
    """End the headers (which connects a new connection and sends the request) within what is
    left: the connection's timeout is lowered for the connect only (it is the caller's
    setting, kept for its next requests), the socket's for this request."""
    left = time_left_for_call(plan)
    sock = connection.sock
    if left is None:
        if sock is not None and connection.__dict__.pop(_CAPPED_SOCKET, False):
            sock.settimeout(_own_timeout(connection))
        end()
        return
    if left == 0.0:
        raise _nothing_left_to_send(connection)
    own = connection.timeout
    limit = capped(_own_timeout(connection), left)
    if sock is not None:
        sock.settimeout(limit)
    connection.__dict__[_CAPPED_SOCKET] = True
    connection.timeout = limit
    try:
        end()
    finally:
        connection.timeout = own


def _cap_the_wait(connection: Any, plan: Plan) -> None:
    """Lower the socket's timeout to what is left before the response is read: urllib3 sets
    its read timeout on the socket after the request is sent."""
    left = time_left_for_call(plan)
    if left is None:
        return
    if left == 0.0:
        raise _nothing_left()
    sock = connection.sock
    if sock is not None:
        sock.settimeout(capped(sock.gettimeout(), left))
        connection.__dict__[_CAPPED_SOCKET] = True


def _own_timeout(connection: Any) -> float | None:
    """The connection's own timeout in seconds (None: none); http.client's default stands for
    the socket module's."""
    timeout = connection.timeout
    if timeout is None or isinstance(timeout, (int, float)):
        return timeout
    return socket.getdefaulttimeout()


def _nothing_left() -> TimeoutError:
    """What a socket raises when its timeout runs out, for a call made after the deadline."""
    return TimeoutError("timed out (nothing was left of the caller's deadline)")


def _nothing_left_to_send(connection: Any) -> Exception:
    """What the connection's client raises for a connect that timed out: for a urllib3
    connection urllib3's own ``ConnectTimeoutError`` (urllib3 takes an ``OSError`` raised while
    sending for a dropped connection), else the socket's ``TimeoutError``."""
    urllib3_connection = sys.modules.get("urllib3.connection")
    if urllib3_connection is not None and isinstance(connection, urllib3_connection.HTTPConnection):
        from urllib3.exceptions import ConnectTimeoutError

        return ConnectTimeoutError(
            connection, f"Connection to {connection.host} timed out. (nothing was left)"
        )
    return _nothing_left()
