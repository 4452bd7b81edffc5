"""nginx in front of the chain, as the sidecar: its request ids and the caller's headers reach
every hop unchanged."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from ._mesh import Chain, call_chain
from ._report import ISTIO_HEADERS
from ._sidecar import running_sidecar
from .services._record import CHAIN_PATH


@pytest.fixture(scope="module")
def sidecar_url(chain: Chain) -> Iterator[str]:
    with running_sidecar(chain.hops[0].url) as base_url:
        yield base_url + CHAIN_PATH


def test_sidecar_generated_request_id_travels_unchanged(
    sidecar_url: str, client: httpx.Client
) -> None:
    response, hops = call_chain(client, sidecar_url, {})

    sidecar_id = hops[0]["received"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", sidecar_id)  # nginx's format, not a UUID: kept as is
    for hop in hops:
        assert hop["received"] == {"x-request-id": sidecar_id}, hop["service"]
        assert hop["request_id"] == sidecar_id
    assert response.headers["x-request-id"] == sidecar_id


def test_sidecar_passes_istio_headers_to_every_hop(sidecar_url: str, client: httpx.Client) -> None:
    response, hops = call_chain(client, sidecar_url, ISTIO_HEADERS)

    for hop in hops:
        assert hop["received"] == ISTIO_HEADERS, hop["service"]
    assert response.headers["x-request-id"] == ISTIO_HEADERS["x-request-id"]


def test_bad_traceparent_passes_the_sidecar_and_stops_at_the_first_hop(
    sidecar_url: str, client: httpx.Client
) -> None:
    bad = {"x-request-id": "req-via-sidecar", "traceparent": "00-not-a-trace-01"}
    _, hops = call_chain(client, sidecar_url, bad)

    assert hops[0]["received"] == bad
    for hop in hops[1:]:
        assert hop["received"] == {"x-request-id": "req-via-sidecar"}, hop["service"]
