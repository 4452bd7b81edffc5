import os

import requests
from flask import Flask

app = Flask(__name__)


@app.get("/", defaults={"path": ""})
@app.get("/<path:path>")
def index(path: str) -> dict[str, object]:
    session = requests.Session()
    session.trust_env = False
    return {"downstream": session.get(os.environ["DOWNSTREAM"] + "/from-flask").status_code}
