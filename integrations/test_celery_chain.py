"""A request through a task queue: Flask publishes a Celery task on a real Redis broker, a real
worker process runs it, and the task calls an aiohttp service. Every hop, the worker included,
sees the ids the request came with.

test -> [nginx ->] Flask (publishes) -> Redis -> Celery worker (the task) -> aiohttp (records)
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator

import httpx
import pytest
from celery import Celery

from ._assertions import assert_generated_request_id_travels, assert_one_request_id_and_one_trace
from ._celery import Worker, running_redis, running_workers
from ._mesh import (
    HOST,
    Hop,
    call_chain,
    listening_socket,
    running_processes,
    start_hop,
    wait_until_healthy,
)
from ._report import ISTIO_HEADERS
from ._sidecar import running_sidecar
from .services._record import CHAIN_PATH, HEALTH_PATH


@pytest.fixture(scope="module")
def queue_chain() -> Iterator[str]:
    """Redis, the worker, the aiohttp service the task calls and the Flask service that
    publishes, each in its own process, one set for the module; yields the Flask base URL."""
    with running_redis() as redis_url, running_processes() as processes:
        pinger = Celery("pinger", broker=redis_url, backend=redis_url, set_as_current=False)
        workers = [Worker("chain", "prefork", 2)]
        with running_workers("integrations.services.celery_service", pinger, workers, "chain.ping"):
            recorder, producer = listening_socket(), listening_socket()
            try:
                recorder_url = f"http://{HOST}:{recorder.getsockname()[1]}"
                producer_url = f"http://{HOST}:{producer.getsockname()[1]}"
                start_hop(processes, Hop("ratings", "aiohttp", recorder_url), recorder)
                processes.start(
                    "productpage",
                    [
                        sys.executable, "-m", "integrations.services.celery_service",
                        "--name", "productpage", "--fd", str(producer.fileno()),
                        "--broker", redis_url, "--next", recorder_url,
                    ],
                    pass_fds=[producer.fileno()],
                )  # fmt: skip
            finally:
                recorder.close()
                producer.close()
            wait_until_healthy(
                [producer_url + HEALTH_PATH, recorder_url + HEALTH_PATH], processes, 30.0
            )
            yield producer_url


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """A longer bound than the other chains' client: a hop here waits on a broker and a worker."""
    with httpx.Client(timeout=30.0, trust_env=False) as outside_client:
        yield outside_client


def test_the_istio_headers_reach_the_worker_and_the_service_it_calls(
    queue_chain: str, client: httpx.Client
) -> None:
    response, hops = call_chain(client, queue_chain + CHAIN_PATH, ISTIO_HEADERS)
    assert [hop["service"] for hop in hops] == ["productpage", "worker", "ratings"]
    # byte for byte on every hop, after a broker and a worker too
    assert_one_request_id_and_one_trace(ISTIO_HEADERS, response, hops)


def test_the_id_the_first_hop_generated_travels_through_the_queue(
    queue_chain: str, client: httpx.Client
) -> None:
    response, hops = call_chain(client, queue_chain + CHAIN_PATH, {})
    assert len(hops) == 3
    assert_generated_request_id_travels(response, hops)


def test_requests_in_a_row_each_carry_their_own_id(queue_chain: str, client: httpx.Client) -> None:
    """The worker's two processes take turns; none of them hands an id to the next request."""
    for index in range(8):
        sent = {"x-request-id": f"req-queue-{index}"}
        _, hops = call_chain(client, queue_chain + CHAIN_PATH, sent)
        assert [hop["request_id"] for hop in hops] == [sent["x-request-id"]] * 3
        assert hops[2]["received"] == sent


def test_through_the_sidecar(queue_chain: str, client: httpx.Client) -> None:
    with running_sidecar(queue_chain) as sidecar_url:
        _, hops = call_chain(client, sidecar_url + CHAIN_PATH, {})
    sidecar_id = hops[0]["received"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", sidecar_id)  # nginx's own id, kept as it is
    assert [hop["received"] for hop in hops] == [{"x-request-id": sidecar_id}] * 3
