"""meshprop.wsgi around plain WSGI apps, driven in-process the way a WSGI server drives them."""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import meshprop
from meshprop._snapshot import CURRENT, exception_request_id
from meshprop.wsgi import MeshPropMiddleware

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

StartResponse = Callable[..., Any]


def make_environ(**headers: str) -> dict[str, Any]:
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    for name, value in headers.items():
        environ["HTTP_" + name.upper()] = value
    return environ


class Server:
    """Plays the server's part of PEP 3333 and records what the client would get."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]], Any]] = []

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], None]:
        self.calls.append((status, headers, exc_info))
        return lambda data: None

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self.calls[-1][1]

    def echoed(self) -> list[str]:
        return [value for name, value in self.headers if name.lower() == "x-request-id"]

    def run(self, app: Any, environ: dict[str, Any]) -> bytes:
        body = app(environ, self.start_response)
        try:
            return b"".join(body)
        finally:
            if hasattr(body, "close"):
                body.close()


def recording_app(seen: dict[str, Any]) -> Any:
    """An app whose view, body and close all record what meshprop tells them."""

    def body() -> Iterator[bytes]:
        try:
            seen["body"] = meshprop.request_id()
            yield b"hello"
            seen["body again"] = meshprop.request_id()
            yield b" world"
        finally:
            seen["finally"] = meshprop.request_id()

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        seen["app"] = meshprop.request_id()
        seen["current"] = dict(meshprop.current())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body()

    return app


def test_app_body_and_close_see_the_request() -> None:
    seen: dict[str, Any] = {}
    server = Server()
    body = server.run(
        MeshPropMiddleware(recording_app(seen)),
        make_environ(x_request_id="req-1", traceparent=TRACEPARENT),
    )
    assert body == b"hello world"
    assert seen == {
        "app": "req-1",
        "current": {"x-request-id": "req-1", "traceparent": TRACEPARENT},
        "body": "req-1",
        "body again": "req-1",
        "finally": "req-1",
    }
    assert server.echoed() == ["req-1"]
    assert CURRENT.get() is None


def test_generated_id_is_echoed_once() -> None:
    seen: dict[str, Any] = {}
    server = Server()
    server.run(MeshPropMiddleware(recording_app(seen)), make_environ())
    assert server.echoed() == [seen["app"]]
    assert len(seen["app"]) == 36


@pytest.mark.parametrize("spelling", ["X-Request-ID", "x-request-id", "X-REQUEST-ID"])
def test_id_set_by_the_app_is_kept(spelling: str) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [(spelling, "from-app")])
        return [b""]

    server = Server()
    server.run(MeshPropMiddleware(app), make_environ(x_request_id="incoming"))
    assert server.headers == [(spelling, "from-app")]


def test_app_header_list_is_not_changed() -> None:
    """A response object may send its header list again: appending would echo twice."""
    shared = [("Content-Type", "text/plain")]

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", shared)
        return [b""]

    middleware = MeshPropMiddleware(app)
    for request_id in ("first", "second"):
        server = Server()
        server.run(middleware, make_environ(x_request_id=request_id))
        assert server.echoed() == [request_id]
    assert shared == [("Content-Type", "text/plain")]


def test_echo_header_is_configurable_and_can_be_off() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    server = Server()
    server.run(
        MeshPropMiddleware(app, config=meshprop.Config(echo_header="x-correlation-id")),
        make_environ(x_request_id="abc"),
    )
    assert server.headers == [("x-correlation-id", "abc")]

    server = Server()
    server.run(
        MeshPropMiddleware(app, config=meshprop.Config(echo_header=None)),
        make_environ(x_request_id="abc"),
    )
    assert server.headers == []


def test_start_response_again_with_exc_info() -> None:
    """An error page after headers were prepared: the second call's headers replace the first's,
    so they carry the echo too, once, and exc_info reaches the server untouched."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise RuntimeError("while rendering")
        except RuntimeError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"error page"]

    server = Server()
    body = server.run(MeshPropMiddleware(app), make_environ(x_request_id="abc"))
    assert body == b"error page"
    (status1, headers1, exc1), (status2, headers2, exc2) = server.calls
    assert (status1, status2) == ("200 OK", "500 Internal Server Error")
    assert headers1 == [("Content-Type", "text/plain"), ("x-request-id", "abc")]
    assert headers2 == [("X-Error", "1"), ("x-request-id", "abc")]
    assert exc1 is None
    assert exc2 is not None and isinstance(exc2[1], RuntimeError)


def test_start_response_called_from_the_body() -> None:
    """PEP 3333 lets an app call start_response as late as its first body chunk."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [("X-Seen", str(meshprop.request_id()))])
        yield b"late"

    server = Server()
    assert server.run(MeshPropMiddleware(app), make_environ(x_request_id="abc")) == b"late"
    assert server.headers == [("X-Seen", "abc"), ("x-request-id", "abc")]


def test_app_that_raises() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        raise KeyError("boom")

    with pytest.raises(KeyError) as raised:
        MeshPropMiddleware(app)(make_environ(x_request_id="abc"), Server().start_response)
    assert exception_request_id(raised.value) == "abc"
    assert CURRENT.get() is None


def test_body_that_raises() -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"first"
        raise ValueError("in the body")

    server = Server()
    with pytest.raises(ValueError) as raised:
        server.run(MeshPropMiddleware(app), make_environ(x_request_id="abc"))
    assert exception_request_id(raised.value) == "abc"
    assert CURRENT.get() is None


def test_client_gone_body_closed_early() -> None:
    seen: dict[str, Any] = {}
    server = Server()
    body = MeshPropMiddleware(recording_app(seen))(
        make_environ(x_request_id="abc"), server.start_response
    )
    iterator = iter(body)
    assert next(iterator) == b"hello"
    assert CURRENT.get() is None  # nothing stays set between the server's calls
    body.close()  # type: ignore[attr-defined]
    assert seen["finally"] == "abc"
    assert "body again" not in seen
    assert CURRENT.get() is None


@pytest.mark.parametrize("where", ["other thread", "other context"])
def test_close_runs_elsewhere(where: str) -> None:
    seen: dict[str, Any] = {}
    body = MeshPropMiddleware(recording_app(seen))(
        make_environ(x_request_id="abc"), Server().start_response
    )
    assert next(iter(body)) == b"hello"
    errors: list[BaseException] = []

    def close() -> None:
        try:
            body.close()  # type: ignore[attr-defined]
            seen["after close"] = CURRENT.get()
        except BaseException as error:
            errors.append(error)

    if where == "other thread":
        thread = threading.Thread(target=close)
        thread.start()
        thread.join(timeout=10)
    else:
        contextvars.copy_context().run(close)
    assert errors == []
    assert seen["finally"] == "abc"
    assert seen["after close"] is None


def test_next_request_on_the_same_thread_sees_nothing() -> None:
    """A body abandoned half-read and never closed (a broken server) leaves nothing behind."""
    results: list[Any] = []

    def worker() -> None:
        first: dict[str, Any] = {}
        body = MeshPropMiddleware(recording_app(first))(
            make_environ(x_request_id="first"), Server().start_response
        )
        next(iter(body))
        results.append(CURRENT.get())
        second: dict[str, Any] = {}
        Server().run(MeshPropMiddleware(recording_app(second)), make_environ())
        results.append(second["app"])
        results.append(CURRENT.get())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=10)
    leftover, second_id, after = results
    assert leftover is None
    assert second_id not in (None, "first")
    assert after is None


def test_lists_and_file_wrappers_pass_through() -> None:
    """No app code runs while these are read, and the server must recognise its own file
    wrapper to use sendfile()."""
    listed = [b"a", b"b"]
    wrapped = FileWrapper(io.BytesIO(b"file"))

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return listed if environ["PATH_INFO"] == "/list" else wrapped

    middleware = MeshPropMiddleware(app)
    environ = make_environ()
    environ["PATH_INFO"] = "/list"
    assert middleware(environ, Server().start_response) is listed
    environ = make_environ()
    environ["wsgi.file_wrapper"] = FileWrapper
    assert middleware(environ, Server().start_response) is wrapped


def test_any_callable_app() -> None:
    """Django's WSGIHandler and friends are objects with __call__, and may return an iterable
    with close() (a response object)."""

    class Response:
        def __init__(self) -> None:
            self.closed_with: str | None = None

        def __iter__(self) -> Iterator[bytes]:
            yield str(meshprop.request_id()).encode()

        def close(self) -> None:
            self.closed_with = meshprop.request_id()

    class Handler:
        def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Response:
            self.response = Response()
            start_response("200 OK", [])
            return self.response

    handler = Handler()
    server = Server()
    assert server.run(MeshPropMiddleware(handler), make_environ(x_request_id="dj")) == b"dj"
    assert handler.response.closed_with == "dj"
    assert server.echoed() == ["dj"]


APP_VARIABLE: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "set by the app", default=None
)


class BodyWithClose:
    """A response object whose iteration and close run app code, as Django's do."""

    def __init__(self, seen: dict[str, Any], fail_in: str | None = None) -> None:
        self.seen = seen
        self.fail_in = fail_in

    def __iter__(self) -> Iterator[bytes]:
        if self.fail_in == "iter":
            raise LookupError("iter")
        return self._chunks()

    def _chunks(self) -> Iterator[bytes]:
        self.seen["first chunk"] = (meshprop.request_id(), APP_VARIABLE.get())
        yield b"a"
        if self.fail_in == "next":
            raise LookupError("next")
        self.seen["second chunk"] = (meshprop.request_id(), APP_VARIABLE.get())
        yield b"b"

    def close(self) -> None:
        self.seen["close"] = (meshprop.request_id(), APP_VARIABLE.get())
        if self.fail_in == "close":
            raise LookupError("close")


def test_a_variable_the_app_sets_is_its_request_s_alone() -> None:
    """Set in the app call and never reset (as Flask's stream_with_context leaves its request
    context pushed until the last chunk): the body and close() still see it, the server's
    context never does, and neither does the next request on the thread."""
    seen: dict[str, Any] = {}

    def app(environ: dict[str, Any], start_response: StartResponse) -> BodyWithClose:
        APP_VARIABLE.set(f"view of {meshprop.request_id()}")
        start_response("200 OK", [])
        return BodyWithClose(seen)

    middleware = MeshPropMiddleware(app)
    body = middleware(make_environ(x_request_id="abc"), Server().start_response)
    server_saw = [(CURRENT.get(), APP_VARIABLE.get())]
    chunks = iter(body)
    assert next(chunks) == b"a"
    server_saw.append((CURRENT.get(), APP_VARIABLE.get()))
    assert list(chunks) == [b"b"]
    body.close()  # type: ignore[attr-defined]
    server_saw.append((CURRENT.get(), APP_VARIABLE.get()))
    assert seen == {
        "first chunk": ("abc", "view of abc"),
        "second chunk": ("abc", "view of abc"),
        "close": ("abc", "view of abc"),
    }
    assert server_saw == [(None, None)] * 3

    seen.clear()
    Server().run(middleware, make_environ(x_request_id="next"))
    assert seen["close"] == ("next", "view of next")
    assert APP_VARIABLE.get() is None


@pytest.mark.parametrize("fail_in", ["iter", "next", "close"])
def test_exceptions_from_the_body_are_marked(fail_in: str) -> None:
    def app(environ: dict[str, Any], start_response: StartResponse) -> BodyWithClose:
        start_response("200 OK", [])
        return BodyWithClose({}, fail_in)

    with pytest.raises(LookupError) as raised:
        Server().run(MeshPropMiddleware(app), make_environ(x_request_id="abc"))
    assert raised.value.args == (fail_in,)
    assert exception_request_id(raised.value) == "abc"
    assert CURRENT.get() is None


def test_end_of_body_is_not_an_error() -> None:
    """The body's StopIteration ends the server's loop as usual, unmarked and not re-raised."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        return iter([b"a", b"b"])

    body = MeshPropMiddleware(app)(make_environ(x_request_id="abc"), Server().start_response)
    chunks = iter(body)
    assert list(chunks) == [b"a", b"b"]
    assert next(chunks, "done") == "done"
    body.close()  # type: ignore[attr-defined]  # the app's iterator has no close(): nothing to do


@pytest.fixture
def otel_spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def otel_recording_app(seen: dict[str, Any]) -> Any:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterator[bytes]:
        seen["app"] = (meshprop.request_id(), trace.get_current_span().get_span_context().span_id)
        start_response("200 OK", [])
        yield b"a"
        seen["body"] = (meshprop.request_id(), trace.get_current_span().get_span_context().span_id)
        yield b"b"

    return app


@pytest.mark.parametrize("outer", ["meshprop", "opentelemetry"])
def test_opentelemetry_wsgi_middleware_on_either_side(
    outer: str,
    otel_spans: tuple[TracerProvider, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OpenTelemetry attaches its span in the app call and detaches it when its body ends: with
    meshprop outside, both happen in the request's context; with meshprop inside, the app and
    its body see OpenTelemetry's span. Either way the server's context keeps neither."""
    provider, exporter = otel_spans
    seen: dict[str, Any] = {}
    app = otel_recording_app(seen)
    wrapped: Any
    if outer == "meshprop":
        wrapped = MeshPropMiddleware(OpenTelemetryMiddleware(app, tracer_provider=provider))
    else:
        wrapped = OpenTelemetryMiddleware(MeshPropMiddleware(app), tracer_provider=provider)
    server = Server()
    assert server.run(wrapped, make_environ(x_request_id="abc")) == b"ab"
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    assert seen == {"app": ("abc", span.context.span_id), "body": ("abc", span.context.span_id)}
    assert server.echoed() == ["abc"]
    assert [record.getMessage() for record in caplog.records if record.levelname == "ERROR"] == []
    assert trace.get_current_span() is trace.INVALID_SPAN
    assert CURRENT.get() is None
