"""The pytest plugin, used as a team adopting meshprop would: each case is a user's test file,
run by a separate pytest process that loads the plugin through its ``pytest11`` entry point
(so the package must be installed, ``pip install -e .``).

The services under test are real apps behind each framework's own test client (Starlette's
``TestClient``, httpx's ``ASGITransport``, Flask's and aiohttp's test clients); their
downstream is an ``httpx.MockTransport`` or a recording HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import httpx
import pytest

import meshprop
import meshprop.httpx
from meshprop._outbound import RECORDERS
from meshprop.testing import MeshpropCalls

pytest_plugins = ["pytester"]

RECORDING_SERVER = (Path(__file__).parent / "recording_server.py").read_text()

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"

# What every user test file starts with: the inbound headers its test sends to the service.
PREAMBLE = f"""
import asyncio

import httpx
import pytest

import meshprop

INBOUND = {{
    "x-request-id": "req-1",
    "traceparent": "00-{TRACE}-00f067aa0ba902b7-01",
    "tracestate": "congo=t61rcWkgMzE",
}}
"""


@pytest.fixture(autouse=True)
def meshprop_under_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's pytest process imports this checkout's meshprop, whichever one is installed
    (an editable install may point at another checkout)."""
    root = str(Path(__file__).parent.parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    )


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    """Run ``source`` as a user's test file in a fresh pytest process, with the recording
    server beside it."""
    pytester.makepyfile(recording_server=RECORDING_SERVER)
    pytester.makepyfile(test_service=PREAMBLE + textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


# -- services that forward: the assertion passes under each test client ------------------------


def test_fastapi_test_client_and_the_drop_in_httpx_client(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        import meshprop.asgi
        import meshprop.httpx

        def inventory(request):
            return httpx.Response(200, json={"items": []})

        app = FastAPI()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

        @app.get("/order")
        def order():
            with meshprop.httpx.Client(transport=httpx.MockTransport(inventory)) as client:
                client.get("http://inventory.svc/items")
                client.post("http://billing/charge", json={})
            return {"ok": True}

        def test_order_forwards(meshprop_calls):
            with TestClient(app) as client:
                assert client.get("/order", headers=INBOUND).status_code == 200
            assert len(meshprop_calls.downstream) == 2
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(passed=1)


def test_asgi_transport_and_a_plain_client_under_instrument(pytester: pytest.Pytester) -> None:
    """B3 inbound, a plain ``httpx.AsyncClient`` made to forward by ``instrument()``, a real
    server downstream. The test's own call into the app (an httpx call outside any request,
    which ``instrument()`` sees too) is no downstream call."""
    result = run(
        pytester,
        """
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from recording_server import recording_server

        B3 = {
            "x-request-id": "req-2",
            "x-b3-traceid": "80f198ee56343ba864fe8b2a57d3eff7",
            "x-b3-spanid": "e457b5a2e4d86bd1",
            "x-b3-sampled": "1",
        }

        @pytest.fixture
        def instrumented():
            meshprop.instrument()
            try:
                yield
            finally:
                meshprop.uninstrument()

        def test_forwards_to_a_real_server(instrumented, meshprop_calls):
            with recording_server() as server:

                async def order(request):
                    async with httpx.AsyncClient() as client:
                        await client.get(server.url + "/stock")
                    return JSONResponse({"ok": True})

                app = Starlette(routes=[Route("/order", order)])

                async def call_app():
                    transport = httpx.ASGITransport(app=app)
                    async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
                        return await c.get("/order", headers=B3)

                assert asyncio.run(call_app()).status_code == 200
                assert server.headers()["x-b3-traceid"] == B3["x-b3-traceid"]
            assert len(meshprop_calls.downstream) == 1
            meshprop_calls.assert_forwarded(B3)
        """,
    )
    result.assert_outcomes(passed=1)


def test_flask_test_client_and_the_drop_in_requests_session(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import flask

        import meshprop.requests
        import meshprop.wsgi
        from recording_server import recording_server

        def test_order_forwards(meshprop_calls):
            with recording_server() as server:
                app = flask.Flask(__name__)
                app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)

                @app.get("/order")
                def order():
                    with meshprop.requests.Session() as session:
                        session.get(server.url + "/stock", timeout=10)
                    return "ok"

                assert app.test_client().get("/order", headers=INBOUND).status_code == 200
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(passed=1)


def test_aiohttp_test_client_and_the_drop_in_session(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from aiohttp import web
        from aiohttp.test_utils import TestClient, TestServer

        import meshprop.aiohttp
        from recording_server import recording_server

        def test_order_forwards(meshprop_calls):
            with recording_server() as server:

                async def order(request):
                    async with meshprop.aiohttp.ClientSession() as session:
                        async with session.get(server.url + "/stock") as response:
                            await response.read()
                    return web.Response(text="ok")

                async def call_app():
                    app = web.Application()
                    meshprop.aiohttp.setup(app)
                    app.router.add_get("/order", order)
                    async with TestClient(TestServer(app)) as client:
                        return (await client.get("/order", headers=INBOUND)).status

                assert asyncio.run(call_app()) == 200
            assert len(meshprop_calls.downstream) == 1
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(passed=1)


def test_an_active_span_keeps_the_trace_id_and_changes_the_span_id(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient
        from fastapi import Request
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        import meshprop.asgi
        import meshprop.httpx
        from meshprop.otel import MeshPropagator

        trace.set_tracer_provider(TracerProvider())
        tracer = trace.get_tracer("service")
        received = []

        def inventory(request):
            received.append(request.headers["traceparent"])
            return httpx.Response(200)

        app = FastAPI()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

        @app.get("/order")
        def order(request: Request):
            parent = MeshPropagator().extract(dict(request.headers))
            with tracer.start_as_current_span("order", context=parent):
                with meshprop.httpx.Client(transport=httpx.MockTransport(inventory)) as client:
                    client.get("http://inventory.svc/items")
            return {}

        def test_order_forwards(meshprop_calls):
            with TestClient(app) as client:
                client.get("/order", headers=INBOUND)
            assert received and received[0] != INBOUND["traceparent"]  # the span's own id
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(passed=1)


# -- services that do not forward: the failure names the call and the header -------------------


def test_a_plain_httpx_client_without_instrument_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        import meshprop.asgi

        app = FastAPI()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

        @app.get("/order")
        def order():
            transport = httpx.MockTransport(lambda request: httpx.Response(200))
            with httpx.Client(transport=transport) as client:
                client.get("http://inventory.svc/items")
            return {}

        def test_order_forwards(meshprop_calls):
            with TestClient(app) as client:
                client.get("/order", headers=INBOUND)
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*1 of 1 downstream call(s) did not forward the inbound request's headers",
            "*call 1: httpx GET http://inventory.svc/items"
            " (in scope; in request req-1; plain client: not through meshprop)",
            "*sent by a plain client meshprop never saw*instrument()*",
            "*- x-request-id: missing, expected 'req-1', the inbound request's",
            f"*- traceparent: missing, expected trace id {TRACE}",
        ]
    )


def test_a_service_that_drops_the_traceparent_fails(pytester: pytest.Pytester) -> None:
    """The downstream call goes through meshprop, but the service removes the traceparent
    (requests' ``headers={name: None}``): only that header is reported."""
    result = run(
        pytester,
        """
        import flask

        import meshprop.requests
        import meshprop.wsgi
        from recording_server import recording_server

        def test_order_forwards(meshprop_calls):
            with recording_server() as server:
                app = flask.Flask(__name__)
                app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)

                @app.get("/order")
                def order():
                    with meshprop.requests.Session() as session:
                        session.get(server.url + "/stock", headers={"traceparent": None})
                    return "ok"

                app.test_client().get("/order", headers=INBOUND)
                print("DOWNSTREAM", server.url)
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*requests GET http://127.0.0.1:*/stock (in scope; in request req-1; added *",
            f"*- traceparent: missing, expected trace id {TRACE}",
        ]
    )
    assert "x-request-id: " not in result.stdout.str()  # that one was forwarded


def test_a_call_that_starts_its_own_trace_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        import meshprop.asgi
        import meshprop.httpx

        OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        app = FastAPI()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

        @app.get("/order")
        def order():
            transport = httpx.MockTransport(lambda request: httpx.Response(200))
            with meshprop.httpx.Client(transport=transport) as client:
                client.get("http://inventory.svc/items", headers={"traceparent": OWN})
            return {}

        def test_order_forwards(meshprop_calls):
            with TestClient(app) as client:
                client.get("/order", headers=INBOUND)
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*call 1: httpx GET http://inventory.svc/items"
            " (in scope; in request req-1; added x-request-id)",
            "*- traceparent: trace id 0af7651916cd43dd8448eb211c80319c ('00-0af7*'),"
            f" expected trace id {TRACE}",
        ]
    )


def test_no_downstream_call_at_all_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import threading

        from fastapi import FastAPI
        from fastapi.testclient import TestClient

        import meshprop.asgi
        import meshprop.httpx

        app = FastAPI()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)

        def call_inventory():
            transport = httpx.MockTransport(lambda request: httpx.Response(200))
            with meshprop.httpx.Client(transport=transport) as client:
                client.get("http://inventory.svc/items")

        @app.get("/order")
        def order():
            worker = threading.Thread(target=call_inventory)  # loses the request's context
            worker.start()
            worker.join(timeout=10)
            return {}

        def test_order_forwards(meshprop_calls):
            with TestClient(app) as client:
                client.get("/order", headers=INBOUND)
            meshprop_calls.assert_forwarded(INBOUND)
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*assert_forwarded: no downstream call was recorded*",
            "*httpx GET http://inventory.svc/items (in scope; outside any request; added nothing)",
            "*lost the request's context*",
        ]
    )


# -- gRPC calls and published messages -----------------------------------------------------------

# A user's gRPC services: Orders, whose Place method reserves stock on Inventory over gRPC
# (meshprop's client interceptor) and publishes an event with Kafka-style headers
# (meshprop.inject); both on real grpc servers on 127.0.0.1.
GRPC_SERVICES = """
import contextlib
from concurrent import futures

import grpc

import meshprop.grpc

OWN_TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
published = []

@contextlib.contextmanager
def serving(service, methods):
    server = grpc.server(
        futures.ThreadPoolExecutor(4), interceptors=[meshprop.grpc.server_interceptor()]
    )
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(method) for name, method in methods.items()
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait(10)

def place_order(inventory, reserve_metadata=(), event_headers=None):
    def place(request, context):
        interceptor = meshprop.grpc.client_interceptor(inventory)
        with grpc.insecure_channel(inventory) as plain:
            channel = grpc.intercept_channel(plain, interceptor)
            channel.unary_unary("/shop.Inventory/Reserve")(
                b"", metadata=reserve_metadata, timeout=10
            )
        published.append(meshprop.inject(event_headers or [(b"event", b"order-placed")]))
        return b"placed"

    return place

def call_orders(place):
    with serving("shop.Inventory", {"Reserve": lambda request, context: b"ok"}) as inventory:
        with serving("shop.Orders", {"Place": place(inventory)}) as orders:
            with grpc.insecure_channel(orders) as channel:
                channel.unary_unary("/shop.Orders/Place")(
                    b"", metadata=tuple(INBOUND.items()), timeout=10
                )
"""


def test_a_grpc_call_and_a_published_message_are_seen_and_forward(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        GRPC_SERVICES
        + textwrap.dedent(
            """
            def test_order_forwards(meshprop_calls):
                call_orders(place_order)
                assert [call.client for call in meshprop_calls.downstream] == ["grpc", "inject"]
                reserve, event = meshprop_calls
                assert (reserve.method, reserve.added) == ("/shop.Inventory/Reserve", INBOUND)
                assert event.added == INBOUND
                sent = [(name.encode(), value.encode()) for name, value in INBOUND.items()]
                assert published == [[(b"event", b"order-placed"), *sent]]
                meshprop_calls.assert_forwarded(INBOUND)
            """
        ),
    )
    result.assert_outcomes(passed=1)


def test_a_grpc_call_and_a_message_that_set_their_own_ids_fail(pytester: pytest.Pytester) -> None:
    """The Reserve call starts its own trace; the event carries its producer's request id."""
    result = run(
        pytester,
        GRPC_SERVICES
        + textwrap.dedent(
            """
            def own_ids(inventory):
                return place_order(
                    inventory,
                    reserve_metadata=(("traceparent", OWN_TRACE),),
                    event_headers={"x-request-id": "job-7"},
                )

            def test_order_forwards(meshprop_calls):
                call_orders(own_ids)
                meshprop_calls.assert_forwarded(INBOUND)
            """
        ),
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*2 of 2 downstream call(s) did not forward the inbound request's headers",
            "*call 1: grpc /shop.Inventory/Reserve 127.0.0.1:*"
            " (in scope; in request req-1; added x-request-id)",
            "*- traceparent: trace id 0af7651916cd43dd8448eb211c80319c ('00-0af7*'),"
            f" expected trace id {TRACE}",
            "*call 2: inject (in scope; in request req-1; added traceparent, tracestate)",
            "*- x-request-id: 'job-7', expected 'req-1', the inbound request's",
        ]
    )


# -- the plugin loads through its entry point, and does nothing unless asked --------------------


def test_the_plugin_loads_through_its_entry_point(pytester: pytest.Pytester) -> None:
    source = """
        def test_uses_the_fixture(meshprop_calls):
            assert len(meshprop_calls) == 0
        """
    run(pytester, source).assert_outcomes(passed=1)
    without = run(pytester, source, "-p", "no:meshprop")
    without.assert_outcomes(errors=1)
    without.stdout.fnmatch_lines(["*fixture 'meshprop_calls' not found*"])


def test_a_test_without_the_fixture_records_nothing(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from meshprop._outbound import RECORDERS

        def test_plain(request):
            assert request.config.pluginmanager.has_plugin("meshprop")
            assert RECORDERS == []
            assert httpx.MockTransport.handle_request.__module__ == "httpx._transports.mock"

        def test_with_the_fixture_then_without(meshprop_calls):
            assert len(RECORDERS) == 1

        def test_after(request):
            assert RECORDERS == []
            assert httpx.MockTransport.handle_request.__module__ == "httpx._transports.mock"
        """,
    )
    result.assert_outcomes(passed=3)


def test_this_test_run_has_the_plugin_and_no_recorder(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("meshprop")
    assert RECORDERS == []


# -- the fixture in this process: what it records, and how it reads ----------------------------


def test_calls_outside_the_scope_are_recorded_and_reported(meshprop_calls: MeshpropCalls) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with (
        meshprop.bind({"x-request-id": "req-9"}),
        meshprop.httpx.Client(transport=transport) as client,
    ):
        client.get("http://inventory.svc/items")
        client.get("https://api.example.com/v1/charge")
    assert [call.in_scope for call in meshprop_calls] == [True, False]
    assert meshprop_calls[0].added == {"x-request-id": "req-9"}
    assert meshprop_calls[1].added == {}
    assert repr(meshprop_calls) == (
        "<meshprop_calls: 2 outbound call(s)\n"
        "  1. httpx GET http://inventory.svc/items"
        " (in scope; in request req-9; added x-request-id)\n"
        "  2. httpx GET https://api.example.com/v1/charge"
        " (outside the scope; in request req-9; added nothing)>"
    )
    meshprop_calls.assert_forwarded({"x-request-id": "req-9"})
    with pytest.raises(AssertionError) as failure:
        meshprop_calls.assert_no_calls_outside_scope()
    assert str(failure.value) == (
        "meshprop_calls: 1 call(s) went outside the propagation scope"
        " (meshprop forwards nothing to them):\n"
        "  httpx GET https://api.example.com/v1/charge"
        " (outside the scope; in request req-9; added nothing)"
    )


def test_injected_messages_are_recorded_with_their_destination(
    meshprop_calls: MeshpropCalls,
) -> None:
    with meshprop.bind({"x-request-id": "req-9"}):
        meshprop.inject({}, url="amqp://rabbitmq.svc/orders")
        meshprop.inject([], url="https://events.example.com/ingest")
    meshprop.inject({})
    assert repr(meshprop_calls) == (
        "<meshprop_calls: 3 outbound call(s)\n"
        "  1. inject amqp://rabbitmq.svc/orders (in scope; in request req-9; added x-request-id)\n"
        "  2. inject https://events.example.com/ingest"
        " (outside the scope; in request req-9; added nothing)\n"
        "  3. inject (in scope; outside any request; added nothing)>"
    )
