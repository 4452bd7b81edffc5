"""Every spelling of a host, judged as the client that sends will read it.

A URL reaches meshprop twice: ``outbound_headers(url)`` reads it with meshprop's own parser, and
each wrapped client hands over the host its own parser found (requests through urllib3, httpx,
aiohttp through yarl). The table below goes through both. Its conclusions, for the parsers
installed here:

- No client turns a numeric host into an address: ``2852039166``, ``0x7f.1`` and ``127.1`` go
  to the operating system as they are, and its inet_aton reads them as 169.254.169.254,
  127.0.0.1, 127.0.0.1. httpx refuses dotted quads with leading zeros (``010.0.0.1``); urllib3
  and yarl pass them on, and the OS reads them as octal (8.0.0.1).
- A backslash splits the clients: for ``http://evil.com\\@payment/`` urllib3 connects to
  evil.com, httpx to payment, yarl refuses; for ``payment\\@evil.com`` httpx goes to evil.com.
- urllib3 percent-decodes the host (``%31%32%37.0.0.1`` is 127.0.0.1), httpx and yarl keep it.
- yarl strips tabs and maps full-width letters and look-alike dots (IDNA UTS 46), httpx maps
  only the ideographic dots, urllib3 refuses them all.
- Ports: httpx takes ``:99999``, ``:+80`` and ``: 80``, yarl the last two; urllib3 none.

So meshprop reads a URL only when its authority is plain enough that they all agree, and judges
a host as the address or name the OS will look up. The oracle here is independent of meshprop:
the OS's own numeric parse (``getaddrinfo`` with ``AI_NUMERICHOST``, which never asks DNS) and
a list of the names that are mesh names. Nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

import meshprop
import meshprop.aiohttp
import meshprop.httpx
import meshprop.requests
from meshprop._scope import Scope, url_host
from tests.recording_server import RecordingServer, recording_server

FORWARDED = {"x-request-id": "r1"}
MESH = Scope(["mesh"])

# Independent of meshprop: the default scope written out once more, for the oracle.
MESH_NETWORKS = [
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
]
MESH_NAMES = {
    "payment-service",
    "payment",
    "payment_svc",
    "localhost",
    "payment.shop.svc",
    "payment.shop.svc.cluster.local",
    "payment.shop.svc.cluster.local.",
    "xn--bcher-kva.svc",
}

#: (url, whether ``outbound_headers(url)`` gives the headers)
HOST_FORMS = [
    # Plain names and addresses.
    ("http://payment-service:8080/charge", True),
    ("http://PAYMENT-SERVICE/", True),
    ("https://user:pw@payment.shop.svc.cluster.local:8443/x?q=1", True),
    ("http://payment.shop.svc.cluster.local./", True),
    ("http://payment_svc/", True),
    ("http://[::1]:9000/", True),
    ("http://10.0.0.7/", True),
    ("https://api.example.com/", False),
    ("http://169.254.169.254/latest/meta-data", False),
    ("http://8.8.8.8/", False),
    # Numbers the OS reads as IPv4 addresses.
    ("http://2130706433/", True),  # 127.0.0.1
    ("http://0x7f000001:8080/", True),
    ("http://0X7F000001/", True),
    ("http://127.1/", True),
    ("http://0x7f.1/", True),
    ("http://0177.0.0.1/", True),  # octal; httpx refuses it
    ("http://10.1.2/", True),  # 10.1.0.2
    ("http://167772161/", True),  # 10.0.0.1
    ("http://10.0.0.010/", True),  # 10.0.0.8
    ("http://2852039166/", False),  # 169.254.169.254
    ("http://0xa9fea9fe/", False),
    ("http://0251.0376.0251.0376/", False),
    ("http://169.254.43518/", False),
    ("http://134744072/", False),  # 8.8.8.8
    ("http://010.0.0.1/", False),  # 8.0.0.1, not 10.0.0.1
    ("http://0/", False),  # 0.0.0.0
    ("http://0.0.0.0/", False),
    # Numeric-looking hosts that are no address: the OS asks DNS for a name no mesh has.
    ("http://08/", False),
    ("http://0x/", False),
    ("http://1.2.3.4.5/", False),
    ("http://4294967296/", False),
    ("http://payment.1/", False),
    ("http://127.0.0.1./", False),
    # IPv6 spellings of IPv4 addresses.
    ("http://[::ffff:10.0.0.1]/", True),
    ("http://[::ffff:7f00:1]:80/", True),
    ("http://[::10.0.0.1]/", True),
    ("http://[::ffff:a9fe:a9fe]/", False),
    ("http://[::ffff:169.254.169.254]/", False),
    ("http://[::ffff:8.8.8.8]/", False),
    ("http://[::169.254.169.254]/", False),
    ("http://[64:ff9b::a00:1]/", False),  # NAT64
    ("http://[2002:a00:1::]/", False),  # 6to4
    ("http://[::]/", False),
    ("http://[fe80::1]/", False),
    ("http://[fe80::1%25eth0]/", False),
    ("http://[::1%25lo]/", False),  # the clients spell the zone three ways
    # Backslashes and userinfo tricks.
    ("http://evil.com\\@payment-service/", False),
    ("http://payment-service\\@evil.com/", False),
    ("http://evil.com\\payment-service/", False),
    ("http://evil.com/\\@payment-service/", False),
    ("http://payment-service?@evil.com/", False),
    ("http://payment-service#@evil.com/", False),
    ("http://evil.com#@payment-service/", False),
    ("http://evil.com?@payment-service/", False),
    ("http://a@b@payment-service/", False),
    ("http://user@evil.com:80@payment-service/", False),
    ("https://user:pw@example.com@8.8.8.8/", False),
    # Malformed authorities and ports.
    ("http://[::1", False),
    ("http://a]/", False),
    ("http://[::1]x/", False),
    ("http://[v1.x]/", False),
    ("http://[10.0.0.1]/", False),
    ("http://payment-service:99999/", False),
    ("http://payment-service:+80/", False),
    ("http://payment-service: 80/", False),
    ("http://payment-service:8o/", False),
    ("http://payment-service:80:80/", False),
    ("http://payment-service:/", True),  # an empty port is the default one for every client
    # Percent-encoding, whitespace, control characters.
    ("http://%31%32%37.0.0.1/", False),
    ("http://pay%6dent-service/", False),
    ("http://payment-service%2eevil.com/", False),
    ("http://pay ment/", False),
    ("http://payment-service\t.evil.com/", False),
    ("http://payment-service\n/", False),
    ("http://payment-service\x00.evil.com/", False),
    (" http://payment-service/", False),
    # Trailing dots: an absolute name skips the cluster's search domains.
    ("http://payment-service./", False),
    ("http://localhost./", False),
    ("http://payment.shop.svc./", False),
    ("http://payment.svc../", False),
    ("http://.payment/", False),
    # IDNA: the clients map differently, so only the ASCII form is read.
    ("http://xn--bcher-kva.svc/", True),
    ("http://bücher.svc/", False),
    ("http://payment-service\u3002evil\u3002com/", False),
    ("http://payment-service\uff0eevil.com/", False),
    ("http://payment-service\u2024evil.com/", False),
    ("http://\uff50\uff41\uff59\uff4d\uff45\uff4e\uff54/", False),  # full-width "payment"
    # No authority at all.
    ("http:///path-only", False),
    ("http:/payment-service/", False),
    ("//payment-service/", False),
    ("payment-service/x", False),
    ("not a url/at all", False),
]


def reaches_the_mesh(connects_to: str) -> bool:
    """Whether the host a client connects to is a mesh peer, as the OS reads it."""
    host = connects_to.removeprefix("[").removesuffix("]").partition("%")[0]
    try:
        numeric = socket.getaddrinfo(host, None, flags=socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, ValueError):
        return connects_to.lower() in MESH_NAMES
    address = ipaddress.ip_address(str(numeric[0][4][0]).partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible
            address = ipaddress.IPv4Address(int(address))
    return any(address in network for network in MESH_NETWORKS)


# Each client: the host meshprop is handed, and the host the client connects to.
Reading = tuple[str, str]


def read_by_requests(url: str) -> Reading:
    prepared = str(requests.Request("GET", url).prepare().url)
    return meshprop.requests._host(prepared), parse_url(prepared).host or ""


def read_by_urllib3(url: str) -> Reading:
    host = parse_url(url).host or ""
    return host, host


def read_by_httpx(url: str) -> Reading:
    parsed = httpx.URL(url)
    return parsed.host, parsed.raw_host.decode("ascii")


def read_by_yarl(url: str) -> Reading:
    parsed = yarl.URL(url)
    return parsed.host or "", parsed.raw_host or ""


CLIENTS: dict[str, Callable[[str], Reading]] = {
    "requests": read_by_requests,
    "urllib3": read_by_urllib3,
    "httpx": read_by_httpx,
    "aiohttp (yarl)": read_by_yarl,
}


def readings(url: str) -> Iterator[tuple[str, Reading]]:
    """Each client's reading of ``url``; a client whose parser refuses it sends nothing."""
    for client, read in CLIENTS.items():
        try:
            seen, connects_to = read(url)
        except Exception:
            continue
        if connects_to:
            yield client, (seen, connects_to)


@pytest.mark.parametrize(("url", "inside"), HOST_FORMS)
def test_each_client_forwards_only_to_where_it_really_connects_in_the_mesh(
    url: str, inside: bool
) -> None:
    for client, (seen, connects_to) in readings(url):
        assert MESH.includes_host(seen) is reaches_the_mesh(connects_to), (client, seen)


@pytest.mark.parametrize(("url", "inside"), HOST_FORMS)
def test_outbound_headers_only_for_urls_every_client_sends_into_the_mesh(
    url: str, inside: bool
) -> None:
    with meshprop.bind(FORWARDED):
        assert meshprop.outbound_headers(url) == (FORWARDED if inside else {})
    if inside:
        for client, (_, connects_to) in readings(url):
            assert reaches_the_mesh(connects_to), client


def same_host(one: str, other: str) -> bool:
    one, other = (host.removeprefix("[").removesuffix("]").lower() for host in (one, other))
    try:
        return ipaddress.ip_address(one) == ipaddress.ip_address(other)
    except ValueError:
        return one == other


# Single characters that matter to URL parsers, and a few whole words.
URL_PIECES = st.sampled_from(
    [*"ab01x.-_:@/\\?#[]% \t\nü\u3002", "7f", "%25", "%2e", "::1", "8080", "payment", "evil.com"]
)


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(["http://", "https://", "HTTP://", "ws://"]), st.lists(URL_PIECES))
def test_a_url_meshprop_reads_is_read_alike_by_every_client(scheme: str, pieces: list[str]) -> None:
    url = scheme + "".join(pieces)
    host = url_host(url)
    if host is None:
        return
    for client, (seen, connects_to) in readings(url):
        assert same_host(connects_to, host), (client, connects_to)
        assert MESH.includes_host(seen) is MESH.includes_host(host), (client, seen)


# End to end: numeric spellings of 127.0.0.1 reach the local recording server, with the
# headers, through each wrapped client. No other address is ever contacted.
LOOPBACK_SPELLINGS = ["2130706433", "0x7f000001", "127.1", "0x7f.1", "[::ffff:127.0.0.1]"]


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


def loopback_url(server: RecordingServer, host: str) -> str:
    return f"http://{host}:{server.server_address[1]}/numeric"


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_requests_forwards_to_a_numeric_loopback_host(server: RecordingServer, host: str) -> None:
    with meshprop.requests.Session() as session, meshprop.bind(FORWARDED):
        session.trust_env = False  # no proxy from the environment: straight to 127.0.0.1
        assert session.get(loopback_url(server, host), timeout=10).status_code == 200
    assert server.headers()["x-request-id"] == "r1"


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_httpx_forwards_to_a_numeric_loopback_host(server: RecordingServer, host: str) -> None:
    with meshprop.httpx.Client(trust_env=False, timeout=10) as client, meshprop.bind(FORWARDED):
        assert client.get(loopback_url(server, host)).status_code == 200
    assert server.headers()["x-request-id"] == "r1"


class NumericOnlyResolver(AbstractResolver):
    """Reads a host the way the OS reads a numeric one and never asks DNS."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return [
            {
                "hostname": host,
                "host": str(address[4][0]),
                "port": port,
                "family": address[0],
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in found
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_aiohttp_forwards_to_a_numeric_loopback_host(
    server: RecordingServer, host: str
) -> None:
    connector = aiohttp.TCPConnector(resolver=NumericOnlyResolver())
    timeout = aiohttp.ClientTimeout(total=10)
    session: Any = meshprop.aiohttp.ClientSession(connector=connector, timeout=timeout)
    async with session:
        with meshprop.bind(FORWARDED):
            try:
                async with session.get(loopback_url(server, host)) as response:
                    assert response.status == 200
            except aiohttp.InvalidUrlClientError:
                # aiohttp 3.14 refuses the all-digit legacy forms (2130706433, 127.1) before
                # connecting; the hex ones still go to the resolver.
                assert host.replace(".", "").isdigit()
                assert server.received == []
                return
    assert server.headers()["x-request-id"] == "r1"
