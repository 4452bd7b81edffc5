"""The Flask hop: meshprop's WSGI middleware in, ``meshprop.requests.Session`` out (or
``meshprop.httpx.Client`` when the chain is called with ``?flask_client=httpx``)."""

from __future__ import annotations

import socket

import waitress  # type: ignore[import-untyped]
from flask import Flask, Response, jsonify, request

import meshprop.httpx
import meshprop.requests
import meshprop.wsgi

from ._record import CHAIN_PATH, HEALTH_PATH, HopRecord, finish_record, hop_record


def build_app(name: str, next_url: str | None) -> Flask:
    app = Flask(name)
    app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    # Shared by waitress's worker threads, as in a real service.
    session = meshprop.requests.Session()
    session.trust_env = False
    http_client = meshprop.httpx.Client(timeout=10.0, trust_env=False)

    @app.get(HEALTH_PATH)
    def health() -> str:
        return "ok"

    @app.get(CHAIN_PATH)
    def chain() -> Response:
        record = hop_record(name, "Flask", "waitress", request.headers.items())
        downstream: list[HopRecord] = []
        if next_url is not None:
            url = next_url + CHAIN_PATH
            params = request.args.to_dict()
            if params.get("flask_client") == "httpx":
                answer = http_client.get(url, params=params)
                answer.raise_for_status()
                downstream = answer.json()
            else:
                reply = session.get(url, params=params, timeout=10.0)
                reply.raise_for_status()
                downstream = reply.json()
        return jsonify(finish_record(record, downstream))

    return app


def serve(name: str, next_url: str | None, listener: socket.socket) -> None:
    waitress.serve(build_app(name, next_url), sockets=[listener], threads=8, _quiet=True)
