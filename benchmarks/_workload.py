"""The request every benchmark sends: Istio's propagation headers plus ordinary ones.

One definition for every suite, so the ASGI, WSGI, aiohttp and outbound numbers all describe the
same request: what a sidecar hands an application inside the mesh.
"""

from __future__ import annotations

import io
from typing import Any

import meshprop

#: The headers Istio's sidecar sends and asks the application to forward (valid values).
ISTIO_HEADERS: tuple[tuple[str, str], ...] = (
    ("x-request-id", "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ("x-b3-parentspanid", "00f067aa0ba902b7"),
    ("x-b3-sampled", "1"),
)

#: What else a real request carries, none of it forwarded.
ORDINARY_HEADERS: tuple[tuple[str, str], ...] = (
    ("host", "orders.shop.svc.cluster.local:8080"),
    ("user-agent", "python-httpx/0.28.1"),
    ("accept", "application/json"),
    ("accept-encoding", "gzip, deflate"),
    ("content-type", "application/json"),
    ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjdXN0b21lci00MiJ9.c2lnbmF0dXJl"),
    ("x-forwarded-proto", "http"),
    ("x-envoy-attempt-count", "1"),
)

REQUEST_HEADERS: tuple[tuple[str, str], ...] = (
    ORDINARY_HEADERS[:2] + ISTIO_HEADERS + ORDINARY_HEADERS[2:]
)
ISTIO_NAMES: tuple[str, ...] = tuple(name for name, _ in ISTIO_HEADERS)
ISTIO_NAMES_BYTES: frozenset[bytes] = frozenset(name.encode("ascii") for name in ISTIO_NAMES)
PATH = "/api/orders"

#: The trace id a handler reads for this request (B3's, the same as traceparent's).
TRACE_ID = dict(ISTIO_HEADERS)["x-b3-traceid"]


class HandlerRead:
    """What the last ``meshprop-read`` handler read, for the check made before timing it."""

    headers: dict[str, str] | None = None
    trace_id: str | None = None


def read_forwarded_headers() -> None:
    """What a handler that forwards does once: the headers as a dict, and the trace id."""
    HandlerRead.headers = dict(meshprop.current())
    HandlerRead.trace_id = meshprop.trace_id()


READ_DESCRIPTION = (
    "the same, and the handler reads once: dict(meshprop.current()) and meshprop.trace_id() "
    "(the snapshot's dict and ids are built on first use)"
)


INSTRUMENTED_DESCRIPTION = "no middleware: the app made and served after meshprop.instrument()"
INSTRUMENTED_READ_DESCRIPTION = "the same, and the handler reads once as in meshprop-read"


def forget_handler_read() -> None:
    """Before a checked request: so that only what its handler reads can pass the check."""
    HandlerRead.headers = HandlerRead.trace_id = None


def check_handler_read(name: str) -> None:
    """Raise unless the handler read exactly the Istio headers and their trace id."""
    headers, trace_id = HandlerRead.headers, HandlerRead.trace_id
    if headers != dict(ISTIO_HEADERS) or trace_id != TRACE_ID:
        raise RuntimeError(f"{name}: the handler read {headers!r} and trace id {trace_id!r}")


#: An in-mesh destination for outbound calls (a single-label host is inside meshprop's scope).
OUTBOUND_URL = "http://payment-service:8080/api/charges"


def asgi_scope() -> dict[str, Any]:
    """A fresh ``http`` scope as uvicorn builds it (ASGI 3, lower-case byte header names)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode("ascii"),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in REQUEST_HEADERS
        ],
        "client": ("10.0.3.17", 43210),
        "server": ("10.0.3.20", 8080),
        "state": {},
    }


_ENVIRON_TEMPLATE: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "PATH_INFO": PATH,
    "QUERY_STRING": "",
    "SERVER_NAME": "orders.shop.svc.cluster.local",
    "SERVER_PORT": "8080",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "10.0.3.17",
    "REMOTE_PORT": "43210",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": io.StringIO(),
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "CONTENT_LENGTH": "0",
}
for _name, _value in REQUEST_HEADERS:
    if _name == "content-type":
        _ENVIRON_TEMPLATE["CONTENT_TYPE"] = _value
    else:
        _ENVIRON_TEMPLATE["HTTP_" + _name.upper().replace("-", "_")] = _value


def wsgi_environ() -> dict[str, Any]:
    """A fresh WSGI environ as a threaded WSGI server builds it."""
    environ = dict(_ENVIRON_TEMPLATE)
    environ["wsgi.input"] = io.BytesIO(b"")
    return environ
