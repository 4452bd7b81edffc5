"""The Flask hop: meshprop's WSGI middleware in, ``meshprop.requests.Session`` out (or
``meshprop.httpx.Client`` when the chain is called with ``?flask_client=httpx``)."""

from __future__ import annotations

import socket
from collections.abc import Callable

import waitress  # type: ignore[import-untyped]
from flask import Flask, Response, jsonify, request

import meshprop.httpx
import meshprop.requests
import meshprop.wsgi

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record


def build_hop(name: str, call_downstream: Callable[[], list[HopRecord]]) -> Flask:
    """A Flask hop behind meshprop's WSGI middleware: ``/chain`` records what it received and
    appends what ``call_downstream`` (called inside the request) got from the next hop."""
    app = Flask(name)
    app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]

    @app.get(HEALTH_PATH)
    def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    def chain() -> Response:
        record = hop_record(name, "Flask", "waitress", request.headers.items())
        return jsonify(finish_record(record, call_downstream()))

    return app


def serve_app(app: Flask, listener: socket.socket) -> None:
    """Serve ``app`` on waitress from the listening socket the launcher handed over."""
    waitress.serve(app, sockets=[listener], threads=8, _quiet=True)


def build_app(name: str, next_url: str | None) -> Flask:
    """The hop that calls the next one with ``meshprop.requests.Session`` (or
    ``meshprop.httpx.Client``), each one shared by waitress's worker threads, as in a real
    service."""
    session = meshprop.requests.Session()
    session.trust_env = False
    http_client = meshprop.httpx.Client(timeout=10.0, trust_env=False)

    def call_next() -> list[HopRecord]:
        if next_url is None:
            return []
        url = next_url + CHAIN_PATH
        params = request.args.to_dict()
        if params.get("flask_client") == "httpx":
            answer = http_client.get(url, params=params)
            answer.raise_for_status()
            from_httpx: list[HopRecord] = answer.json()
            return from_httpx
        reply = session.get(url, params=params, timeout=10.0)
        reply.raise_for_status()
        from_requests: list[HopRecord] = reply.json()
        return from_requests

    return build_hop(name, call_next)


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    serve_app(build_app(name, next_url), listener)
