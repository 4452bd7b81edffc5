"""FastAPI + meshprop: one line in, one shared client out.

DOWNSTREAM_URL=http://reviews:9080 uvicorn examples.fastapi_app:app --port 9080
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request

import meshprop
import meshprop.asgi
import meshprop.httpx

DOWNSTREAM_URL = os.environ.get("DOWNSTREAM_URL", "http://reviews:9080")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with meshprop.httpx.AsyncClient(timeout=5.0) as client:  # forwards the mesh headers
        app.state.http = client
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(meshprop.asgi.MeshPropMiddleware)  # the one line


@app.get("/")
async def index() -> dict[str, Any]:
    return {"request_id": meshprop.request_id(), "trace_id": meshprop.trace_id()}


@app.get("/call")
async def call(request: Request) -> dict[str, Any]:
    reply = await request.app.state.http.get(f"{DOWNSTREAM_URL}/")
    return {"request_id": meshprop.request_id(), "downstream": reply.json()}
