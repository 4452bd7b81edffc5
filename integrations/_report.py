"""Judging and printing what the hops of a chain received.

A chain agrees when the first hop forwards what was sent (plus the request id it generated if
none came), and every later hop receives exactly those headers, sees the same request id, and
still sees it after its own downstream call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .services._record import HopRecord

#: What an Istio ingress gateway sends into the mesh: an Envoy request id (the version nibble
#: rewritten to 9 to carry the sampling decision), B3 multi headers as Istio's Zipkin setup
#: sends them, and the W3C pair for the same trace.
ISTIO_HEADERS: dict[str, str] = {
    "x-request-id": "9f2c4b1e-7d3a-9c5e-b816-2a4f0e6d1c37",
    "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
    "x-b3-spanid": "e457b5a2e4d86bd1",
    "x-b3-parentspanid": "05e3ac9a4f6e3b90",
    "x-b3-sampled": "1",
    "traceparent": "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01",
    "tracestate": "istio=ingressgateway,rojo=00f067aa0ba902b7",
}

_COLUMNS = (
    "hop",
    "service",
    "framework",
    "x-request-id",
    "B3 trace id",
    "traceparent trace id",
    "match",
)


def hop_agreement(sent: Mapping[str, str], hops: Sequence[HopRecord]) -> list[bool]:
    """For each hop, whether it saw the chain's headers unchanged."""
    chain_headers: dict[str, str] = hops[0]["forwarded"]
    request_id = chain_headers.get("x-request-id")
    first_forwards_sent = all(chain_headers.get(name.lower()) == v for name, v in sent.items())
    results = []
    for index, hop in enumerate(hops):
        agrees = (
            request_id is not None
            and hop["request_id"] == request_id
            and hop["request_id_after_call"] == request_id
            and hop["forwarded"] == chain_headers
        )
        if index == 0:
            agrees = agrees and first_forwards_sent
        else:
            agrees = agrees and hop["received"] == chain_headers
        results.append(agrees)
    return results


def b3_trace_id(headers: Mapping[str, str]) -> str | None:
    """The B3 trace id in the headers (single ``b3`` first, as the spec says), if any."""
    single = headers.get("b3")
    if single and "-" in single:
        return single.split("-", 1)[0]
    return headers.get("x-b3-traceid")


def traceparent_trace_id(headers: Mapping[str, str]) -> str | None:
    traceparent = headers.get("traceparent")
    parts = traceparent.split("-") if traceparent else []
    return parts[1] if len(parts) >= 4 else None


def render_table(sent: Mapping[str, str], hops: Sequence[HopRecord]) -> str:
    """A plain-text table, one row per hop, of the ids the hop received."""
    rows = [list(_COLUMNS)]
    agreement = hop_agreement(sent, hops)
    for number, hop in enumerate(hops, start=1):
        received = hop["received"]
        request_id = hop["request_id"] or "-"
        if received.get("x-request-id") != hop["request_id"]:
            request_id += " (new)"
        rows.append(
            [
                str(number),
                hop["service"],
                f"{hop['framework']} / {hop['server']}",
                request_id,
                b3_trace_id(received) or "-",
                traceparent_trace_id(received) or "-",
                "yes" if agreement[number - 1] else "NO",
            ]
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
