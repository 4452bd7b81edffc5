"""Which destinations get the propagation headers."""

from __future__ import annotations

import pytest

from meshprop._config import Config
from meshprop._scope import Scope, is_mesh_host

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
