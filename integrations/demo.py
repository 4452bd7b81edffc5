"""``make demo``: one request through FastAPI -> Flask -> aiohttp, printed hop by hop.

Starts the chain on 127.0.0.1, sends a request carrying the headers an Istio ingress gateway
sets and one carrying none, prints what each hop received, and stops everything. Exits 0 when
every hop agreed, 1 otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import httpx

from ._mesh import ISTIO_CHAIN, Chain, call_chain, running_chain
from ._report import ISTIO_HEADERS, hop_agreement, render_table

_REQUESTS: tuple[tuple[str, Mapping[str, str]], ...] = (
    ("From the Istio ingress gateway: x-request-id, B3 multi headers, traceparent, tracestate",
     ISTIO_HEADERS),
    ("With no headers at all: the first hop generates x-request-id, and it travels", {}),
)  # fmt: skip


def _describe(chain: Chain) -> str:
    servers = {"fastapi": "FastAPI on uvicorn", "flask": "Flask on waitress"}
    hops = [f"{hop.name} ({servers.get(hop.framework, hop.framework)})" for hop in chain.hops]
    return " -> ".join(hops)


def main() -> int:
    print("meshprop demo: starting the chain on 127.0.0.1 ...")
    all_agree = True
    with running_chain(ISTIO_CHAIN) as chain, httpx.Client(timeout=10.0, trust_env=False) as client:
        print(_describe(chain))
        for number, (title, headers) in enumerate(_REQUESTS, start=1):
            response, hops = call_chain(client, chain.entry_url, headers)
            echoed = response.headers.get("x-request-id", "-")
            agrees = all(hop_agreement(headers, hops)) and echoed == hops[0]["request_id"]
            all_agree = all_agree and agrees
            print(f"\n{number}. {title}\n")
            print(render_table(headers, hops))
            verdict = "every hop received the same headers" if agrees else "HOPS DISAGREE"
            print(f"\n   response x-request-id: {echoed}  ->  {verdict}")
    print("\nAll hops matched." if all_agree else "\nSome hops disagreed.")
    return 0 if all_agree else 1


if __name__ == "__main__":
    sys.exit(main())
