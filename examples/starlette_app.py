"""Starlette + meshprop, installed outermost, so even the 500 of an unhandled error carries
the request id.

    DOWNSTREAM_URL=http://reviews:9080 uvicorn examples.starlette_app:app --port 9080
"""

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import meshprop
import meshprop.asgi
import meshprop.httpx

DOWNSTREAM_URL = os.environ.get("DOWNSTREAM_URL", "http://reviews:9080")


async def index(request: Request) -> JSONResponse:
    return JSONResponse({"request_id": meshprop.request_id(), "trace_id": meshprop.trace_id()})


async def call(request: Request) -> JSONResponse:
    async with meshprop.httpx.AsyncClient(timeout=5.0) as client:  # forwards the mesh headers
        reply = await client.get(f"{DOWNSTREAM_URL}/")
    return JSONResponse({"request_id": meshprop.request_id(), "downstream": reply.json()})


app = meshprop.asgi.MeshPropMiddleware(  # the one line
    Starlette(routes=[Route("/", index), Route("/call", call)])
)
