"""The record each hop returns: what it received, and what meshprop made of it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import meshprop
from meshprop._headers import DEFAULT_HEADERS

#: The headers a hop reports as received: the ones Istio asks applications to forward.
PROPAGATION_HEADERS = frozenset(DEFAULT_HEADERS)

#: Where each hop serves its part of the chain, and where the launcher checks it is up.
CHAIN_PATH = "/chain"
HEALTH_PATH = "/health"

HopRecord = dict[str, Any]


def received_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The propagation headers exactly as they arrived (first occurrence, lower-case names)."""
    received: dict[str, str] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered in PROPAGATION_HEADERS and lowered not in received:
            received[lowered] = value
    return received


def hop_record(
    service: str, framework: str, server: str, pairs: Iterable[tuple[str, str]]
) -> HopRecord:
    """This hop's view of the request, taken inside the request's context."""
    return {
        "service": service,
        "framework": framework,
        "server": server,
        "received": received_headers(pairs),
        "request_id": meshprop.request_id(),
        "trace_id": meshprop.trace_id(),
        "forwarded": dict(meshprop.current()),
    }


def finish_record(record: HopRecord, downstream: list[HopRecord]) -> list[HopRecord]:
    """Close the record after the downstream call, and prepend it to the downstream chain.

    The request id is read again after the call: a context that leaked or got swapped while
    the hop waited on the network shows up as a different id here.
    """
    record["request_id_after_call"] = meshprop.request_id()
    return [record, *downstream]
