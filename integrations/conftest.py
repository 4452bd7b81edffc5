"""Fixtures for the end-to-end tests: running chains, and a client from outside the mesh."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from ._mesh import Chain, running_chain

#: Two orders, so that every inbound adapter and every client carries a request at least once:
#: FastAPI -> Flask -> aiohttp is issue 3's chain (httpx.AsyncClient, requests / httpx.Client);
#: aiohttp first exercises the aiohttp client.
CHAIN_ORDERS = {
    "fastapi-flask-aiohttp": ("fastapi", "flask", "aiohttp"),
    "aiohttp-fastapi-flask": ("aiohttp", "fastapi", "flask"),
}


@pytest.fixture(scope="session", params=sorted(CHAIN_ORDERS))
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    with running_chain(CHAIN_ORDERS[request.param]) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0, trust_env=False) as outside_client:
        yield outside_client
