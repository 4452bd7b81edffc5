"""The launcher and the verdict the demo prints: both must be able to fail."""

from __future__ import annotations

import copy

import httpx
import pytest

from ._mesh import running_chain
from ._report import ISTIO_HEADERS, hop_agreement, render_table
from .services._record import HopRecord


def test_chain_processes_stop_when_the_block_is_interrupted() -> None:
    with pytest.raises(KeyboardInterrupt), running_chain(["aiohttp"]) as chain:
        health = chain.hops[0].url + "/health"
        assert httpx.get(health, trust_env=False).status_code == 200
        raise KeyboardInterrupt

    with pytest.raises(httpx.ConnectError):
        httpx.get(health, trust_env=False, timeout=2.0)


def test_a_service_that_cannot_start_fails_the_launch_with_its_log() -> None:
    with pytest.raises(RuntimeError, match="exited with status 2"), running_chain(["no-such"]):
        pass  # pragma: no cover


def _agreeing_chain() -> list[HopRecord]:
    def hop(service: str, received: dict[str, str]) -> HopRecord:
        return {
            "service": service,
            "framework": "Test",
            "server": "test",
            "received": received,
            "request_id": ISTIO_HEADERS["x-request-id"],
            "request_id_after_call": ISTIO_HEADERS["x-request-id"],
            "trace_id": ISTIO_HEADERS["x-b3-traceid"],
            "forwarded": dict(ISTIO_HEADERS),
        }

    return [hop("first", dict(ISTIO_HEADERS)), hop("second", dict(ISTIO_HEADERS))]


def test_agreement_holds_for_identical_hops() -> None:
    assert hop_agreement(ISTIO_HEADERS, _agreeing_chain()) == [True, True]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("received", {**ISTIO_HEADERS, "tracestate": "rojo=changed"}),
        ("request_id_after_call", "someone-else"),
        ("forwarded", {"x-request-id": ISTIO_HEADERS["x-request-id"]}),
    ],
)
def test_agreement_catches_a_hop_that_differs(field: str, value: object) -> None:
    hops = copy.deepcopy(_agreeing_chain())
    hops[1][field] = value

    assert hop_agreement(ISTIO_HEADERS, hops) == [True, False]
    assert render_table(ISTIO_HEADERS, hops).splitlines()[-1].endswith("NO")
