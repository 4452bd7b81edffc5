"""A real HTTP server on 127.0.0.1 that records what each request carried.

The client tests look at meshprop from the far end of a socket, as the next hop in the mesh
would: only there do the headers the client library itself adds, merges or drops on the way
(redirect hops, connection reuse) show up. One server for every such test, so they all read the
same record.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import urlsplit


class Received(NamedTuple):
    """One request as the server got it. Names are lower-cased (HTTP does not care, the tests
    compare names); a repeated header stays repeated, so a test can see it was sent twice."""

    method: str
    path: str
    headers: list[tuple[str, str]]


#: Builds the JSON body of a 200 answer from the request, for a caller that reads the headers
#: back from the response rather than from the server.
Echo = Callable[[Received], Any]


class RecordingServer(ThreadingHTTPServer):
    """Answers a request for a path in ``redirects`` with a 302 to its location, any other with
    200 and ``ok`` (or ``echo``'s JSON), and appends every request to ``received``. A request
    for a path in ``delays`` waits that many seconds first (ended early when the server stops):
    a service that answers later than its caller will wait.

    ``redirects`` is a plain dict on purpose: a test can add a hop back to this server once
    ``url`` is known.
    """

    # A client that keeps a connection alive must not hold up the shutdown: handler threads are
    # daemons and server_close does not wait for them.
    daemon_threads = True
    block_on_close = False

    def __init__(
        self,
        redirects: Mapping[str, str] | None = None,
        echo: Echo | None = None,
        delays: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.redirects = dict(redirects or {})
        self.echo = echo
        self.delays = dict(delays or {})
        self.stopping = threading.Event()
        self.received: list[Received] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def headers(self, index: int = -1) -> dict[str, str]:
        """One request's headers by name (a repeated name keeps its last value)."""
        return dict(self.received[index].headers)


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients are used in production
    # Headers and body leave in two writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK on a kept-alive connection, tens of milliseconds a request.
    disable_nagle_algorithm = True

    def _answer(self) -> None:
        # Read any body, so that the next request on a kept-alive connection starts clean.
        self.rfile.read(int(self.headers.get("content-length") or 0))
        request = Received(
            self.command, self.path, [(name.lower(), value) for name, value in self.headers.items()]
        )
        self.server.received.append(request)
        path = urlsplit(self.path).path
        delay = self.server.delays.get(path)
        if delay is not None and self.server.stopping.wait(delay):
            self.close_connection = True  # stopped while waiting: no answer, the client sees EOF
            return
        location = self.server.redirects.get(path)
        if location is not None:
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        echo = self.server.echo
        body = b"ok" if echo is None else json.dumps(echo(request)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain" if echo is None else "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output quiet


@contextlib.contextmanager
def recording_server(
    *,
    redirects: Mapping[str, str] | None = None,
    echo: Echo | None = None,
    delays: Mapping[str, float] | None = None,
) -> Iterator[RecordingServer]:
    """Serve from a background thread for the ``with`` block, and stop however the block ends.

    Every step of the stop is bounded: the serve loop polls every 50 ms, handler threads are not
    waited for, and the join has a timeout.
    """
    server = RecordingServer(redirects, echo, delays)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
