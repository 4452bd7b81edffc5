"""What a wrapped client adds to an outbound call."""

from __future__ import annotations

import meshprop
from meshprop._config import Config
from meshprop._outbound import headers_for_host, outbound_headers
from meshprop._plan import plan_for

INBOUND = {"x-request-id": "r1", "b3": "1", "authorization": "Bearer secret"}


def test_outside_a_request_nothing_is_added() -> None:
    assert meshprop.outbound_headers() == {}
    assert meshprop.outbound_headers("http://payment-service/") == {}
    assert headers_for_host("payment-service", plan_for()) is None


def test_without_a_url_the_scope_is_not_checked() -> None:
    with meshprop.bind(INBOUND):
        assert meshprop.outbound_headers() == {"x-request-id": "r1", "b3": "1"}


def test_with_a_url_in_scope() -> None:
    with meshprop.bind(INBOUND):
        assert meshprop.outbound_headers("http://payment-service:8080/charge") == {
            "x-request-id": "r1",
            "b3": "1",
        }
        assert headers_for_host("payment-service", plan_for()) == {
            "x-request-id": "r1",
            "b3": "1",
        }


def test_with_a_url_out_of_scope() -> None:
    with meshprop.bind(INBOUND):
        assert meshprop.outbound_headers("https://api.stripe.com/v1/charges") == {}
        assert meshprop.outbound_headers("http://169.254.169.254/latest") == {}
        assert headers_for_host("api.stripe.com", plan_for()) is None


def test_the_config_decides_the_scope() -> None:
    wide = Config(scope="all")
    with meshprop.bind(INBOUND):
        assert outbound_headers("https://api.stripe.com/", config=wide)["x-request-id"] == "r1"
        assert headers_for_host("api.stripe.com", plan_for(wide)) is not None
        narrow = Config(scope=["*.shop.svc.cluster.local"])
        assert outbound_headers("http://payment-service/", config=narrow) == {}


def test_outbound_headers_returns_a_new_dict() -> None:
    with meshprop.bind(INBOUND):
        added = meshprop.outbound_headers()
        added["x-request-id"] = "changed"
        assert meshprop.outbound_headers()["x-request-id"] == "r1"
        assert meshprop.current()["x-request-id"] == "r1"


def test_an_empty_snapshot_adds_nothing_to_clients() -> None:
    no_ids = Config(request_id_generator=None)
    with meshprop.bind({}, config=no_ids):
        assert headers_for_host("payment-service", plan_for(no_ids)) is None
        assert meshprop.outbound_headers() == {}
