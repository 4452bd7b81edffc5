"""Where a gRPC channel connects: the hosts in its target, read as gRPC's resolvers read them.

A gRPC client names its destination once, in the channel's target, not per call, so the scope
is decided on the target. gRPC reads a target as a URI whose scheme picks the resolver
(``dns:[//dns-server/]host[:port]``, ``ipv4:addr[:port][,addr[:port]...]``, ``ipv6:...``,
``unix:path``, ``unix-abstract:name``), and anything that is not a URI with a known scheme
(``host:port``, ``10.0.0.1:50051``, ``[::1]:50051``) as ``dns:///`` followed by the target. A
target that cannot be read one way only (percent-encoding, a query, a scheme whose destination
is not a host, such as ``xds:`` or ``vsock:``) has no hosts, so it gets no headers.
"""

from __future__ import annotations

import re

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):", re.ASCII)
_PORT = re.compile(r"[0-9]{0,5}", re.ASCII)
# Schemes grpcio resolves to something other than a host and port: nothing meshprop can judge.
_OTHER_SCHEMES = frozenset({"xds", "google-c2p", "google-c2p-experimental", "vsock", "fake"})
#: What a Unix domain socket is judged as: a socket on this machine.
LOCAL_HOST = "localhost"


def target_hosts(target: str) -> tuple[str, ...] | None:
    """The hosts a channel to ``target`` may connect to, or None if the target is unreadable.

    A Unix socket is this machine: its host is ``localhost``. Hosts are returned as written
    (an IPv6 literal keeps its brackets); the scope reads them.
    """
    if not isinstance(target, str) or not target or "%" in target or not target.isascii():
        return None
    match = _SCHEME.match(target)
    scheme = "" if match is None else match.group(1)
    rest = "" if match is None else target[match.end() :]
    if scheme in ("unix", "unix-abstract"):
        return (LOCAL_HOST,) if rest else None
    if scheme in _OTHER_SCHEMES:
        return None
    if scheme not in ("dns", "ipv4", "ipv6"):
        return _one_host(target)  # gRPC reads it as dns:///target
    if "?" in rest or "#" in rest:
        return None
    if rest.startswith("//"):
        authority, slash, rest = rest[2:].partition("/")
        # dns://server/host names the DNS server to ask; the address lists take no authority.
        if not slash or (authority and scheme != "dns"):
            return None
    elif rest.startswith("/"):
        rest = rest[1:]
    if scheme == "dns":
        return _one_host(rest)
    hosts = []
    for address in rest.split(","):
        host = _host(address)
        if host is None:
            return None
        hosts.append(host)
    return tuple(hosts)


def _one_host(host_port: str) -> tuple[str, ...] | None:
    host = _host(host_port)
    return None if host is None else (host,)


def _host(host_port: str) -> str | None:
    """The host of ``host[:port]``, ``[v6]:port`` or a bare IPv6 address, as gRPC splits them."""
    if host_port.startswith("["):
        host, bracket, port = host_port.partition("]")
        if not bracket or (port and not (port.startswith(":") and _PORT.fullmatch(port[1:]))):
            return None
        return host + bracket
    if host_port.count(":") > 1:
        return host_port  # an IPv6 address without brackets and port
    host, _, port = host_port.partition(":")
    if not host or "/" in host or not _PORT.fullmatch(port):
        return None
    return host
