"""Flask behind meshprop.wsgi under waitress, a production WSGI server, over real sockets.

Waitress serves every request from a fixed pool of worker threads, so each thread serves
request after request: exactly where a context left set by one request would show up in the
next. 32 client threads send 50 requests each, every one with its own id, to views that call a
recording server through ``meshprop.requests.Session`` and ``meshprop.httpx.Client`` (half of
them from a streamed body). Every response must echo its own id and every outbound call must
carry it. A raw WSGI app outside the middleware checks each worker thread's context before and
after every call into the middleware, and a final probe asks every worker thread at once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import waitress.server  # type: ignore[import-untyped]
from flask import Flask, Response
from waitress import wasyncore

import meshprop
from meshprop._snapshot import CURRENT
from tests.recording_server import RecordingServer, recording_server

CLIENT_THREADS = 32
REQUESTS_PER_CLIENT = 50
SERVER_THREADS = 8


def hops(recorder: RecordingServer) -> list[tuple[str, str, str | None]]:
    """Each call the views made: the client it went through, the id the view expected to carry
    (both in the query) and the x-request-id it did carry."""
    calls: list[tuple[str, str, str | None]] = []
    for request in recorder.received:
        query = parse_qs(urlsplit(request.path).query)
        carried = next((value for name, value in request.headers if name == "x-request-id"), None)
        calls.append((query["via"][0], query["expect"][0], carried))
    return calls


def make_flask_app(recorder_url: str, clients: dict[str, Any]) -> Flask:
    local = threading.local()

    def requests_session() -> meshprop.requests.Session:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = meshprop.requests.Session()
            session.trust_env = False
            clients.setdefault("sessions", []).append(session)
        return session

    def call_downstream() -> str:
        request_id = str(meshprop.request_id())
        requests_session().get(
            recorder_url + "/hop", params={"via": "requests", "expect": request_id}, timeout=10
        )
        clients["httpx"].get(recorder_url + "/hop", params={"via": "httpx", "expect": request_id})
        return request_id

    app = Flask(__name__)

    @app.get("/call")
    def call() -> str:
        return call_downstream()

    @app.get("/stream")
    def stream() -> Response:
        def body() -> Iterator[str]:
            yield call_downstream()

        return Response(body())

    app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


class ContextWatch:
    """The raw WSGI app the server calls, outside the middleware: it sees the worker thread's
    own context, which must hold no snapshot before, between or after the middleware's calls."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.leaks: list[tuple[str, str | None]] = []
        self.probe_barrier = threading.Barrier(SERVER_THREADS)

    def check(self, moment: str) -> None:
        snapshot = CURRENT.get()
        if snapshot is not None:
            self.leaks.append((moment, snapshot.request_id))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.check("before the app call")
        if environ["PATH_INFO"] == "/probe":
            # Holds each worker thread until all of them are in: one answer per thread.
            self.probe_barrier.wait(timeout=20)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [f"{threading.get_ident()} {CURRENT.get()!r}".encode()]
        body = self.app(environ, start_response)
        self.check("after the app call")
        return self._watched(body)

    def _watched(self, body: Iterable[bytes]) -> Iterable[bytes]:
        watch = self

        class Watched:
            def __iter__(self) -> Iterator[bytes]:
                for chunk in body:
                    watch.check("between body chunks")
                    yield chunk

            def close(self) -> None:
                getattr(body, "close", lambda: None)()
                watch.check("after close")

        return Watched()


@pytest.fixture
def recorder() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.fixture
def served(recorder: RecordingServer) -> Iterator[tuple[str, ContextWatch]]:
    clients: dict[str, Any] = {"httpx": meshprop.httpx.Client(trust_env=False, timeout=10)}
    watch = ContextWatch(make_flask_app(recorder.url, clients))
    server = waitress.server.create_server(
        watch,
        host="127.0.0.1",
        port=0,
        threads=SERVER_THREADS,
        asyncore_loop_timeout=0.05,
        connection_limit=CLIENT_THREADS * 2,
    )
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}", watch
    finally:
        server.task_dispatcher.shutdown()
        # Closed from the server's own loop thread, which is inside select() on those sockets.
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        thread.join(timeout=10)
        clients["httpx"].close()
        for session in clients.get("sessions", []):
            session.close()
    assert not thread.is_alive()


def client_run(base_url: str, client_number: int, errors: list[str]) -> None:
    with requests.Session() as session:
        session.trust_env = False
        for number in range(REQUESTS_PER_CLIENT):
            request_id = f"c{client_number}-r{number}-{uuid.uuid4().hex[:8]}"
            path = "/stream" if number % 2 else "/call"
            try:
                response = session.get(
                    base_url + path, headers={"X-Request-ID": request_id}, timeout=30
                )
            except requests.RequestException as error:
                errors.append(f"{request_id}: {error!r}")
                continue
            echoed = response.raw.headers.getlist("x-request-id")
            if response.status_code != 200 or response.text != request_id or echoed != [request_id]:
                errors.append(f"{request_id}: {response.status_code} {response.text!r} {echoed}")


def test_every_request_keeps_its_own_id_under_load(
    served: tuple[str, ContextWatch], recorder: RecordingServer
) -> None:
    base_url, watch = served
    errors: list[str] = []
    client_threads = [
        threading.Thread(target=client_run, args=(base_url, number, errors))
        for number in range(CLIENT_THREADS)
    ]
    for client_thread in client_threads:
        client_thread.start()
    for client_thread in client_threads:
        client_thread.join(timeout=100)
    assert not any(client_thread.is_alive() for client_thread in client_threads)
    assert errors == []

    total = CLIENT_THREADS * REQUESTS_PER_CLIENT
    calls = hops(recorder)
    assert len(calls) == 2 * total
    wrong = [call for call in calls if call[1] != call[2]]
    assert wrong == []
    assert {via for via, _, _ in calls} == {"requests", "httpx"}
    assert len({expected for _, expected, _ in calls}) == total
    assert watch.leaks == []

    # Every worker thread, after the load: its own context holds nothing.
    with httpx.Client(trust_env=False, timeout=30) as client:
        answers: list[str] = []

        def probe() -> None:
            answers.append(client.get(base_url + "/probe").text)

        probes = [threading.Thread(target=probe) for _ in range(SERVER_THREADS)]
        for thread in probes:
            thread.start()
        for thread in probes:
            thread.join(timeout=30)
    assert len(answers) == SERVER_THREADS
    assert len({answer.split()[0] for answer in answers}) == SERVER_THREADS
    assert {answer.split()[1] for answer in answers} == {"None"}
