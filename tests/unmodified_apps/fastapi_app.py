import os

import httpx
from fastapi import FastAPI

app = FastAPI()


@app.get("/{path:path}")
def index(path: str) -> dict[str, object]:
    status = httpx.get(os.environ["DOWNSTREAM"] + "/from-fastapi").status_code
    return {"downstream": status}
