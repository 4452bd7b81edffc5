"""meshprop.requests.Session against a real local HTTP server.

The local server (127.0.0.1) is inside the default mesh scope. ``http://api.example.com`` stands
for a third party outside it: a transport adapter mounted for it records the request instead of
connecting, so nothing ever leaves the machine.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from requests.adapters import BaseAdapter

import meshprop
from meshprop.requests import Session

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INBOUND = {"x-request-id": "req-1", "traceparent": TRACEPARENT, "x-b3-sampled": "1"}
OUTSIDE = "http://api.example.com"
PROPAGATED = {"x-request-id", "traceparent", "x-b3-sampled"}


class RecordingServer:
    """Answers every GET with 200, or ``/redirect?to=URL`` with a 302, and records the headers
    of each request it receives: (path, [(name, value), ...]) with names lower-cased."""

    def __init__(self) -> None:
        self.received: list[tuple[str, list[tuple[str, str]]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                received.append(
                    (self.path, [(name.lower(), value) for name, value in self.headers.items()])
                )
                query = parse_qs(urlsplit(self.path).query)
                if self.path.startswith("/redirect"):
                    self.send_response(302)
                    self.send_header("Location", query["to"][0])
                else:
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def headers(self, index: int = -1) -> dict[str, str]:
        return dict(self.received[index][1])


class OutsideAdapter(BaseAdapter):
    """Stands in for the network on the way to a third party: records, never connects."""

    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__()
        self.received: list[requests.PreparedRequest] = []
        self.redirect_to = redirect_to

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.received.append(request)
        response = requests.Response()
        response.request = request
        response.url = str(request.url)
        response.raw = None
        response._content = b""
        if self.redirect_to and "/bounce" in str(request.url):
            response.status_code = 302
            response.headers["Location"] = self.redirect_to
        else:
            response.status_code = 200
        return response

    def close(self) -> None:
        pass

    def headers(self, index: int = -1) -> dict[str, str]:
        return {name.lower(): value for name, value in self.received[index].headers.items()}


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    recording = RecordingServer()
    thread = threading.Thread(target=recording.httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield recording
    finally:
        recording.httpd.shutdown()
        recording.httpd.server_close()
        thread.join(timeout=10)


def make_session(config: meshprop.Config | None = None, **adapter: Any) -> Session:
    session = Session(config=config)
    session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
    session.mount(OUTSIDE, OutsideAdapter(**adapter))
    return session


def outside(session: Session) -> OutsideAdapter:
    adapter = session.get_adapter(OUTSIDE + "/")
    assert isinstance(adapter, OutsideAdapter)
    return adapter


def propagated(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name in PROPAGATED}


def test_forwards_to_a_mesh_destination(server: RecordingServer) -> None:
    with make_session() as session, meshprop.bind(INBOUND):
        assert session.get(server.url + "/a").status_code == 200
        session.request("GET", server.url + "/b")
    assert propagated(server.headers(0)) == INBOUND
    assert propagated(server.headers(1)) == INBOUND


def test_nothing_outside_a_request(server: RecordingServer) -> None:
    with make_session() as session:
        session.get(server.url + "/")
        session.get(OUTSIDE + "/")
    assert propagated(server.headers()) == {}
    assert propagated(outside(session).headers()) == {}


def test_nothing_to_a_destination_outside_the_scope() -> None:
    with make_session() as session, meshprop.bind(INBOUND):
        session.get(OUTSIDE + "/")
    assert propagated(outside(session).headers()) == {}


def test_scope_is_configurable() -> None:
    config = meshprop.Config(scope=["mesh", "api.example.com"])
    with make_session(config) as session, meshprop.bind(INBOUND):
        session.get(OUTSIDE + "/")
    assert propagated(outside(session).headers()) == INBOUND


def test_caller_wins_in_any_case(server: RecordingServer) -> None:
    with make_session() as session, meshprop.bind(INBOUND):
        session.get(server.url + "/", headers={"X-Request-ID": "mine"})
        session.headers["TraceParent"] = "session-value"
        session.get(server.url + "/")
    first = server.received[0][1]
    assert [value for name, value in first if name == "x-request-id"] == ["mine"]
    assert propagated(dict(first))["traceparent"] == TRACEPARENT
    second = server.received[1][1]
    assert [value for name, value in second if name == "traceparent"] == ["session-value"]
    assert propagated(dict(second))["x-request-id"] == "req-1"


def test_send_of_a_prepared_request(server: RecordingServer) -> None:
    """The caller's PreparedRequest is left as the caller built it; the copy that was sent, with
    the headers, is the response's ``request``, as requests does for redirect hops."""
    with make_session() as session, meshprop.bind(INBOUND):
        prepared = session.prepare_request(requests.Request("GET", server.url + "/p"))
        response = session.send(prepared)
        by_hand = requests.Request("GET", server.url + "/q", headers={"B3": "1"}).prepare()
        session.send(by_hand)
    assert propagated(server.headers(0)) == INBOUND
    assert "x-request-id" not in prepared.headers
    assert response.request is not prepared
    assert response.request.headers["X-Request-Id"] == "req-1"
    assert propagated(server.headers(1)) == INBOUND
    assert server.headers(1)["b3"] == "1"
    assert dict(by_hand.headers) == {"B3": "1"}


def test_redirect_from_the_mesh_to_outside(server: RecordingServer) -> None:
    with make_session() as session, meshprop.bind(INBOUND):
        response = session.get(
            server.url + "/redirect",
            params={"to": OUTSIDE + "/landing"},
            headers={"X-Caller": "kept"},
        )
    assert [r.status_code for r in response.history] == [302]
    assert propagated(server.headers()) == INBOUND
    landed = outside(session).headers()
    assert propagated(landed) == {}
    assert landed["x-caller"] == "kept"  # the caller's own headers follow, as in requests


def test_redirect_from_outside_back_into_the_mesh(server: RecordingServer) -> None:
    with make_session(redirect_to=server.url + "/home") as session, meshprop.bind(INBOUND):
        response = session.get(OUTSIDE + "/bounce")
    assert response.status_code == 200
    assert propagated(outside(session).headers()) == {}
    assert server.received[-1][0] == "/home"
    assert propagated(server.headers()) == INBOUND


def test_redirect_inside_the_mesh(server: RecordingServer) -> None:
    with make_session() as session, meshprop.bind(INBOUND):
        session.get(server.url + "/redirect", params={"to": server.url + "/next"})
    assert [path for path, _ in server.received][-1] == "/next"
    assert propagated(server.headers(0)) == INBOUND
    assert propagated(server.headers(1)) == INBOUND


def test_redirect_hop_sent_later_by_hand(server: RecordingServer) -> None:
    """``allow_redirects=False`` leaves the next hop in ``response.next`` for the caller."""
    with make_session() as session, meshprop.bind(INBOUND):
        response = session.get(
            server.url + "/redirect", params={"to": OUTSIDE + "/x"}, allow_redirects=False
        )
        next_hop = response.next
        assert next_hop is not None
        assert propagated({k.lower(): v for k, v in next_hop.headers.items()}) == {}
        session.send(next_hop)
    assert propagated(outside(session).headers()) == {}


def test_a_pickled_session_keeps_its_config() -> None:
    config = meshprop.Config(scope="all")
    restored = pickle.loads(pickle.dumps(Session(config=config)))
    assert restored.meshprop_config == config


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Session(meshprop.Config())  # type: ignore[misc]
