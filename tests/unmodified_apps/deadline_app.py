"""A FastAPI service that calls a slower one, written without meshprop: under ``meshprop-run``
with ``MESHPROP_CAP_TIMEOUTS=true`` its call gives up when its caller stops waiting.

``/quote`` calls the downstream ``/slow`` with a 10 s timeout of its own; ``/last`` tells how the
latest such call ended (nothing while it is still waiting).
"""

import os
import time

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()
outcomes: list[dict[str, object]] = []


@app.get("/health")
def health() -> str:
    return "ok"


@app.get("/quote")
def quote() -> JSONResponse:
    started = time.monotonic()
    try:
        httpx.get(os.environ["DOWNSTREAM"] + "/slow", timeout=10.0)
    except httpx.TimeoutException as error:
        outcomes.append({"error": type(error).__name__, "after": time.monotonic() - started})
        return JSONResponse({"error": type(error).__name__}, status_code=504)
    outcomes.append({"error": None, "after": time.monotonic() - started})
    return JSONResponse({"answered": True})


@app.get("/last")
def last() -> dict[str, object]:
    return outcomes[-1] if outcomes else {}
