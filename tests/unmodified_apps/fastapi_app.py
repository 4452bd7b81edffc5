import os

import httpx
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
def index() -> dict[str, object]:
    status = httpx.get(os.environ["DOWNSTREAM"] + "/from-fastapi").status_code
    return {"downstream": status}
