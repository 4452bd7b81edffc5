"""Which destinations get the propagation headers.

Trace ids, request ids and baggage describe the inside of the mesh; sending them to a third
party leaks them. So a wrapped client forwards only to hosts inside the propagation scope, and
this module is the one place that decides it, for every client.

A host is judged as what the client will connect to, not as it is spelt: ``2130706433``,
``0x7f.1`` and ``127.1`` are 127.0.0.1 to the operating system, ``::ffff:10.0.0.1`` is
10.0.0.1. A host or URL that cannot be read one way only is outside the scope.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection

#: The scope token that stands for the default mesh rules.
MESH = "mesh"
#: The scope token that stands for every destination.
ALL = "all"

_MESH_SUFFIXES = (".svc", ".svc.cluster.local", ".local")
# A name with a trailing dot is absolute: the resolver skips the cluster's search domains, so
# only suffixes that are whole names by themselves still lead inside.
_ABSOLUTE_MESH_SUFFIXES = (".svc.cluster.local.", ".local.")
_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "::1/128",
        "fc00::/7",
    )
)
_CACHE_LIMIT = 4096

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: What a host leads to: an address, or a lower-case ASCII name (a trailing dot kept).
Destination = IPAddress | str

_NAME = re.compile(r"(?:[a-z0-9_-]+\.)*[a-z0-9_-]+\.?", re.ASCII)
# WHATWG's rule, and the safe one: a name whose last label is a number is an address or nothing.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.ASCII)
# One part of an IPv4 address as inet_aton reads it: hex, octal or decimal.
_ADDRESS_PART = re.compile(r"0x[0-9a-f]+|0[0-7]*|[1-9][0-9]*", re.ASCII)
_IDNA_DOTS = ("\u3002", "\uff0e", "\uff61")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")

# scheme "://", the authority, and the character that ends it (where every client ends it).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#\\]*)(.?)", re.ASCII | re.DOTALL)
_USERINFO = re.compile(r"[A-Za-z0-9._~%!$&'()*+,;=:-]*", re.ASCII)
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{0,5}))?", re.ASCII)


def _ipv4_from_parts(name: str) -> ipaddress.IPv4Address | None:
    """The address inet_aton reads from ``name`` (``127.1``, ``0x7f000001``, ``0177.0.0.1``)."""
    parts = name.split(".")
    if len(parts) > 4 or not all(_ADDRESS_PART.fullmatch(part) for part in parts):
        return None
    numbers = [
        int(part, 16) if part.startswith("0x") else int(part, 8 if part[0] == "0" else 10)
        for part in parts
    ]
    *leading, last = numbers
    if any(number > 0xFF for number in leading) or last >= 1 << (8 * (5 - len(numbers))):
        return None
    value = last
    for index, number in enumerate(leading):
        value |= number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv6(host: str) -> IPAddress | None:
    """An IPv6 literal, bracketed or not, with any zone dropped; an embedded IPv4 address (the
    mapped ``::ffff:a.b.c.d`` and compatible ``::a.b.c.d`` forms) is that address."""
    if host.startswith("["):
        if not host.endswith("]"):
            return None
        host = host[1:-1]
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return None
    address = ipaddress.IPv6Address(int(address))  # without the zone
    mapped = address.ipv4_mapped
    if mapped is not None:
        return mapped
    if address in _IPV4_COMPATIBLE and int(address) > 1:  # :: and ::1 are themselves
        return ipaddress.IPv4Address(int(address))
    return address


def _ascii_host(host: str) -> str | None:
    """A non-ASCII host as the ASCII name a resolver would get, or None if the IDNA rules the
    clients follow could spell it differently (mapped characters, look-alike dots)."""
    if any(dot in host for dot in _IDNA_DOTS):
        return None
    try:
        encoded = host.encode("idna")
        if encoded.decode("idna") != host:  # nameprep changed it: not one reading only
            return None
    except UnicodeError:
        return None
    return encoded.decode("ascii")


def destination(host: str) -> Destination | None:
    """What a client connects to for ``host``, as the operating system reads it.

    An address (IPv4 in any form inet_aton takes, IPv6 with or without brackets), or a
    lower-case ASCII name, or None when the host is no valid name or address, or could be read
    more than one way.
    """
    if not isinstance(host, str) or not host:
        return None
    if not host.isascii():
        ascii_host = _ascii_host(host)
        if ascii_host is None:
            return None
        host = ascii_host
    if ":" in host or host.startswith("["):
        return _ipv6(host)
    host = host.lower()
    if not _NAME.fullmatch(host):
        return None
    name = host.removesuffix(".")
    if _NUMERIC_LABEL.fullmatch(name.rpartition(".")[2]):
        # An absolute name is never read as an address, and one that is not a valid address
        # goes to DNS as a name no mesh has: both are nothing we can vouch for.
        return _ipv4_from_parts(name) if name == host else None
    return host


def _is_mesh_destination(place: Destination) -> bool:
    if isinstance(place, str):
        if place.endswith("."):
            return place.endswith(_ABSOLUTE_MESH_SUFFIXES)
        return place == "localhost" or "." not in place or place.endswith(_MESH_SUFFIXES)
    return any(place in network for network in _PRIVATE_NETWORKS)


def is_mesh_host(host: str) -> bool:
    """The default scope: the names and addresses a service reaches inside a cluster.

    Single-label names (``payment-service``), ``*.svc``, ``*.svc.cluster.local``, ``*.local``,
    ``localhost``, loopback and private addresses. Link-local addresses are left out on purpose:
    ``169.254.169.254`` is the cloud metadata service, not a mesh peer.
    """
    place = destination(host)
    return place is not None and _is_mesh_destination(place)


def url_host(url: str) -> str | None:
    """The host of an absolute URL, or None unless httpx, urllib3 and yarl all read the same one.

    Only plain authorities are read: ``[userinfo@]host[:port]`` in the characters RFC 3986
    allows, a host that is an IPv6 literal or letters, digits, ``.``, ``-`` and ``_``. A
    backslash, a second ``@``, a percent-encoded or non-ASCII host, or an ``@`` the clients
    could take for the end of the userinfo makes the URL unreadable.
    """
    match = _URL.match(url) if isinstance(url, str) else None
    if match is None:
        return None
    authority, delimiter = match.groups()
    if delimiter == "\\" or (
        delimiter in ("?", "#") and "@" in url[match.end() :].partition("/")[0]
    ):
        return None
    userinfo, at, host_port = authority.rpartition("@")
    if at and ("@" in userinfo or not _USERINFO.fullmatch(userinfo)):
        return None
    host_match = _HOST_PORT.fullmatch(host_port)
    if host_match is None:
        return None
    host, port = host_match.groups()
    if port and int(port) > 0xFFFF:
        return None
    return host


class Scope:
    """A compiled propagation scope: host patterns, CIDR blocks and the ``mesh`` / ``all`` tokens.

    A pattern is an exact host (``api.example.com``), a wildcard suffix (``*.corp.internal``,
    which matches any name below it), an address block (``10.20.0.0/16``), ``mesh`` for the
    default rules, or ``all``. Decisions are cached per host, so the hot path is one dict lookup.
    """

    __slots__ = (
        "_addresses",
        "_cache",
        "_exact",
        "_includes_all",
        "_includes_mesh",
        "_networks",
        "_suffixes",
    )

    def __init__(self, patterns: Collection[str]) -> None:
        exact: set[str] = set()
        addresses: set[IPAddress] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        self._includes_all = False
        self._includes_mesh = False
        for raw in patterns:
            pattern = raw.strip().lower()
            if pattern == ALL or pattern == "*":
                self._includes_all = True
            elif pattern == MESH:
                self._includes_mesh = True
            elif "/" in pattern:
                try:
                    networks.append(ipaddress.ip_network(pattern, strict=False))
                except ValueError:
                    raise ValueError(
                        f"scope pattern {raw!r} is not a valid address block"
                    ) from None
            else:
                place = destination(pattern.removeprefix("*.")) if pattern else None
                if place is None or (pattern.startswith("*.") and not isinstance(place, str)):
                    raise ValueError(
                        f"scope pattern {raw!r} must be a host, '*.suffix', an address block, "
                        f"{MESH!r} or {ALL!r}"
                    )
                if isinstance(place, str):
                    name = place.removesuffix(".")
                    if pattern.startswith("*."):
                        suffixes.append("." + name)
                    else:
                        exact.add(name)
                else:
                    addresses.add(place)
        self._exact = frozenset(exact)
        self._addresses = frozenset(addresses)
        self._suffixes = tuple(suffixes)
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def includes_host(self, host: str) -> bool:
        """Whether a destination host (name or address, any case, any form the operating
        system reads as an address) is inside the scope. Never raises: an unreadable host is
        outside."""
        decision = self._cache.get(host)
        if decision is None:
            decision = self._decide(host)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = decision
        return decision

    def includes_url(self, url: str) -> bool:
        """Whether the host of an absolute URL is inside the scope. Never raises: a URL the
        clients could read different hosts from is outside, whatever the patterns."""
        host = url_host(url)
        return host is not None and self.includes_host(host)

    def _decide(self, host: str) -> bool:
        if self._includes_all:
            return True
        place = destination(host)
        if place is None:
            return False
        if self._includes_mesh and _is_mesh_destination(place):
            return True
        if isinstance(place, str):
            name = place.removesuffix(".")
            return name in self._exact or name.endswith(self._suffixes)
        return place in self._addresses or any(
            place.version == network.version and place in network for network in self._networks
        )
