"""``meshprop.django.MeshPropMiddleware`` under Django's test clients, sync and async.

Every test runs through both clients: ``Client`` drives the sync handler (the WSGI path, the
middleware called synchronously) and ``AsyncClient`` the async one (the ASGI path: META built
from an ASGI scope, the middleware awaited), against sync and async views of the project in
``tests/django_project``. The settings are configured once for this process, with the log
records kept in memory; the real servers are in ``test_django_servers.py``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import django
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings

import meshprop
from meshprop.django import MeshPropMiddleware
from tests.django_project import logs, views
from tests.django_project import settings as project_settings

TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
CLIENTS = ("sync Client", "AsyncClient")


@pytest.fixture(scope="module", autouse=True)
def django_configured() -> None:
    """Django's settings, once per process (they cannot be configured twice)."""
    if not settings.configured:
        values = {name: getattr(project_settings, name) for name in dir(project_settings)}
        values = {name: value for name, value in values.items() if name.isupper()}
        values["LOGGING"] = project_settings.logging_to("memory")
        settings.configure(**values)
        django.setup()


@pytest.fixture(autouse=True)
def fresh_records() -> Iterator[None]:
    for kept in (logs.RECORDS, views.BODY_CLOSED, views.FINISHED):
        kept.clear()
    yield


@pytest.fixture(params=CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Answer:
    response: HttpResponseBase
    body: bytes

    @property
    def echoed(self) -> str | None:
        return self.response.headers.get("x-request-id")

    def json(self) -> Any:
        import json

        return json.loads(self.body)


def fetch(client: str, path: str, **headers: str) -> Answer:
    """GET ``path`` through one of Django's test clients, reading a streamed body to its end as
    the server would (in the client's own loop for ``AsyncClient``). A view's exception becomes
    Django's 500."""
    with warnings.catch_warnings():
        # Django warns when a sync server reads an async body, or an async one a sync body.
        warnings.filterwarnings("ignore", "StreamingHttpResponse must consume", Warning)
        if client == "sync Client":
            response = Client(raise_request_exception=False).get(path, headers=headers)
            return Answer(response, b"".join(response))

        async def fetch_async() -> Answer:
            client = AsyncClient(raise_request_exception=False)
            response = await client.get(path, headers=headers)
            if response.streaming:
                body = [chunk async for chunk in cast(StreamingHttpResponse, response)]
                return Answer(response, b"".join(body))
            return Answer(response, response.content)

        return asyncio.run(fetch_async())


def records(message_start: str) -> list[logging.LogRecord]:
    return [record for record in logs.RECORDS if record.getMessage().startswith(message_start)]


def is_uuid4(value: str | None) -> bool:
    return value is not None and uuid.UUID(value).version == 4


# --- the request's context, in views and middleware ---------------------------------------


@pytest.mark.parametrize("path", ["/ids", "/async-ids"])
def test_a_view_sees_the_request_headers(client: str, path: str) -> None:
    answer = fetch(client, path, x_request_id="req-1", traceparent=TRACEPARENT, x_envoy_x="no")

    assert answer.response.status_code == 200
    assert answer.json() == {
        "request_id": "req-1",
        "trace_id": TRACE,
        "headers": {"x-request-id": "req-1", "traceparent": TRACEPARENT},
    }
    assert answer.echoed == "req-1"
    # The middleware after meshprop's ran inside the request's context.
    assert answer.response.headers["x-seen-by-next-middleware"] == "req-1"


def test_the_view_runs_in_the_mode_django_picked(client: str) -> None:
    """One class, both modes: awaited where the layer below is async, called where it is not."""

    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(meshprop.request_id())

    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(meshprop.request_id())

    assert not iscoroutinefunction(MeshPropMiddleware(sync_view))
    assert iscoroutinefunction(MeshPropMiddleware(async_view))


def test_a_request_without_an_id_gets_a_new_uuid4_echoed(client: str) -> None:
    answer = fetch(client, "/ids")
    seen = answer.json()["request_id"]
    assert is_uuid4(seen)
    assert answer.echoed == seen
    assert answer.json()["headers"] == {"x-request-id": seen}


def test_a_malformed_id_is_replaced_never_echoed(client: str) -> None:
    answer = fetch(client, "/ids", x_request_id="two words")
    assert answer.response.status_code == 200
    assert is_uuid4(answer.echoed)
    assert answer.json()["request_id"] == answer.echoed


def test_the_id_the_view_set_is_kept_not_doubled(client: str) -> None:
    answer = fetch(client, "/own-id", x_request_id="req-1")
    assert answer.response.headers["X-Request-ID"] == "set-by-the-view"
    assert [name.lower() for name in answer.response.headers].count("x-request-id") == 1


def test_nothing_is_left_in_the_context_after_the_request(client: str) -> None:
    fetch(client, "/ids", x_request_id="req-1")
    assert meshprop.request_id() is None  # and the autouse fixture checks the ContextVar


# --- Django's own 404 and 500 --------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["DEBUG=False", "DEBUG=True"])
def test_django_s_404_echoes_the_id_and_its_record_names_it(client: str, debug: bool) -> None:
    with override_settings(DEBUG=debug):
        answer = fetch(client, "/no-such-page", x_request_id="req-404")

    assert answer.response.status_code == 404
    assert answer.echoed == "req-404"
    # Django logs "Not Found" after every middleware has returned: the id comes from the
    # request the record carries.
    (record,) = records("Not Found: /no-such-page")
    assert record.__dict__["request_id"] == "req-404"


@pytest.mark.parametrize("debug", [False, True], ids=["DEBUG=False", "DEBUG=True"])
@pytest.mark.parametrize("path", ["/boom", "/async-boom"])
def test_django_s_500_echoes_the_id_and_its_record_names_it(
    client: str, path: str, debug: bool
) -> None:
    with override_settings(DEBUG=debug):
        answer = fetch(client, path, x_request_id="req-500", traceparent=TRACEPARENT)

    assert answer.response.status_code == 500
    assert answer.echoed == "req-500"
    assert answer.response.headers["x-seen-by-next-middleware"] == "req-500"
    (record,) = records(f"Internal Server Error: {path}")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    # Logged while the request's context is set: the trace id is there too.
    assert (record.__dict__["request_id"], record.__dict__["trace_id"]) == ("req-500", TRACE)


def test_an_exception_django_lets_through_is_marked_with_its_request(client: str) -> None:
    """With DEBUG_PROPAGATE_EXCEPTIONS the exception leaves Django: it names its request."""
    with override_settings(DEBUG_PROPAGATE_EXCEPTIONS=True), pytest.raises(RuntimeError) as raised:
        fetch(client, "/boom", x_request_id="req-escaped")
    assert meshprop.exception_request_id(raised.value) == "req-escaped"


# --- streamed bodies --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/stream", "/async-stream"])
def test_a_streamed_body_is_produced_in_the_request_s_context(client: str, path: str) -> None:
    answer = fetch(client, path, x_request_id="req-stream")

    assert answer.response.status_code == 200
    assert answer.echoed == "req-stream"
    assert answer.body.decode().splitlines() == ["req-stream"] * 3
    chunk_records = records("sync chunk" if path == "/stream" else "async chunk")
    assert [record.__dict__["request_id"] for record in chunk_records] == ["req-stream"] * 3
    # Django's close() of the response, after the body: request_finished sees the request.
    assert views.FINISHED == ["req-stream"]


def test_a_streamed_body_closes_in_the_request_s_context_when_abandoned() -> None:
    """A server closes a body its client stopped reading: the generator's finally and
    request_finished still run inside the request's context."""
    response = Client().get("/stream", headers={"x-request-id": "req-abandoned"})
    chunks = iter(cast(StreamingHttpResponse, response))
    assert next(chunks) == b"req-abandoned\n"
    response.close()

    assert views.BODY_CLOSED == ["req-abandoned"]
    assert views.FINISHED == ["req-abandoned"]
    assert meshprop.request_id() is None


def test_a_file_response_is_left_to_the_server() -> None:
    """A FileResponse keeps its file (the server's sendfile path) and still echoes the id."""
    import io

    from django.http import FileResponse

    def file_view(request: HttpRequest) -> FileResponse:
        return FileResponse(io.BytesIO(b"file body"))

    middleware = MeshPropMiddleware(file_view)
    request = HttpRequest()
    request.META["HTTP_X_REQUEST_ID"] = "req-file"
    response = middleware(request)
    assert isinstance(response, FileResponse)
    assert response.file_to_stream is not None
    assert response.headers["x-request-id"] == "req-file"
    assert b"".join(response.streaming_content) == b"file body"  # type: ignore[arg-type]
    response.close()


# --- logging --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ids", "/async-ids"])
def test_records_logged_in_a_view_carry_the_request_s_ids(client: str, path: str) -> None:
    fetch(client, path, x_request_id="req-log", traceparent=TRACEPARENT)
    (record,) = records("in the")
    assert (record.__dict__["request_id"], record.__dict__["trace_id"]) == ("req-log", TRACE)


def test_a_record_outside_a_request_shows_dashes() -> None:
    logging.getLogger("tests.django_project.views").info("idle")
    (record,) = records("idle")
    assert record.__dict__["request_id"] == "-"


# --- configuration ------------------------------------------------------------------------


def test_the_meshprop_config_setting_configures_the_middleware(client: str) -> None:
    config = meshprop.Config(echo_header="x-correlation-id", extra_headers=["x-canary"])
    with override_settings(MESHPROP_CONFIG=config):
        answer = fetch(client, "/ids", x_request_id="req-cfg", x_canary="blue")

    assert answer.response.headers["x-correlation-id"] == "req-cfg"
    assert "x-request-id" not in answer.response.headers
    assert answer.json()["headers"] == {"x-request-id": "req-cfg", "x-canary": "blue"}


def test_config_given_to_the_constructor_wins_over_the_setting() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    with override_settings(MESHPROP_CONFIG=meshprop.Config(echo_header="x-from-settings")):
        middleware = MeshPropMiddleware(view, config=meshprop.Config(echo_header=None))
    request = HttpRequest()
    request.META["HTTP_X_REQUEST_ID"] = "req-1"
    response = middleware(request)
    assert isinstance(response, HttpResponseBase)
    assert "x-request-id" not in response.headers
    assert "x-from-settings" not in response.headers


def test_instrument_puts_meshprop_first_in_a_stack_without_it() -> None:
    without = [name for name in settings.MIDDLEWARE if "meshprop" not in name]
    meshprop.instrument()
    try:
        with override_settings(MIDDLEWARE=without):
            response = Client().get("/ids", headers={"x-request-id": "dj-1"})
            assert list(settings.MIDDLEWARE) == without  # the setting is left as it was
    finally:
        meshprop.uninstrument()
    assert response.headers["x-request-id"] == "dj-1"
    assert response.json()["request_id"] == "dj-1"
