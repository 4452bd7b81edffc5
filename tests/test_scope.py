"""Which destinations get the propagation headers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshprop._config import Config
from meshprop._scope import Scope, destination, is_mesh_host, url_host

IN_MESH = [
    "payment-service",
    "PAYMENT-SERVICE",
    "payment.shop.svc",
    "payment.shop.svc.cluster.local",
    "payment.shop.svc.cluster.local.",
    "printer.local",
    "localhost",
    "127.0.0.1",
    "127.8.9.10",
    "10.0.3.17",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.20",
    "::1",
    "[::1]",
    "fc00::1",
    "fd12:3456:789a::1",
]
OUTSIDE = [
    "example.com",
    "api.example.com",
    "svc.example.com",
    "8.8.8.8",
    "169.254.169.254",
    "172.32.0.1",
    "172.15.255.255",
    "2001:4860:4860::8888",
    "fe80::1",
    "",
]


@pytest.mark.parametrize("host", IN_MESH)
def test_mesh_hosts_are_in_the_default_scope(host: str) -> None:
    assert Scope(["mesh"]).includes_host(host)
    assert Config().in_scope(host)


@pytest.mark.parametrize("host", OUTSIDE)
def test_other_hosts_are_outside_the_default_scope(host: str) -> None:
    assert not Scope(["mesh"]).includes_host(host)
    assert not Config().in_scope(host)


def test_is_mesh_host_on_normalised_hosts() -> None:
    assert is_mesh_host("payment")
    assert not is_mesh_host("")
    assert not is_mesh_host("example.com")


@pytest.mark.parametrize(
    ("patterns", "inside", "outside"),
    [
        (
            ["api.example.com"],
            ["api.example.com", "API.Example.com"],
            ["example.com", "x.api.example.com", "payment"],
        ),
        (
            ["*.corp.internal"],
            ["a.corp.internal", "a.b.corp.internal"],
            ["corp.internal", "acorp.internal"],
        ),
        (["203.0.113.0/24"], ["203.0.113.9"], ["203.0.114.1", "payment", "10.0.0.1"]),
        (["2001:db8::/32"], ["2001:db8::1", "[2001:db8::1]"], ["2001:db9::1", "203.0.113.9"]),
        (["all"], ["example.com", "8.8.8.8", "payment"], []),
        (["*"], ["example.com"], []),
        (["mesh", "api.example.com"], ["payment", "10.1.2.3", "api.example.com"], ["example.com"]),
    ],
)
def test_patterns(patterns: list[str], inside: list[str], outside: list[str]) -> None:
    config = Config(scope=patterns)
    for host in inside:
        assert config.in_scope(host), host
    for host in outside:
        assert not config.in_scope(host), host


@pytest.mark.parametrize("scope", ["all", "mesh"])
def test_scope_may_be_a_single_token(scope: str) -> None:
    assert Config(scope=scope).in_scope("example.com") is (scope == "all")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://payment-service:8080/charge", True),
        ("https://user:secret@payment.shop.svc.cluster.local:8443/x?q=1", True),
        ("http://[::1]:9000/", True),
        ("http://[fd00::5]/", True),
        ("http://10.0.0.7:80", True),
        ("https://api.example.com:443/", False),
        ("https://user:pw@example.com@8.8.8.8/", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://[2001:4860:4860::8888]:80/", False),
        ("http:///path-only", False),
        ("not a url/at all", False),
    ],
)
def test_urls(url: str, expected: bool) -> None:
    assert Config().in_scope(url) is expected


def test_decisions_are_cached_per_host_and_bounded() -> None:
    scope = Scope(["mesh"])
    for i in range(5000):
        scope.includes_host(f"host{i}.example.com")
    assert len(scope._cache) <= 4096
    assert scope.includes_host("payment") and not scope.includes_host("example.com")


# Every spelling the operating system (inet_aton) reads as an IPv4 address is that address.
NUMERIC_HOSTS = [
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"),
    ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
    ("10.1.2", "10.1.0.2"),
    ("10.0.0.010", "10.0.0.8"),
    ("167772161", "10.0.0.1"),
    ("2852039166", "169.254.169.254"),
    ("0xa9fea9fe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("134744072", "8.8.8.8"),
    ("010.0.0.1", "8.0.0.1"),
    ("0", "0.0.0.0"),
    ("4294967295", "255.255.255.255"),
]


@pytest.mark.parametrize(("host", "address"), NUMERIC_HOSTS)
def test_numeric_hosts_are_the_address_the_os_reads(host: str, address: str) -> None:
    assert destination(host) == ipaddress.ip_address(address)
    assert Scope(["mesh"]).includes_host(host) is is_mesh_host(address)


@pytest.mark.parametrize(
    "host", ["2852039166", "0xa9fea9fe", "134744072", "0", "010.0.0.1", "0.0.0.0", "0.1"]
)
def test_a_number_is_no_service_name(host: str) -> None:
    assert not Scope(["mesh"]).includes_host(host)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "167772161", "10.1.2"])
def test_numeric_forms_of_mesh_addresses_stay_inside(host: str) -> None:
    assert Scope(["mesh"]).includes_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "08",  # not octal
        "0x",  # no digits
        "0x.1",
        "1.2.3.4.5",  # five parts
        "4294967296",  # 2**32
        "256.1",
        "1.16777216",
        "payment.1",  # a name whose last label is a number: an address or nothing
        "127.0.0.1.",  # with a trailing dot the OS asks DNS, not inet_aton
        "2130706433.",
    ],
)
def test_hosts_that_look_numeric_but_are_no_address_are_outside(host: str) -> None:
    assert destination(host) is None
    assert not Scope(["mesh"]).includes_host(host)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("::ffff:10.0.0.1", "10.0.0.1"),
        ("[::ffff:10.0.0.1]", "10.0.0.1"),
        ("::ffff:a00:1", "10.0.0.1"),
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("0:0:0:0:0:ffff:c0a8:114", "192.168.1.20"),
        ("::ffff:a9fe:a9fe", "169.254.169.254"),
        ("::ffff:169.254.169.254", "169.254.169.254"),
        ("::ffff:8.8.8.8", "8.8.8.8"),
        ("::10.0.0.1", "10.0.0.1"),  # IPv4-compatible, deprecated
        ("::169.254.169.254", "169.254.169.254"),
    ],
)
def test_ipv6_forms_of_ipv4_addresses_are_judged_as_ipv4(host: str, address: str) -> None:
    assert destination(host) == ipaddress.ip_address(address)
    assert Scope(["mesh"]).includes_host(host) is is_mesh_host(address)


@pytest.mark.parametrize(
    "host",
    [
        "::",
        "[::]",
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1: the gateway sends it out, it is no mesh peer
        "64:ff9b::808:808",
        "2002:a00:1::",  # 6to4 of 10.0.0.1
        "fe80::1%eth0",
        "[::1",
        "::1]",
        "[10.0.0.1]",
        "[payment]",
    ],
)
def test_other_ipv6_forms_are_outside(host: str) -> None:
    assert not Scope(["mesh"]).includes_host(host)


@pytest.mark.parametrize("host", ["::1%lo", "::1%25lo", "[::1%lo]"])
def test_a_zone_does_not_change_the_address(host: str) -> None:
    assert Scope(["mesh"]).includes_host(host)


@pytest.mark.parametrize(
    ("host", "inside"),
    [
        ("payment.shop.svc.cluster.local.", True),
        ("printer.local.", True),
        # Absolute names skip the cluster's search domains: these would be top-level names.
        ("payment-service.", False),
        ("payment.shop.svc.", False),
        ("localhost.", False),
        ("payment.svc..", False),
        (".payment", False),
        ("payment..svc", False),
    ],
)
def test_trailing_dots(host: str, inside: bool) -> None:
    assert Scope(["mesh"]).includes_host(host) is inside


@pytest.mark.parametrize(
    ("host", "inside"),
    [
        ("xn--bcher-kva.svc", True),
        ("bücher.svc", True),  # httpx and yarl give the decoded form of the name above
        ("Bücher.svc", False),  # IDNA would map it: the clients may not agree how
        ("payment\u3002evil\u3002com", False),  # ideographic full stops are dots to IDNA
        ("payment\uff0eevil.com", False),
        ("payment\u2024evil.com", False),
        ("\uff50\uff41\uff59\uff4d\uff45\uff4e\uff54", False),  # full-width "payment"
        ("\u212aube", False),  # Kelvin sign, lower-cases to "k"
        ("pay ment", False),
        ("payment\t", False),
        ("payment\x00.evil.com", False),
        ("pay%6dent", False),
        ("%31%32%37.0.0.1", False),
        ("evil.com\\@payment", False),
        ("user@payment", False),
        ("payment:8080", False),
        ("a*b", False),
    ],
)
def test_unusual_characters(host: str, inside: bool) -> None:
    assert Scope(["mesh"]).includes_host(host) is inside


@pytest.mark.parametrize(
    ("patterns", "inside", "outside"),
    [
        (["10.0.0.0/8"], ["0xa000001", "167772161", "::ffff:10.0.0.1"], ["010.0.0.1"]),
        (["127.0.0.1"], ["2130706433", "127.1", "[::ffff:127.0.0.1]"], ["127.0.0.2"]),
        (["0x7f000001"], ["127.0.0.1"], []),
        (["[::1]"], ["::1", "0:0::1"], ["::2"]),
        (["api.example.com."], ["api.example.com", "api.example.com."], []),
        (["*.bücher.example"], ["a.xn--bcher-kva.example"], ["a.bucher.example"]),
    ],
)
def test_patterns_are_read_like_hosts(
    patterns: list[str], inside: list[str], outside: list[str]
) -> None:
    scope = Scope(patterns)
    for host in inside:
        assert scope.includes_host(host), host
    for host in outside:
        assert not scope.includes_host(host), host


@pytest.mark.parametrize("pattern", ["pay ment", "*.10.0.0.1", "1.2.3.4.5", "a%2eb", "[::1"])
def test_patterns_that_are_no_host_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError, match="must be a host"):
        Scope([pattern])


@pytest.mark.parametrize(
    "url",
    [
        "http://evil.com\\@payment-service/",  # urllib3 connects to evil.com, httpx to payment
        "http://payment-service\\@evil.com/",  # and the other way round
        "http://a@b@payment-service/",
        "http://payment-service?@evil.com/",
        "http://payment-service#@evil.com/",
        "http://[::1",
        "http://a]/",
        "http://[::1]x/",
        "http://[::1%25lo]/",
        "http://payment-service:99999/",
        "http://payment-service:+80/",
        "http://payment-service:8o/",
        "http://payment-service:80:80/",
        "http://%70ayment-service/",
        "http://bücher.svc/",
        " http://payment-service/",
        "http://payment-service\t/",
        "//payment-service/",
        "http:/payment-service/",
    ],
)
def test_urls_the_clients_could_read_differently_are_outside_any_scope(url: str) -> None:
    assert url_host(url) is None
    assert not Scope(["mesh"]).includes_url(url)
    assert not Scope(["all"]).includes_url(url)


@pytest.mark.parametrize(
    "url", ["http://2852039166/", "http://0xa9fea9fe/latest", "http://[::ffff:a9fe:a9fe]/"]
)
def test_urls_to_numeric_forms_of_outside_addresses_are_outside(url: str) -> None:
    assert not Scope(["mesh"]).includes_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:8080/",
        "http://0x7f.1/",
        "http://[::ffff:10.0.0.1]:80/x",
        "http://user:p%40ss;x@payment-service:/",
        "HTTP://PAYMENT-SERVICE/a\\b@c",
        "http://payment-service/?next=a@b.example",
        "wss://payment.shop.svc.cluster.local./socket",
    ],
)
def test_plain_urls_to_mesh_hosts_are_inside(url: str) -> None:
    assert Scope(["mesh"]).includes_url(url)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_no_text_makes_the_scope_raise(text: str) -> None:
    for scope in (Scope(["mesh"]), Scope(["mesh", "api.example.com", "*.corp", "10.0.0.0/8"])):
        assert isinstance(scope.includes_host(text), bool)
        assert isinstance(scope.includes_url(text), bool)
        assert isinstance(scope.includes_url("http://" + text), bool)
        assert isinstance(scope.includes_url("http://[" + text), bool)
        assert isinstance(Config().in_scope(text), bool)
