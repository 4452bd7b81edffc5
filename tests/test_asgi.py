"""MeshPropMiddleware over Starlette and FastAPI, installed both ways, in-process.

HTTP goes through httpx's ASGITransport, which calls the app in the test's own task: anything
the middleware failed to reset would still be in the test's context afterwards. Websockets and
lifespan go through Starlette's TestClient, which runs both.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

import meshprop
from meshprop._config import Config
from meshprop._snapshot import CURRENT, Snapshot
from meshprop.asgi import ASGIApp, MeshPropMiddleware, Message, Receive, Scope, Send
from tests import asgi_apps
from tests.asgi_apps import APP_SET_ID, FRAMEWORKS, INNER_HEADER, INSTALLS

TRACEPARENT = "00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01"

Build = Callable[..., tuple[ASGIApp, asgi_apps.Seen]]


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=INSTALLS)
def install(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def build(framework: str, install: str) -> Build:
    def build_app(config: Config | None = None, **options: Any) -> tuple[ASGIApp, asgi_apps.Seen]:
        return asgi_apps.build(framework, install, config, **options)

    return build_app


def client_for(app: ASGIApp, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def client(build: Build) -> AsyncIterator[httpx.AsyncClient]:
    app, _ = build()
    async with client_for(app) as client:
        yield client


def echoed(response: httpx.Response, name: str = "x-request-id") -> list[str]:
    return response.headers.get_list(name)


def is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4


# --- the request id: kept, generated, replaced, echoed once -------------------------------------


async def test_incoming_id_is_seen_by_the_app_and_echoed_once(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/id", headers={"X-Request-ID": "abc-123", "traceparent": TRACEPARENT}
    )
    assert response.json() == {
        "request_id": "abc-123",
        "current": {"x-request-id": "abc-123", "traceparent": TRACEPARENT},
    }
    assert echoed(response) == ["abc-123"]
    assert meshprop.request_id() is None  # nothing left in the caller's context


async def test_missing_id_is_generated_seen_and_echoed(client: httpx.AsyncClient) -> None:
    response = await client.get("/id")
    generated = response.json()["request_id"]
    assert is_uuid4(generated)
    assert echoed(response) == [generated]


@pytest.mark.parametrize("invalid", ["has space", "x" * 201, "\x7f"])
async def test_invalid_id_is_replaced(client: httpx.AsyncClient, invalid: str) -> None:
    response = await client.get("/id", headers={"x-request-id": invalid})
    generated = response.json()["request_id"]
    assert is_uuid4(generated)
    assert echoed(response) == [generated]


async def test_each_request_gets_its_own_generated_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/id")
    second = await client.get("/id")
    assert echoed(first) != echoed(second)


async def test_edge_mode_replaces_the_incoming_id(build: Build) -> None:
    app, _ = build(Config(trust_incoming_request_id=False))
    async with client_for(app) as client:
        response = await client.get(
            "/id", headers={"x-request-id": "from-outside", "traceparent": TRACEPARENT}
        )
    body = response.json()
    assert body["request_id"] != "from-outside"
    assert is_uuid4(body["request_id"])
    assert body["current"]["traceparent"] == TRACEPARENT
    assert echoed(response) == [body["request_id"]]


async def test_id_the_app_set_is_kept_and_not_doubled(client: httpx.AsyncClient) -> None:
    response = await client.get("/own-id", headers={"x-request-id": "incoming"})
    assert echoed(response) == [APP_SET_ID]


async def test_echo_off(build: Build) -> None:
    app, _ = build(Config(echo_header=None))
    async with client_for(app) as client:
        response = await client.get("/id", headers={"x-request-id": "abc"})
    assert response.json()["request_id"] == "abc"
    assert echoed(response) == []


async def test_echo_under_another_name(build: Build) -> None:
    app, _ = build(Config(echo_header="X-Correlation-ID"))
    async with client_for(app) as client:
        response = await client.get("/id", headers={"x-request-id": "abc"})
    assert echoed(response, "x-correlation-id") == ["abc"]
    assert echoed(response) == []


async def test_no_echo_when_there_is_no_id(build: Build) -> None:
    app, _ = build(Config(request_id_generator=None))
    async with client_for(app) as client:
        response = await client.get("/id", headers={"traceparent": TRACEPARENT})
    assert response.json() == {"request_id": None, "current": {"traceparent": TRACEPARENT}}
    assert echoed(response) == []


# --- where the app runs code: threadpool, streaming, background, middleware, dependencies ------


async def test_sync_endpoint_in_the_threadpool_sees_the_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/sync", headers={"x-request-id": "sync-1"})
    assert response.json()["request_id"] == "sync-1"
    assert echoed(response) == ["sync-1"]


@pytest.mark.parametrize("path", ["/stream", "/stream-sync"])
async def test_every_streamed_chunk_sees_the_id(client: httpx.AsyncClient, path: str) -> None:
    async with client.stream("GET", path, headers={"x-request-id": "stream-1"}) as response:
        chunks = [line async for line in response.aiter_lines()]
    assert chunks == ["0:stream-1", "1:stream-1", "2:stream-1"]
    assert echoed(response) == ["stream-1"]
    assert meshprop.request_id() is None


async def test_background_task_sees_the_id(build: Build) -> None:
    app, seen = build()
    async with client_for(app) as client:
        await client.get("/background", headers={"x-request-id": "bg-1"})
        await client.get("/background", headers={"x-request-id": "bg-2"})
    assert seen.background == ["bg-1", "bg-2"]


async def test_inner_http_middleware_sees_the_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/id", headers={"x-request-id": "inner-1"})
    assert response.headers[INNER_HEADER] == "inner-1"


@pytest.mark.parametrize("install", INSTALLS)
async def test_fastapi_dependencies_see_the_id(install: str) -> None:
    app, _ = asgi_apps.build("fastapi", install)
    async with client_for(app) as client:
        response = await client.get("/dependency", headers={"x-request-id": "dep-1"})
    assert response.json() == {"sync": "dep-1", "async": "dep-1"}


# --- unhandled exceptions: which install puts the id on the 500 ---------------------------------


async def test_exception_reaches_the_caller_marked_with_the_id(build: Build) -> None:
    app, _ = build()
    async with client_for(app) as client:
        with pytest.raises(RuntimeError, match="boom") as raised:
            await client.get("/boom", headers={"x-request-id": "err-1"})
    assert meshprop._snapshot.exception_request_id(raised.value) == "err-1"
    assert meshprop.request_id() is None


async def test_500_of_an_outermost_install_carries_the_id(framework: str) -> None:
    app, _ = asgi_apps.build(framework, "wrap")
    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"x-request-id": "err-1"})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"  # Starlette's own 500, not ours
    assert echoed(response) == ["err-1"]


async def test_500_of_an_add_middleware_install_is_starlettes_without_the_id(
    framework: str,
) -> None:
    app, _ = asgi_apps.build(framework, "add_middleware")
    async with client_for(app, raise_app_exceptions=False) as client:
        response = await client.get("/boom", headers={"x-request-id": "err-1"})
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    assert echoed(response) == []


async def test_apps_exception_handler_answers_in_both_installs(framework: str) -> None:
    outermost, _ = asgi_apps.build(framework, "wrap", exception_handler=True)
    inside, _ = asgi_apps.build(framework, "add_middleware", exception_handler=True)
    responses = {}
    for install, app in (("wrap", outermost), ("add_middleware", inside)):
        async with client_for(app, raise_app_exceptions=False) as client:
            responses[install] = await client.get("/boom", headers={"x-request-id": "err-2"})

    # Outermost: the handler runs inside the request's context.
    assert responses["wrap"].json() == {"in_context": "err-2", "on_exception": None}
    # add_middleware: the context is gone, the id is on the exception.
    assert responses["add_middleware"].json() == {"in_context": None, "on_exception": "err-2"}
    for response in responses.values():
        assert response.status_code == 500
        assert echoed(response) == ["err-2"]  # set by the handler, not doubled by the echo


# --- websockets ----------------------------------------------------------------------------------


def test_websocket_sees_the_id_and_accept_echoes_it(build: Build) -> None:
    app, _ = build()
    with (
        TestClient(app) as client,
        client.websocket_connect("/ws", headers={"x-request-id": "ws-1"}) as websocket,
    ):
        assert websocket.receive_text() == "ws-1"
        assert websocket.extra_headers == [(b"x-request-id", b"ws-1")]
    assert meshprop.request_id() is None


def test_websocket_denial_response_echoes_the_id(build: Build) -> None:
    app, _ = build()
    with TestClient(app) as client, pytest.raises(WebSocketDenialResponse) as denied:  # noqa: SIM117
        with client.websocket_connect("/ws-deny", headers={"x-request-id": "ws-2"}):
            pass
    assert denied.value.status_code == 403
    assert denied.value.headers.get_list("x-request-id") == ["ws-2"]


# --- lifespan and other scopes --------------------------------------------------------------------


def test_lifespan_runs_through_the_middleware(build: Build) -> None:
    app, seen = build()
    with TestClient(app) as client:
        assert (
            client.get("/id", headers={"x-request-id": "after-startup"}).json()["request_id"]
            == "after-startup"
        )
    assert seen.lifespan == [None]


async def test_scopes_it_does_not_serve_reach_the_app_untouched() -> None:
    calls: list[tuple[Scope, Receive, Send, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append((scope, receive, send, CURRENT.get()))

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    await MeshPropMiddleware(app)(scope, receive, send)
    assert len(calls) == 1
    assert calls[0][0] is scope
    assert calls[0][1] is receive
    assert calls[0][2] is send
    assert calls[0][3] is None


# --- raw ASGI apps: header lists, case, the caller's own context ---------------------------------


def raw_app(headers: Any) -> ASGIApp:
    """A plain ASGI app that sends ``headers`` as they are."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": str(meshprop.request_id()).encode()})

    return app


async def test_apps_header_list_is_not_changed() -> None:
    shared_headers = [(b"content-type", b"text/plain")]  # reused by every response
    async with client_for(MeshPropMiddleware(raw_app(shared_headers))) as client:
        first = await client.get("/", headers={"x-request-id": "one"})
        second = await client.get("/", headers={"x-request-id": "two"})
    assert echoed(first) == ["one"]
    assert echoed(second) == ["two"]
    assert shared_headers == [(b"content-type", b"text/plain")]


async def test_apps_reused_message_is_not_changed() -> None:
    start: Message = {"type": "http.response.start", "status": 200, "headers": []}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(start)  # the same message object for every response
        await send({"type": "http.response.body", "body": b""})

    async with client_for(MeshPropMiddleware(app)) as client:
        first = await client.get("/", headers={"x-request-id": "one"})
        second = await client.get("/", headers={"x-request-id": "two"})
    assert echoed(first) == ["one"]
    assert echoed(second) == ["two"]
    assert start == {"type": "http.response.start", "status": 200, "headers": []}


async def test_app_set_id_in_upper_case_is_kept() -> None:
    app = MeshPropMiddleware(raw_app([(b"X-Request-ID", b"mine")]))
    async with client_for(app) as client:
        response = await client.get("/", headers={"x-request-id": "incoming"})
    assert echoed(response) == ["mine"]
    assert response.text == "incoming"


@pytest.mark.parametrize(
    "headers",
    [None, [], (), [[b"content-type", b"text/plain"]], iter([(b"content-type", b"text/plain")])],
    ids=["absent", "empty-list", "empty-tuple", "list-pairs", "iterator"],
)
async def test_echo_on_any_shape_of_header_list(headers: Any) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {"type": "http.response.start", "status": 200}
        if headers is not None:
            start["headers"] = headers
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    async with client_for(MeshPropMiddleware(app)) as client:
        response = await client.get("/", headers={"x-request-id": "shape"})
    assert echoed(response) == ["shape"]


async def test_headers_from_a_one_shot_iterator_reach_both_meshprop_and_the_app() -> None:
    """ASGI allows any iterable for ``scope["headers"]``; a repeated header sends the capture
    down its general path, which must still see every header, and so must the app."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen["headers"] = list(scope["headers"])
        seen["snapshot"] = meshprop.current()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pairs = [(b"x-request-id", b"rid-1"), (b"x-b3-sampled", b"1"), (b"x-b3-sampled", b"0")]
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": iter(pairs)}
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def keep(message: Message) -> None:
        sent.append(message)

    await MeshPropMiddleware(app)(scope, receive, keep)
    assert seen["headers"] == pairs
    assert dict(seen["snapshot"]) == {"x-request-id": "rid-1", "x-b3-sampled": "1"}
    assert sent[0]["headers"] == [(b"x-request-id", b"rid-1")]


async def test_callers_own_context_comes_back() -> None:
    app = MeshPropMiddleware(raw_app([]))
    with meshprop.bind({"x-request-id": "caller"}):
        async with client_for(app) as client:
            response = await client.get("/", headers={"x-request-id": "request"})
            with pytest.raises(RuntimeError):
                await client_for(MeshPropMiddleware(_failing_app)).get("/")
        assert response.text == "request"
        assert meshprop.request_id() == "caller"


async def _failing_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError("fails before the response")


# --- a request started from inside another: keep-alive servers, nesting, work left running ------


def http_scope(request_id: str) -> Scope:
    return {"type": "http", "headers": [(b"x-request-id", request_id.encode())]}


async def no_body() -> Message:
    return {"type": "http.request", "body": b""}


async def discard(message: Message) -> None:
    pass


@pytest.mark.parametrize("first_ends", ["before the second starts", "while the second runs"])
async def test_request_started_from_a_finished_ones_task_ends_without_its_id(
    first_ends: str,
) -> None:
    """uvicorn starts a keep-alive connection's next request from the previous request's last
    ``send``, so the next task inherits the previous snapshot. Where the server logs the next
    request's exception, after the middleware has reset the context, it must find neither."""
    second_started = asyncio.Event()
    first_done = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if first_ends == "while the second runs":
            if meshprop.request_id() == "first":
                await second_started.wait()  # work after the response, a background task's
            else:
                second_started.set()
                await first_done.wait()

    middleware = MeshPropMiddleware(app)
    next_requests: list[asyncio.Task[None]] = []
    after_the_middleware: list[str | None] = []

    async def serve(request_id: str, send: Send) -> None:
        await middleware(http_scope(request_id), no_body, send)
        after_the_middleware.append(meshprop.request_id())

    async def send_and_start_the_next_request(message: Message) -> None:
        if message["type"] == "http.response.body":
            next_requests.append(asyncio.create_task(serve("second", discard)))

    await serve("first", send_and_start_the_next_request)
    first_done.set()
    await next_requests[0]
    assert after_the_middleware == [None, None]


async def test_nested_request_gives_the_outer_request_its_context_back() -> None:
    """An in-process call to another meshprop app, from the handler or from work after the
    response, is not a finished request: the outer request's headers are there after it."""
    inner = MeshPropMiddleware(raw_app([]))
    seen: list[str | None] = []

    async def outer(scope: Scope, receive: Receive, send: Send) -> None:
        async with client_for(inner) as client:
            seen.append((await client.get("/", headers={"x-request-id": "inner-1"})).text)
            seen.append(meshprop.request_id())
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            seen.append((await client.get("/", headers={"x-request-id": "inner-2"})).text)
            seen.append(meshprop.request_id())

    async with client_for(MeshPropMiddleware(outer)) as client:
        await client.get("/", headers={"x-request-id": "outer"})
    assert seen == ["inner-1", "outer", "inner-2", "outer"]


async def test_work_a_request_started_keeps_its_id_after_the_request() -> None:
    request_over = asyncio.Event()
    snapshots: list[Snapshot | None] = []
    tasks: list[asyncio.Task[str | None]] = []
    wrapped: list[Callable[[], str | None]] = []

    async def read_when_the_request_is_over() -> str | None:
        await request_over.wait()
        return meshprop.request_id()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        snapshots.append(CURRENT.get())
        tasks.append(asyncio.create_task(read_when_the_request_is_over()))
        wrapped.append(meshprop.wrap(meshprop.request_id))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with client_for(MeshPropMiddleware(app)) as client:
        await client.get("/", headers={"x-request-id": "kept"})
    request_over.set()
    assert snapshots[0] is not None and snapshots[0].has_ended
    assert await tasks[0] == "kept"
    assert wrapped[0]() == "kept"


def test_config_is_a_plain_attribute() -> None:
    config = Config(echo_header=None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    middleware = MeshPropMiddleware(app, config=config)
    assert middleware.app is app
    assert middleware.config == config
    assert MeshPropMiddleware(app).config == Config()


def test_reachable_from_a_plain_import() -> None:
    assert meshprop.asgi.MeshPropMiddleware is MeshPropMiddleware
