"""What every chain test asserts of the hop records a request brought back.

The chains differ (HTTP only, through gRPC, through a Celery queue); what must hold across their
hops does not, so it is written once here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

import httpx

from ._report import b3_trace_id, hop_agreement, traceparent_trace_id
from .services._record import HopRecord


def assert_one_request_id_and_one_trace(
    sent: Mapping[str, str], response: httpx.Response, hops: Sequence[HopRecord]
) -> None:
    """Every hop received ``sent`` byte for byte, saw its request id before and after its own
    downstream call and its trace id, and the response echoes the request id."""
    request_id = sent["x-request-id"]
    trace_id = b3_trace_id(sent) or traceparent_trace_id(sent)
    for hop in hops:
        assert hop["received"] == sent, (request_id, hop["service"])
        assert hop["request_id"] == hop["request_id_after_call"] == request_id, hop["service"]
        assert hop["trace_id"] == trace_id, (request_id, hop["service"])
    assert hop_agreement(sent, hops) == [True] * len(hops)
    assert response.headers["x-request-id"] == request_id


def assert_generated_request_id_travels(
    response: httpx.Response, hops: Sequence[HopRecord]
) -> None:
    """A request that came with no header: the first hop generated a UUID4 request id, every
    later hop received it as the only header and kept it, and the response echoes it."""
    generated = hops[0]["request_id"]
    assert hops[0]["received"] == {}
    assert uuid.UUID(generated).version == 4
    for hop in hops:
        assert hop["request_id"] == generated, hop["service"]
    for hop in hops[1:]:
        assert hop["received"] == {"x-request-id": generated}, hop["service"]
    assert response.headers["x-request-id"] == generated
