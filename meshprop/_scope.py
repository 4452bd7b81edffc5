"""Which destinations get the propagation headers.

Trace ids, request ids and baggage describe the inside of the mesh; sending them to a third
party leaks them. So a wrapped client forwards only to hosts inside the propagation scope, and
this module is the one place that decides it, for every client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

#: The scope token that stands for the default mesh rules.
MESH = "mesh"
#: The scope token that stands for every destination.
ALL = "all"

_MESH_SUFFIXES = (".svc", ".svc.cluster.local", ".local")
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

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_mesh_host(host: str) -> bool:
    """The default scope: the names and addresses a service reaches inside a cluster.

    Single-label names (``payment-service``), ``*.svc``, ``*.svc.cluster.local``, ``*.local``,
    ``localhost``, loopback and private addresses. Link-local addresses are left out on purpose:
    ``169.254.169.254`` is the cloud metadata service, not a mesh peer.
    """
    address = _parse_ip(host)
    if address is not None:
        return any(address in network for network in _PRIVATE_NETWORKS)
    if host == "localhost" or "." not in host:
        return bool(host)
    return host.endswith(_MESH_SUFFIXES)


class Scope:
    """A compiled propagation scope: host patterns, CIDR blocks and the ``mesh`` / ``all`` tokens.

    A pattern is an exact host (``api.example.com``), a wildcard suffix (``*.corp.internal``,
    which matches any name below it), an address block (``10.20.0.0/16``), ``mesh`` for the
    default rules, or ``all``. Decisions are cached per host, so the hot path is one dict lookup.
    """

    __slots__ = ("_cache", "_exact", "_includes_all", "_includes_mesh", "_networks", "_suffixes")

    def __init__(self, patterns: Collection[str]) -> None:
        exact: set[str] = set()
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
            elif pattern.startswith("*."):
                suffixes.append(pattern[1:])
            elif pattern and "*" not in pattern:
                exact.add(pattern.strip("[]"))
            else:
                raise ValueError(
                    f"scope pattern {raw!r} must be a host, '*.suffix', an address block, "
                    f"{MESH!r} or {ALL!r}"
                )
        self._exact = frozenset(exact)
        self._suffixes = tuple(suffixes)
        self._networks = tuple(networks)
        self._cache: dict[str, bool] = {}

    def includes_host(self, host: str) -> bool:
        """Whether a destination host (name or address, any case) is inside the scope."""
        decision = self._cache.get(host)
        if decision is None:
            decision = self._decide(host.lower().rstrip(".").strip("[]"))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = decision
        return decision

    def includes_url(self, url: str) -> bool:
        """Whether the host of an absolute URL is inside the scope."""
        return self.includes_host(urlsplit(url).hostname or "")

    def _decide(self, host: str) -> bool:
        if self._includes_all:
            return True
        if not host:
            return False
        if self._includes_mesh and is_mesh_host(host):
            return True
        if host in self._exact or host.endswith(self._suffixes):
            return True
        if self._networks:
            address = _parse_ip(host)
            if address is not None:
                return any(
                    address.version == network.version and address in network
                    for network in self._networks
                )
        return False
