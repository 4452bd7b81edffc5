"""``http.client`` under ``instrument()``: the forwarded headers added to each request a
connection sends, so ``urllib.request``, urllib3 and requests forward them too.

The names a request's caller put are recorded as they are put (``putheader``), and the missing
forwarded headers are put last, just before the headers end (``endheaders``), judged by the
connection's host: a redirect is a new request, decided again.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ._instrument import active_plan
from ._outbound import RECORDERS, headers_for_host, names_to_add, record_call

#: The names put so far on the request a connection is building (an attribute of ours).
_PUT_NAMES = "_meshprop_put_names"

#: True while a client above http.client (requests' ``Session.send``) has decided the request's
#: headers itself: it knows what its caller removed, which http.client cannot see.
decided_above: ContextVar[bool] = ContextVar("meshprop.decided_above", default=False)


def putrequest(original: Callable[..., None]) -> Callable[..., None]:
    def patched(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> None:
        original(self, method, url, *args, **kwargs)
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
        original(self, *args, **kwargs)

    return patched
