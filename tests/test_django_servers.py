"""The Django test project behind real servers, each in a subprocess on 127.0.0.1.

``manage.py runserver --noreload`` (Django's threaded WSGI server), gunicorn's ``gthread``
worker with the WSGI application and uvicorn with the ASGI one serve ``tests/django_project``
with ``meshprop.django.MeshPropMiddleware`` first in ``MIDDLEWARE``. Its views call a recording
server in this process through ``meshprop.requests.Session``, ``meshprop.httpx.Client`` and
``meshprop.httpx.AsyncClient``: the recording is what the next hop in the mesh would get. The
servers' own output is read too, for the log lines ``ContextFilter`` fills in.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from integrations._mesh import HOST, listening_socket, running_processes, wait_until_healthy
from tests.recording_server import Received, RecordingServer, recording_server

SERVERS = ("runserver", "gunicorn-gthread", "uvicorn")
TRACE = "80f198ee56343ba864fe8b2a57d3eff7"
SPAN = "e457b5a2e4d86bd1"
TRACE_HEADERS = {
    "traceparent": f"00-{TRACE}-{SPAN}-01",
    "x-b3-traceid": TRACE,
    "x-b3-spanid": SPAN,
    "x-b3-sampled": "1",
}
#: Each forwarding view, and the client it calls the next hop through.
FORWARDING_VIEWS = {
    "/forward": "requests",
    "/async-forward": "httpx-async",
    "/stream-forward": "httpx-in-stream",
    "/async-stream-forward": "httpx-async-in-stream",
}
CONCURRENT_CLIENTS = 16
REQUESTS_PER_CLIENT = 8
STARTUP_SECONDS = 60.0


@dataclass
class Served:
    server: str
    url: str
    log_path: Path

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()


@contextlib.contextmanager
def serving(server: str) -> Iterator[Served]:
    """The test project under ``server``, stopped on the way out whatever happens."""
    with contextlib.ExitStack() as stack:
        processes = stack.enter_context(running_processes())
        project = "tests.django_project"
        if server == "runserver":
            # runserver binds its own socket: a port the OS just handed out, free again.
            with socket.socket() as probe:
                probe.bind((HOST, 0))
                port = probe.getsockname()[1]
            argv = [sys.executable, "tests/django_project/manage.py", "runserver", "--noreload"]
            processes.start(server, [*argv, f"{HOST}:{port}"])
        else:
            listener = stack.enter_context(listening_socket())
            port, fd = listener.getsockname()[1], listener.fileno()
            if server == "gunicorn-gthread":
                argv = [sys.executable, "-m", "gunicorn", "--worker-class", "gthread"]
                argv += ["--workers", "1", "--threads", "8", "--graceful-timeout", "5"]
                argv += ["--bind", f"fd://{fd}"]
                argv += [f"{project}.wsgi:application"]
            else:
                argv = [sys.executable, "-m", "uvicorn", "--fd", str(fd), "--no-access-log"]
                argv += [f"{project}.asgi:application"]
            processes.start(server, argv, pass_fds=[fd])
            listener.close()  # the child holds it now
        url = f"http://{HOST}:{port}"
        wait_until_healthy([url + "/health"], processes, STARTUP_SECONDS)
        yield Served(server, url, processes.started[0][2])


@pytest.fixture(scope="module")
def recorder() -> Iterator[RecordingServer]:
    with recording_server() as running:
        yield running


@pytest.fixture(scope="module", params=SERVERS)
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    with serving(request.param) as running:
        yield running


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as plain:  # no meshprop on this side
        yield plain


def calls_for(recorder: RecordingServer, request_id: str) -> list[Received]:
    """What the next hop received carrying ``request_id``."""
    return [call for call in recorder.received if ("x-request-id", request_id) in call.headers]


def query(call: Received) -> dict[str, str]:
    return {
        name: values[0]
        for name, values in parse_qs(urlsplit(call.path).query, keep_blank_values=True).items()
    }


def new_id(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:12]}"


@pytest.mark.parametrize("path", list(FORWARDING_VIEWS))
def test_the_next_hop_gets_the_inbound_id_and_trace(
    served: Served, recorder: RecordingServer, client: httpx.Client, path: str
) -> None:
    request_id = new_id(served.server)
    response = client.get(
        served.url + path,
        params={"to": recorder.url},
        headers={"x-request-id": request_id, **TRACE_HEADERS},
    )

    assert response.status_code == 200, response.text
    assert response.headers.get_list("x-request-id") == [request_id]
    assert request_id in response.text
    (call,) = calls_for(recorder, request_id)
    assert query(call) == {"via": FORWARDING_VIEWS[path], "for": request_id}
    forwarded = dict(call.headers)
    assert {name: forwarded.get(name) for name in TRACE_HEADERS} == TRACE_HEADERS
    assert [name for name, _ in call.headers].count("x-request-id") == 1


@pytest.mark.parametrize("path", ["/forward", "/async-stream-forward"])
def test_a_request_without_an_id_gets_a_uuid4_echoed_and_forwarded(
    served: Served, recorder: RecordingServer, client: httpx.Client, path: str
) -> None:
    response = client.get(served.url + path, params={"to": recorder.url})

    assert response.status_code == 200, response.text
    (generated,) = response.headers.get_list("x-request-id")
    assert uuid.UUID(generated).version == 4
    assert generated in response.text
    (call,) = calls_for(recorder, generated)
    assert query(call)["for"] == ""  # the inbound request had none


def test_the_id_a_view_set_is_the_only_one_on_the_wire(
    served: Served, client: httpx.Client
) -> None:
    response = client.get(served.url + "/own-id", headers={"x-request-id": new_id("own")})
    assert response.headers.get_list("x-request-id") == ["set-by-the-view"]


def test_django_s_404_and_500_echo_the_id_and_log_it(served: Served, client: httpx.Client) -> None:
    missing, failing = new_id("404"), new_id("500")

    not_found = client.get(served.url + "/no-such-page", headers={"x-request-id": missing})
    failed = client.get(served.url + "/boom", headers={"x-request-id": failing})

    assert not_found.status_code == 404
    assert not_found.headers.get_list("x-request-id") == [missing]
    assert failed.status_code == 500
    assert failed.headers.get_list("x-request-id") == [failing]
    lines = served.log_lines()
    assert f"WARNING django.request request_id={missing} trace_id=- Not Found: /no-such-page" in (
        lines
    )
    assert f"ERROR django.request request_id={failing} trace_id=- Internal Server Error: /boom" in (
        lines
    )


@pytest.mark.parametrize(
    ("server", "path"), [("gunicorn-gthread", "/forward"), ("uvicorn", "/async-forward")]
)
def test_overlapping_requests_never_see_each_other_s_id(
    server: str, path: str, recorder: RecordingServer
) -> None:
    ids = [
        new_id(f"overlap-{number}") for number in range(CONCURRENT_CLIENTS * REQUESTS_PER_CLIENT)
    ]

    with serving(server) as running:

        def send_all(batch: list[str]) -> list[tuple[str, int, list[str], str]]:
            answers = []
            with httpx.Client(base_url=running.url, timeout=60, trust_env=False) as plain:
                for request_id in batch:
                    response = plain.get(
                        path,
                        params={"to": recorder.url, "hold": "0.01"},
                        headers={"x-request-id": request_id},
                    )
                    answers.append(
                        (
                            request_id,
                            response.status_code,
                            response.headers.get_list("x-request-id"),
                            response.text,
                        )
                    )
            return answers

        batches = [ids[number::CONCURRENT_CLIENTS] for number in range(CONCURRENT_CLIENTS)]
        with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
            answers = [answer for batch in pool.map(send_all, batches) for answer in batch]
        log_lines = running.log_lines()

    peaks = []
    for request_id, status, echoed, text in answers:
        assert (status, echoed) == (200, [request_id]), text
        body = json.loads(text)
        assert body["seen"] == request_id
        peaks.append(body["in_flight_peak"])
    assert max(peaks) > 1  # the requests really overlapped
    for request_id in ids:
        (call,) = calls_for(recorder, request_id)
        assert query(call)["for"] == request_id
    # Each view's log line names the id it was called with, and ContextFilter the same one.
    logged = [
        match.groups()
        for line in log_lines
        if (match := re.search(r"request_id=(\S+) .* forwarded for (\S+)$", line))
    ]
    assert sorted(called_with for _, called_with in logged) == sorted(ids)
    assert [pair for pair in logged if pair[0] != pair[1]] == []
