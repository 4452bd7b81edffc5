"""meshprop.wsgi installed on a Flask app: views, hooks, error handlers and streamed responses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response, abort, g, has_request_context, request, stream_with_context

import meshprop
from meshprop._snapshot import CURRENT

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def make_app(seen: list[tuple[str, Any]]) -> Flask:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @app.before_request
    def before() -> None:
        seen.append(("before_request", meshprop.request_id()))
        g.request_id = meshprop.request_id()

    @app.teardown_request
    def teardown(error: BaseException | None) -> None:
        seen.append(("teardown_request", meshprop.request_id()))

    @app.get("/view")
    def view() -> dict[str, Any]:
        seen.append(("view", meshprop.request_id()))
        return {"current": dict(meshprop.current()), "g": g.request_id}

    @app.get("/own-id")
    def own_id() -> Response:
        return Response("", headers={"X-Request-ID": "set-by-view"})

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError("view failed")

    @app.get("/forbidden")
    def forbidden() -> str:
        abort(403)

    @app.errorhandler(404)
    def not_found(error: Exception) -> tuple[str, int]:
        seen.append(("404 handler", meshprop.request_id()))
        return "not here", 404

    @app.errorhandler(500)
    def server_error(error: Exception) -> tuple[str, int]:
        seen.append(("500 handler", meshprop.request_id()))
        return "sorry", 500

    @app.get("/stream-with-context")
    def streamed_with_context() -> Response:
        def chunks() -> Iterator[str]:
            seen.append(("stream start", meshprop.request_id()))
            yield "a"
            seen.append(("stream end", meshprop.request_id()))
            yield request.path[-1]

        return Response(stream_with_context(chunks()))

    @app.get("/stream")
    def streamed() -> Response:
        def chunks() -> Iterator[str]:
            try:
                seen.append(("stream start", meshprop.request_id()))
                yield "a"
                seen.append(("stream end", meshprop.request_id()))
                yield "b"
            finally:
                seen.append(("stream finally", meshprop.request_id()))

        return Response(chunks())

    app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


@pytest.fixture
def seen() -> list[tuple[str, Any]]:
    return []


@pytest.fixture
def client(seen: list[tuple[str, Any]]) -> Any:
    return make_app(seen).test_client()


def test_view_and_hooks(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/view", headers={"X-Request-Id": "abc", "traceparent": TRACEPARENT})
    assert response.json == {
        "current": {"x-request-id": "abc", "traceparent": TRACEPARENT},
        "g": "abc",
    }
    assert response.headers.getlist("X-Request-ID") == ["abc"]
    assert seen == [("before_request", "abc"), ("view", "abc"), ("teardown_request", "abc")]


def test_generated_id_is_the_one_echoed(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/view")
    assert response.headers.getlist("X-Request-ID") == [response.json["g"]]


def test_view_id_is_kept(client: Any) -> None:
    response = client.get("/own-id", headers={"X-Request-Id": "abc"})
    assert response.headers.getlist("X-Request-ID") == ["set-by-view"]


def test_404_handler(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/nowhere", headers={"X-Request-Id": "abc"})
    assert response.status_code == 404
    assert response.headers.getlist("X-Request-ID") == ["abc"]
    assert ("404 handler", "abc") in seen
    assert seen[-1] == ("teardown_request", "abc")


def test_unhandled_exception_becomes_a_500_with_the_id(
    client: Any, seen: list[tuple[str, Any]]
) -> None:
    response = client.get("/fail", headers={"X-Request-Id": "abc"})
    assert response.status_code == 500
    assert response.get_data(as_text=True) == "sorry"
    assert response.headers.getlist("X-Request-ID") == ["abc"]
    assert seen == [
        ("before_request", "abc"),
        ("500 handler", "abc"),
        ("teardown_request", "abc"),
    ]


def test_http_exception_without_handler(client: Any) -> None:
    response = client.get("/forbidden", headers={"X-Request-Id": "abc"})
    assert response.status_code == 403
    assert response.headers.getlist("X-Request-ID") == ["abc"]


def test_stream_with_context(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/stream-with-context", headers={"X-Request-Id": "abc"})
    assert response.get_data() == b"at"
    response.close()
    assert response.headers.getlist("X-Request-ID") == ["abc"]
    # Flask runs teardown_request when the view returns and again when the streamed
    # request context ends; both see the id.
    assert seen == [
        ("before_request", "abc"),
        ("teardown_request", "abc"),
        ("stream start", "abc"),
        ("stream end", "abc"),
        ("teardown_request", "abc"),
    ]


def test_plain_generator(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/stream", headers={"X-Request-Id": "abc"})
    assert response.get_data() == b"ab"
    response.close()
    assert seen[-3:] == [
        ("stream start", "abc"),
        ("stream end", "abc"),
        ("stream finally", "abc"),
    ]


def test_stream_closed_early(client: Any, seen: list[tuple[str, Any]]) -> None:
    response = client.get("/stream", headers={"X-Request-Id": "abc"}, buffered=False)
    assert next(response.response) == b"a"
    assert CURRENT.get() is None
    response.close()
    assert seen[-2:] == [("stream start", "abc"), ("stream finally", "abc")]


def test_requests_one_after_another(client: Any) -> None:
    first = client.get("/view", headers={"X-Request-Id": "one"})
    second = client.get("/view")
    assert first.json["g"] == "one"
    assert second.json["g"] not in (None, "one")
    assert CURRENT.get() is None


def test_flask_request_context_stays_in_the_request(
    client: Any, seen: list[tuple[str, Any]]
) -> None:
    """stream_with_context pushes Flask's request context in the view and pops it in the body's
    last chunk: those tokens belong to the request's context, so the server's context has no
    Flask request (nor snapshot) between chunks or after the response."""
    response = client.get("/stream-with-context", headers={"X-Request-Id": "abc"}, buffered=False)
    server_saw = [(has_request_context(), CURRENT.get())]
    assert next(response.response) == b"a"
    server_saw.append((has_request_context(), CURRENT.get()))
    assert next(response.response) == b"t"  # the body reads flask.request
    server_saw.append((has_request_context(), CURRENT.get()))
    assert list(response.response) == []
    response.close()
    server_saw.append((has_request_context(), CURRENT.get()))
    assert server_saw == [(False, None)] * 4
    assert seen[-3:] == [
        ("stream start", "abc"),
        ("stream end", "abc"),
        ("teardown_request", "abc"),
    ]
