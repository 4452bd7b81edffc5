"""The previous request's id must not reach the next request on a keep-alive connection.

uvicorn starts the next request on a connection from inside the previous request's task (after
its last body message, for a pipelined request; through the socket reader it re-arms while the
app reads a large body, for a later one), so that task starts with the previous request's
snapshot in its context, and resetting the context at the end of the request brings it back.
The server's "Exception in ASGI application" record and a Starlette ``Exception`` handler outside
the middleware then ran with the previous request's id. Each test here is one way of reaching
the second request, over a real server in a subprocess on a raw socket; hypercorn, which starts
every request from its connection's own task, is the control.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.asgi_apps import INSTALLS

SERVERS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn")
#: The record each server logs for an exception that escapes the app.
ERROR_MESSAGES = {
    "uvicorn-h11": "Exception in ASGI application",
    "uvicorn-httptools": "Exception in ASGI application",
    "hypercorn": "Error in ASGI Framework",
}
SOCKET_SECONDS = 10.0
STOP_SECONDS = 10.0
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Service:
    server: str
    address: tuple[str, int]
    log: list[str] = field(default_factory=list)  # filled once the server has stopped

    def error_lines(self) -> list[str]:
        message = ERROR_MESSAGES[self.server]
        return [line for line in self.log if line.endswith(message)]


@contextmanager
def serving(server: str, install: str) -> Iterator[Service]:
    """``tests.keepalive_server`` in a subprocess, on a socket listening before it starts."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen(16)
    fd = listening.fileno()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.keepalive_server", server, install, str(fd)],
        cwd=ROOT,
        pass_fds=[fd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    service = Service(server, listening.getsockname())
    listening.close()  # the server holds its own copy
    try:
        yield service
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate(timeout=STOP_SECONDS)
        service.log = stderr.splitlines()
        sys.stderr.write(stderr)  # shown by pytest when the test fails


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def request_ids(self) -> list[str]:
        return self.headers.get("x-request-id", [])


def request(method: str, path: str, request_id: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nx-request-id: {request_id}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


def read_response(stream: io.BufferedReader) -> Response:
    """One response with a Content-Length body (every route here answers with one)."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers: dict[str, list[str]] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    body = stream.read(int(headers["content-length"][0]))
    return Response(int(status_line.split()[1]), headers, body)


@contextmanager
def connection(service: Service) -> Iterator[tuple[socket.socket, io.BufferedReader]]:
    with (
        socket.create_connection(service.address, timeout=SOCKET_SECONDS) as sock,
        sock.makefile("rb") as stream,
    ):
        yield sock, stream


@pytest.fixture(params=INSTALLS)
def install(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("server", SERVERS)
def test_pipelined_request_that_fails_is_logged_and_answered_with_its_own_id(
    server: str, install: str
) -> None:
    with serving(server, install) as service, connection(service) as (sock, stream):
        sock.sendall(request("GET", "/id", "first") + request("GET", "/boom", "second"))
        first = read_response(stream)
        second = read_response(stream)

    assert (first.status, first.body, first.request_ids()) == (200, b"first", ["first"])
    assert (second.status, second.request_ids()) == (500, ["second"])
    assert service.error_lines() == [f"second {ERROR_MESSAGES[server]}"]


@pytest.mark.parametrize("server", SERVERS)
def test_request_after_a_large_upload_is_logged_and_answered_with_its_own_id(
    server: str, install: str
) -> None:
    upload = b"x" * (1024 * 1024)  # far past the size at which uvicorn pauses reading
    with serving(server, install) as service, connection(service) as (sock, stream):
        sock.sendall(request("POST", "/upload", "first", upload))
        first = read_response(stream)
        sock.sendall(request("GET", "/boom", "second"))
        second = read_response(stream)

    assert (first.status, first.body, first.request_ids()) == (200, b"1048576", ["first"])
    assert (second.status, second.request_ids()) == (500, ["second"])
    assert service.error_lines() == [f"second {ERROR_MESSAGES[server]}"]
