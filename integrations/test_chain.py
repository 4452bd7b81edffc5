"""Every hop of a real chain (three servers, three processes) receives the same ids."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from ._assertions import assert_generated_request_id_travels, assert_one_request_id_and_one_trace
from ._mesh import Chain, call_chain
from ._report import ISTIO_HEADERS, hop_agreement

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"

#: Header sets that must reach every hop byte for byte.
VERBATIM = {
    "istio-ingress": ISTIO_HEADERS,
    "b3-single-with-parent": {
        "x-request-id": "req-b3-single",
        "b3": f"{TRACE_ID}-b7ad6b7169203331-1-00f067aa0ba902b7",
    },
    "b3-64-bit-debug": {
        "x-b3-traceid": "a3ce929d0e0e4736",
        "x-b3-spanid": "00f067aa0ba902b7",
        "x-b3-flags": "1",
    },
    "w3c-higher-version": {
        "traceparent": f"cc-{TRACE_ID}-b7ad6b7169203331-01-what-the-future-will-be-like",
        "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    },
    "nginx-style-request-id": {"x-request-id": "029c359bcc24b4a9000bed809a30dff5"},
}

#: A bad header at the edge, and the headers the first hop must send on instead.
MALFORMED = {
    "traceparent-bad-hex": (
        {
            "x-request-id": "req-bad-traceparent",
            "traceparent": f"00-{TRACE_ID[:-1]}g-b7ad6b7169203331-01",
            "tracestate": "rojo=00f067aa0ba902b7",
            "x-b3-sampled": "1",
        },
        {"x-request-id": "req-bad-traceparent", "x-b3-sampled": "1"},
    ),
    "b3-trace-id-without-span-id": (
        {"x-request-id": "req-half-b3", "x-b3-traceid": TRACE_ID},
        {"x-request-id": "req-half-b3"},
    ),
    "b3-single-upper-case": (
        {"x-request-id": "req-upper-b3", "b3": f"{TRACE_ID.upper()}-B7AD6B7169203331-1"},
        {"x-request-id": "req-upper-b3"},
    ),
}


def _expected_downstream(sent: dict[str, str], request_id: str) -> dict[str, str]:
    return {**sent, "x-request-id": request_id}


@pytest.mark.parametrize("case", sorted(VERBATIM))
def test_headers_reach_every_hop_verbatim(chain: Chain, client: httpx.Client, case: str) -> None:
    sent = VERBATIM[case]
    response, hops = call_chain(client, chain.entry_url, sent)

    assert [hop["service"] for hop in hops] == [hop.name for hop in chain.hops]
    request_id = hops[0]["request_id"]
    assert hops[0]["received"] == sent
    for hop in hops[1:]:
        assert hop["received"] == _expected_downstream(sent, request_id), hop["service"]
    assert all(hop_agreement(sent, hops))
    assert response.headers["x-request-id"] == request_id


def test_flask_hop_forwards_through_httpx_client_too(chain: Chain, client: httpx.Client) -> None:
    response, hops = call_chain(client, chain.entry_url, ISTIO_HEADERS, {"flask_client": "httpx"})

    assert_one_request_id_and_one_trace(ISTIO_HEADERS, response, hops)


def test_request_id_generated_at_the_edge_travels(chain: Chain, client: httpx.Client) -> None:
    response, hops = call_chain(client, chain.entry_url, {})

    assert_generated_request_id_travels(response, hops)


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_header_is_dropped_at_the_first_hop(
    chain: Chain, client: httpx.Client, case: str
) -> None:
    sent, forwarded = MALFORMED[case]
    _, hops = call_chain(client, chain.entry_url, sent)

    assert hops[0]["received"] == sent  # the bad value did reach the first hop ...
    assert hops[0]["forwarded"] == forwarded  # ... and went no further
    for hop in hops[1:]:
        assert hop["received"] == forwarded, hop["service"]


def test_over_long_request_id_is_replaced_at_the_first_hop(
    chain: Chain, client: httpx.Client
) -> None:
    too_long = "r" * 201
    sent = {"x-request-id": too_long, "b3": f"{TRACE_ID}-b7ad6b7169203331-1"}
    response, hops = call_chain(client, chain.entry_url, sent)

    replacement = hops[0]["request_id"]
    assert replacement != too_long
    assert uuid.UUID(replacement).version == 4
    for hop in hops[1:]:
        assert hop["received"] == {"x-request-id": replacement, "b3": sent["b3"]}, hop["service"]
    assert response.headers["x-request-id"] == replacement


async def test_concurrent_requests_never_cross(chain: Chain) -> None:
    """Fifty requests in flight at once through shared clients and thread pools: each chain
    carries its own ids on every hop, before and after each hop's downstream call."""

    def headers_for(number: int) -> dict[str, str]:
        trace_id = f"{number + 1:032x}"
        return {
            "x-request-id": f"concurrent-{number}",
            "traceparent": f"00-{trace_id}-{number + 1:016x}-01",
            "x-b3-traceid": trace_id,
            "x-b3-spanid": f"{number + 1:016x}",
        }

    async with httpx.AsyncClient(timeout=30.0, trust_env=False) as outside_client:

        async def one(number: int) -> tuple[dict[str, str], httpx.Response]:
            # Half of them take the Flask hop's httpx client, half its requests session.
            params = {"flask_client": "httpx"} if number % 2 else {}
            sent = headers_for(number)
            return sent, await outside_client.get(chain.entry_url, headers=sent, params=params)

        results = await asyncio.gather(*(one(number) for number in range(50)))

    for sent, response in results:
        assert response.status_code == 200
        hops = response.json()
        assert len(hops) == len(chain.hops)
        assert_one_request_id_and_one_trace(sent, response, hops)
