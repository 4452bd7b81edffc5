"""The apps ``tests/test_access_logs.py`` serves from real uvicorn and gunicorn processes.

``asgi`` and ``wsgi`` serve the requests of ``tests.logging_scenarios`` (each process serves the
overlapping pair once); the FastAPI apps answer ``/boom`` with Starlette's 500, under either
install of the middleware.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import fastapi

from meshprop import asgi as meshprop_asgi
from meshprop import wsgi as meshprop_wsgi
from tests.logging_scenarios import WAIT_SECONDS, scenario_app

_app_log = logging.getLogger("app")

asgi = meshprop_asgi.MeshPropMiddleware(scenario_app(_app_log.info))


def _fastapi() -> fastapi.FastAPI:
    app = fastapi.FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    return app


fastapi_added = _fastapi()
fastapi_added.add_middleware(meshprop_asgi.MeshPropMiddleware)
fastapi_wrapped = meshprop_asgi.MeshPropMiddleware(_fastapi())

_first_started = threading.Event()
_second_started = threading.Event()
_first_finished = threading.Event()


def _wait(event: threading.Event) -> None:
    if not event.wait(WAIT_SECONDS):
        raise RuntimeError("the other request of the pair never came")


def _wsgi_scenario(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The WSGI twin of ``scenario_app``, for gunicorn's threads."""
    path = environ["PATH_INFO"]
    if path == "/first":
        _first_started.set()
        _wait(_second_started)
        _first_finished.set()
    elif path == "/second":
        _wait(_first_started)
        _second_started.set()
        _wait(_first_finished)
    start_response("200 OK", [("content-length", "0")])
    return [b""]


wsgi = meshprop_wsgi.MeshPropMiddleware(_wsgi_scenario)
