"""Flask + meshprop: wrap ``wsgi_app`` once; ``meshprop.requests.Session`` forwards the headers.

DOWNSTREAM_URL=http://ratings:9080 waitress-serve --port 9080 examples.flask_app:app
"""

import os
from typing import Any

from flask import Flask

import meshprop
import meshprop.requests
import meshprop.wsgi

DOWNSTREAM_URL = os.environ.get("DOWNSTREAM_URL", "http://ratings:9080")

app = Flask(__name__)
app.wsgi_app = meshprop.wsgi.MeshPropMiddleware(app.wsgi_app)  # type: ignore[method-assign]
session = meshprop.requests.Session()  # a drop-in requests.Session, safe to share


@app.get("/")
def index() -> dict[str, Any]:
    return {"request_id": meshprop.request_id(), "trace_id": meshprop.trace_id()}


@app.get("/call")
def call() -> dict[str, Any]:
    reply = session.get(f"{DOWNSTREAM_URL}/", timeout=5.0)
    return {"request_id": meshprop.request_id(), "downstream": reply.json()}


if __name__ == "__main__":
    app.run(port=9080)
