"""Views that report what meshprop shows them, and views that call the next hop.

A forwarding view names, in the call's query, the id it was called with (read from the request
without meshprop): the next hop's record says whether the call carried that id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

import meshprop
import meshprop.httpx
import meshprop.requests

logger = logging.getLogger(__name__)

#: The request id each streamed body's ``finally`` and each ``request_finished`` receiver saw.
BODY_CLOSED: list[str | None] = []
FINISHED: list[str | None] = []


def _on_request_finished(sender: object, **kwargs: object) -> None:
    FINISHED.append(meshprop.request_id())


request_finished.connect(_on_request_finished, weak=False)


def what_meshprop_shows() -> dict[str, Any]:
    return {
        "request_id": meshprop.request_id(),
        "trace_id": meshprop.trace_id(),
        "headers": dict(meshprop.current()),
    }


def health(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


def ids(request: HttpRequest) -> JsonResponse:
    logger.info("in the sync view")
    return JsonResponse(what_meshprop_shows())


async def async_ids(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0)
    logger.info("in the async view")
    return JsonResponse(what_meshprop_shows())


def own_id(request: HttpRequest) -> HttpResponse:
    return HttpResponse("own", headers={"X-Request-ID": "set-by-the-view"})


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the sync view failed")


async def async_boom(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    raise RuntimeError("the async view failed")


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[str]:
        try:
            for number in range(3):
                logger.info("sync chunk %d", number)
                yield f"{meshprop.request_id()}\n"
        finally:
            BODY_CLOSED.append(meshprop.request_id())

    return StreamingHttpResponse(body())


async def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        for number in range(3):
            await asyncio.sleep(0)
            logger.info("async chunk %d", number)
            yield f"{meshprop.request_id()}\n"

    return StreamingHttpResponse(body())


# The forwarding views: ?to=<next hop's base URL>&hold=<seconds to stay in the view>.


class _InFlight:
    """How many forwarding views run at once in this process, and the most there were."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> int:
        with self.lock:
            self.now -= 1
            return self.peak


IN_FLIGHT = _InFlight()
_shared_client: list[meshprop.httpx.Client] = []


def _httpx_client() -> meshprop.httpx.Client:
    # One client for every thread, as an app holds it (httpx's Client is thread-safe).
    with IN_FLIGHT.lock:
        if not _shared_client:
            _shared_client.append(meshprop.httpx.Client(trust_env=False, timeout=30))
        return _shared_client[0]


def _hop(request: HttpRequest, via: str) -> tuple[str, dict[str, str]]:
    called_with = request.headers.get("x-request-id", "")
    return request.GET["to"] + "/hop", {"via": via, "for": called_with}


def _answer(request: HttpRequest, peak: int) -> JsonResponse:
    logger.info("forwarded for %s", request.headers.get("x-request-id", ""))
    return JsonResponse({"seen": meshprop.request_id(), "in_flight_peak": peak})


def forward(request: HttpRequest) -> JsonResponse:
    IN_FLIGHT.enter()
    url, params = _hop(request, "requests")
    time.sleep(float(request.GET.get("hold", 0)))
    with meshprop.requests.Session() as session:
        session.trust_env = False
        session.get(url, params=params, timeout=30).raise_for_status()
    return _answer(request, IN_FLIGHT.leave())


async def async_forward(request: HttpRequest) -> JsonResponse:
    IN_FLIGHT.enter()
    url, params = _hop(request, "httpx-async")
    await asyncio.sleep(float(request.GET.get("hold", 0)))
    async with meshprop.httpx.AsyncClient(trust_env=False, timeout=30) as client:
        (await client.get(url, params=params)).raise_for_status()
    return _answer(request, IN_FLIGHT.leave())


def stream_forward(request: HttpRequest) -> StreamingHttpResponse:
    url, params = _hop(request, "httpx-in-stream")

    def body() -> Iterator[str]:
        yield "called: "
        _httpx_client().get(url, params=params).raise_for_status()
        yield str(meshprop.request_id())

    return StreamingHttpResponse(body())


async def async_stream_forward(request: HttpRequest) -> StreamingHttpResponse:
    url, params = _hop(request, "httpx-async-in-stream")

    async def body() -> AsyncIterator[str]:
        yield "called: "
        async with meshprop.httpx.AsyncClient(trust_env=False, timeout=30) as client:
            (await client.get(url, params=params)).raise_for_status()
        yield str(meshprop.request_id())

    return StreamingHttpResponse(body())
