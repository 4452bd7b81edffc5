"""The apps uvicorn serves for the socket benchmark: one Starlette app, bare and with meshprop.

Targets for ``uvicorn benchmarks._socket_apps:bare`` and ``…:meshprop_app``.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from ._workload import PATH


async def _orders(request: Any) -> JSONResponse:
    return JSONResponse({"order": 42, "status": "paid"})


def _app() -> Starlette:
    return Starlette(routes=[Route(PATH, _orders)])


bare = _app()


def __getattr__(name: str) -> Any:
    # Built only when asked for, so serving `bare` needs no meshprop adapter.
    if name == "meshprop_app":
        import meshprop.asgi

        app = _app()
        app.add_middleware(meshprop.asgi.MeshPropMiddleware)
        return app
    raise AttributeError(name)
