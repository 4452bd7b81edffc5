"""The apps the stress servers run: one per interface (ASGI, WSGI, aiohttp), each behind its
meshprop adapter, each answering the same routes.

``/report``  what the app saw through meshprop for this request, with the headers the server
             delivered (``observe``), for the oracle.
``/hold``    (async) waits until ``target`` requests of its round are in flight, then reads the
             id again after a sleep and optionally calls ``/echo`` through a meshprop client.
``/echo``    the x-request-id values this request arrived with, read without meshprop.
``/pipe``    the id before and after a short sleep, and the traceparent seen.
``/stream``  (WSGI) a long streamed body whose every chunk and whose close check the id.
``/whoami``  (WSGI) the serving thread and the id it sees; ``/probe`` the same for every thread
             at once.
``/stats``   memory figures and the server-side ledger (leaks seen outside the adapter).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import meshprop
import meshprop.aiohttp
import meshprop.asgi
import meshprop.httpx
import meshprop.wsgi

Json = dict[str, Any]
CONFIGS = {
    "default": meshprop.Config(),
    "tenant": meshprop.Config(prefixes=("x-tenant-", "x-"), presets=("baggage",)),
}
PEER = "http://peer/"
HOLD_SECONDS = 120.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def observe(delivered: list[tuple[str, str]], rules: str, joined: bool) -> Json:
    """What meshprop answers inside this request; an exception is recorded, never raised."""
    errors: list[str] = []

    def attempt(what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except Exception as error:
            errors.append(f"{what}: {error!r}")
            return None

    return {
        "rules": rules,
        "joined": joined,
        "delivered": delivered,
        "seen": attempt("current", lambda: dict(meshprop.current())),
        "rid": attempt("request_id", meshprop.request_id),
        "tid": attempt("trace_id", meshprop.trace_id),
        "out": attempt("outbound_headers", lambda: meshprop.outbound_headers(PEER)),
        "errors": errors,
    }


def memory() -> dict[str, int]:
    """Resident memory, the objects the collector tracks, and those of meshprop's own types
    (snapshots, body wrappers: what a per-request leak of meshprop's would pile up)."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * _PAGE
    tracked = gc.get_objects()
    own = sum(1 for item in tracked if str(type(item).__module__).startswith("meshprop"))
    return {"rss": rss, "objects": len(tracked), "meshprop_objects": own}


def encode(payload: Json) -> bytes:
    return json.dumps(payload).encode()


class Ledger:
    """Server-side counters, shared by the serving threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self.counts[key] += amount


def outside_check(ledger: Ledger, moment: str) -> None:
    """Outside the adapter no request's context may be seen."""
    if meshprop.request_id() is not None or meshprop.current():
        ledger.add(f"context seen outside the adapter {moment}")


class _Round:
    def __init__(self, target: int) -> None:
        self.target = target
        self.in_flight = 0
        self.peak = 0
        self.released = asyncio.Event()


class Holding:
    """The state of ``/hold`` rounds: how many are in flight, the peak, the release."""

    def __init__(self) -> None:
        self.rounds: dict[str, _Round] = {}

    async def hold(self, query: dict[str, str], call: Callable[[str], Awaitable[str]]) -> Json:
        own = query["id"]
        state = self.rounds.get(query["round"])
        if state is None:
            state = self.rounds[query["round"]] = _Round(int(query["target"]))
        before = meshprop.request_id()
        seen_before = meshprop.current().get("x-request-id")
        state.in_flight += 1
        state.peak = max(state.peak, state.in_flight)
        if state.in_flight >= state.target:
            state.released.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(state.released.wait(), HOLD_SECONDS)
        await asyncio.sleep((hash(own) % 10) / 1000)
        after = meshprop.request_id()
        outbound = meshprop.outbound_headers(PEER).get("x-request-id")
        carried = await call(own) if query.get("call") == "1" else None
        state.in_flight -= 1
        return {
            "before": before,
            "seen_before": seen_before,
            "after": after,
            "outbound": outbound,
            "carried": carried,
        }

    def peak(self, round_name: str) -> int:
        state = self.rounds.get(round_name)
        return 0 if state is None else state.peak


def _query(raw: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(raw).items()}


# ---- ASGI ---------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class AsgiApp:
    """A raw ASGI app (no framework in the way), ``MeshPropMiddleware`` inside, a watch outside."""

    def __init__(self, config_name: str) -> None:
        self.config_name = config_name
        self.inner = meshprop.asgi.MeshPropMiddleware(self.routes, CONFIGS[config_name])
        self.ledger = Ledger()
        self.holding = Holding()
        self.client: meshprop.httpx.AsyncClient | None = None
        self.address = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        outside_check(self.ledger, "before the request")
        if not self.address and scope.get("server"):
            host, port = scope["server"][:2]
            self.address = f"{host}:{port}"
        if scope["path"] == "/stats":
            await self.respond(
                send,
                {
                    **memory(),
                    "ledger": dict(self.ledger.counts),
                    "peak": self.holding.peak(
                        _query(scope["query_string"].decode()).get("round", "")
                    ),
                },
            )
        else:
            await self.inner(scope, receive, send)
        outside_check(self.ledger, "after the request")

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def routes(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        query = _query(scope["query_string"].decode())
        if path == "/report":
            delivered = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"]]
            await self.respond(send, observe(delivered, self.config_name, joined=False))
        elif path == "/hold":
            await self.respond(send, await self.holding.hold(query, self.call_echo))
        elif path == "/echo":
            values = [v.decode("latin-1") for n, v in scope["headers"] if n == b"x-request-id"]
            await self.respond(send, {"x-request-id": values})
        elif path == "/pipe":
            before = meshprop.request_id()
            await asyncio.sleep(int(query.get("sleep", "0")) / 1000)
            await self.respond(send, _pipe_answer(before))
        else:
            await self.respond(send, {"ok": True})

    async def call_echo(self, own: str) -> str:
        if self.client is None:
            self.client = meshprop.httpx.AsyncClient(trust_env=False, timeout=HOLD_SECONDS)
        response = await self.client.get(f"http://{self.address}/echo", params={"for": own})
        return ",".join(response.json()["x-request-id"])

    @staticmethod
    async def respond(send: Send, payload: Json) -> None:
        body = encode(payload)
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _pipe_answer(before: str | None) -> Json:
    return {
        "before": before,
        "after": meshprop.request_id(),
        "traceparent": meshprop.current().get("traceparent"),
    }


# ---- WSGI ---------------------------------------------------------------------------------

StartResponse = Callable[..., Any]


class WsgiApp:
    """A raw WSGI app behind ``meshprop.wsgi.MeshPropMiddleware``, with a watch outside it that
    checks the serving thread's own context before the call and after the body's close."""

    def __init__(self, config_name: str, threads: int) -> None:
        self.config_name = config_name
        self.inner = meshprop.wsgi.MeshPropMiddleware(self.routes, CONFIGS[config_name])
        self.ledger = Ledger()
        self.barrier = threading.Barrier(threads)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        outside_check(self.ledger, "before the request")
        if environ["PATH_INFO"] == "/stats":
            return self.respond(start_response, {**memory(), "ledger": dict(self.ledger.counts)})
        body = self.inner(environ, start_response)
        outside_check(self.ledger, "after the app call")
        return _Watched(body, self.ledger)

    def routes(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        query = _query(environ.get("QUERY_STRING", ""))
        if path == "/report":
            delivered = [
                (key[5:].lower().replace("_", "-"), value)
                for key, value in environ.items()
                if key.startswith("HTTP_") and isinstance(value, str)
            ]
            return self.respond(start_response, observe(delivered, self.config_name, joined=True))
        if path == "/stream":
            return self.stream(query, start_response)
        if path == "/whoami":
            return self.respond(start_response, self.whoami())
        if path == "/probe":
            self.barrier.wait(timeout=30)
            return self.respond(start_response, self.whoami())
        if path == "/pipe":
            before = meshprop.request_id()
            threading.Event().wait(int(query.get("sleep", "0")) / 1000)
            return self.respond(start_response, _pipe_answer(before))
        return self.respond(start_response, {"ok": True})

    @staticmethod
    def whoami() -> Json:
        return {
            "thread": threading.get_ident(),
            "rid": meshprop.request_id(),
            "seen": meshprop.current().get("x-request-id"),
        }

    def stream(self, query: dict[str, str], start_response: StartResponse) -> Iterator[bytes]:
        chunks, size, own = int(query["chunks"]), int(query["size"]), query["id"]
        start_response(
            "200 OK",
            [("Content-Type", "application/octet-stream"), ("Content-Length", str(chunks * size))],
        )
        ledger = self.ledger

        def body() -> Iterator[bytes]:
            try:
                for index in range(chunks):
                    seen = meshprop.request_id()
                    if seen != own:
                        ledger.add("wrong id inside a streamed body")
                    if index == 0:
                        head = encode({"thread": threading.get_ident(), "rid": seen}) + b"\n"
                        yield head.ljust(size, b" ")
                    else:
                        yield b"." * size
                ledger.add("streams read to the end")
            finally:
                ledger.add("streams closed")
                if meshprop.request_id() != own:
                    ledger.add("wrong id when a streamed body was closed")

        return body()

    @staticmethod
    def respond(start_response: StartResponse, payload: Json) -> list[bytes]:
        body = encode(payload)
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


class _Watched:
    """The body as the server sees it: the thread's context is checked after ``close()``."""

    def __init__(self, body: Iterable[bytes], ledger: Ledger) -> None:
        self.body = body
        self.ledger = ledger

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            getattr(self.body, "close", lambda: None)()
        finally:
            outside_check(self.ledger, "after close")


# ---- aiohttp ------------------------------------------------------------------------------


def aiohttp_app(config_name: str) -> Any:
    """An aiohttp application with ``meshprop.aiohttp.setup``; typed loosely to keep aiohttp
    out of this module's import for the other servers."""
    from aiohttp import web

    app = web.Application()
    holding = Holding()
    ledger = Ledger()
    sessions: list[Any] = []

    async def call_echo(own: str) -> str:
        if not sessions:
            sessions.append(meshprop.aiohttp.ClientSession())
        host, port = app_address[0]
        async with sessions[0].get(f"http://{host}:{port}/echo", params={"for": own}) as answer:
            payload = await answer.json()
        return ",".join(payload["x-request-id"])

    app_address: list[tuple[str, int]] = []

    async def handle(request: web.Request) -> web.Response:
        if not app_address and request.transport is not None:
            app_address.append(request.transport.get_extra_info("sockname")[:2])
        query = dict(request.query)
        path = request.path
        if path == "/report":
            payload = observe(list(request.headers.items()), config_name, joined=False)
        elif path == "/hold":
            payload = await holding.hold(query, call_echo)
        elif path == "/echo":
            payload = {"x-request-id": request.headers.getall("x-request-id", [])}
        elif path == "/pipe":
            before = meshprop.request_id()
            await asyncio.sleep(int(query.get("sleep", "0")) / 1000)
            payload = _pipe_answer(before)
        elif path == "/stats":
            payload = {
                **memory(),
                "ledger": dict(ledger.counts),
                "peak": holding.peak(query.get("round", "")),
            }
        else:
            payload = {"ok": True}
        return web.Response(body=encode(payload), content_type="application/json")

    async def close_sessions(app: web.Application) -> None:
        for session in sessions:
            await session.close()

    app.router.add_route("GET", "/{tail:.*}", handle)
    app.on_cleanup.append(close_sessions)
    meshprop.aiohttp.setup(app, CONFIGS[config_name])
    return app
