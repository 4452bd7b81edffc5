"""meshprop.requests.Session against a real local HTTP server.

The local server (127.0.0.1) is inside the default mesh scope. ``http://api.example.com`` stands
for a third party outside it: a transport adapter mounted for it records the request instead of
connecting, so nothing ever leaves the machine.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

import meshprop
from meshprop.requests import Session
from tests.recording_server import RecordingServer, recording_server

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
INBOUND = {"x-request-id": "req-1", "traceparent": TRACEPARENT, "x-b3-sampled": "1"}
OUTSIDE = "http://api.example.com"
PROPAGATED = {"x-request-id", "traceparent", "x-b3-sampled"}


class OutsideAdapter(BaseAdapter):
    """Stands in for the network on the way to a third party: records, never connects."""

    def __init__(self, redirect_to: str | None = None) -> None:
        super().__init__()
        self.received: list[requests.PreparedRequest] = []
        self.redirect_to = redirect_to

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **kwargs: Any
    ) -> requests.Response:
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
    with recording_server() as running:
        yield running


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
    first = server.received[0].headers
    assert [value for name, value in first if name == "x-request-id"] == ["mine"]
    assert propagated(dict(first))["traceparent"] == TRACEPARENT
    second = server.received[1].headers
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
    # The caller's own trace header: the request id travels, the forwarded trace context not.
    assert propagated(server.headers(1)) == {"x-request-id": "req-1"}
    assert server.headers(1)["b3"] == "1"
    assert dict(by_hand.headers) == {"B3": "1"}


def test_the_copy_sent_is_the_callers_request_plus_the_headers() -> None:
    """The copy carries everything the caller prepared (body, cookies, hooks, the caller's own
    headers), and the caller's request and its headers stay as they were."""
    called: list[int] = []
    config = meshprop.Config(scope=["mesh", "api.example.com"])
    with make_session(config) as session, meshprop.bind(INBOUND):
        prepared = session.prepare_request(
            requests.Request(
                "POST",
                OUTSIDE + "/charge",
                data=b"amount=42",
                headers={"X-B3-Sampled": "0"},
                cookies={"session": "abc"},
                hooks={"response": [lambda response, **kwargs: called.append(1)]},
            )
        )
        before = dict(prepared.headers)
        response = session.send(prepared)
    sent = outside(session).received[-1]
    assert sent is response.request and sent is not prepared
    assert sent.method == "POST" and sent.url == OUTSIDE + "/charge"
    assert sent.body == b"amount=42"
    assert sent.headers["Cookie"] == "session=abc"
    assert called == [1]
    assert propagated(outside(session).headers()) == {**INBOUND, "x-b3-sampled": "0"}
    assert dict(prepared.headers) == before


def test_headers_a_caller_replaced_with_a_plain_dict() -> None:
    config = meshprop.Config(scope=["mesh", "api.example.com"])
    with make_session(config) as session, meshprop.bind(INBOUND):
        prepared = session.prepare_request(requests.Request("GET", OUTSIDE + "/"))
        prepared.headers = {"X-Request-Id": "mine"}  # type: ignore[assignment]
        session.send(prepared)
    assert propagated(outside(session).headers()) == {**INBOUND, "x-request-id": "mine"}
    assert prepared.headers == {"X-Request-Id": "mine"}


def test_each_request_forwards_its_own_ids_to_the_same_url(server: RecordingServer) -> None:
    with make_session() as session:
        for request_id in ("req-a", "req-b", "req-a"):
            with meshprop.bind({**INBOUND, "x-request-id": request_id}):
                session.get(server.url + "/same")
        session.get(server.url + "/same")
    assert [server.headers(i).get("x-request-id") for i in range(4)] == [
        "req-a",
        "req-b",
        "req-a",
        None,
    ]


def test_redirect_from_the_mesh_to_outside(server: RecordingServer) -> None:
    server.redirects["/redirect"] = OUTSIDE + "/landing"
    with make_session() as session, meshprop.bind(INBOUND):
        response = session.get(server.url + "/redirect", headers={"X-Caller": "kept"})
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
    assert server.received[-1].path == "/home"
    assert propagated(server.headers()) == INBOUND


def test_redirect_inside_the_mesh(server: RecordingServer) -> None:
    server.redirects["/redirect"] = server.url + "/next"
    with make_session() as session, meshprop.bind(INBOUND):
        session.get(server.url + "/redirect")
    assert [request.path for request in server.received][-1] == "/next"
    assert propagated(server.headers(0)) == INBOUND
    assert propagated(server.headers(1)) == INBOUND


def test_redirect_hop_sent_later_by_hand(server: RecordingServer) -> None:
    """``allow_redirects=False`` leaves the next hop in ``response.next`` for the caller."""
    server.redirects["/redirect"] = OUTSIDE + "/x"
    with make_session() as session, meshprop.bind(INBOUND):
        response = session.get(server.url + "/redirect", allow_redirects=False)
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
        Session(meshprop.Config())  # type: ignore[call-arg]


def test_a_header_set_to_none_is_not_forwarded(server: RecordingServer) -> None:
    """``headers={name: None}`` is requests' way to remove a header: the forwarded one too."""
    with make_session() as session, meshprop.bind(INBOUND):
        session.get(server.url + "/a", headers={"X-Request-Id": None})
        session.headers["x-b3-sampled"] = None  # type: ignore[assignment]
        session.get(server.url + "/b")
        session.get(server.url + "/c", headers=CaseInsensitiveDict({"Traceparent": None}))
    assert propagated(server.headers(0)) == {"traceparent": TRACEPARENT, "x-b3-sampled": "1"}
    assert propagated(server.headers(1)) == {"x-request-id": "req-1", "traceparent": TRACEPARENT}
    assert propagated(server.headers(2)) == {"x-request-id": "req-1"}
