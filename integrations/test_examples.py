"""The example apps import, serve a request, and forward the mesh headers on their outbound
call (to a real HTTP server on 127.0.0.1); the Istio manifests parse and agree with each other."""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
import yaml
from aiohttp.test_utils import TestClient as AiohttpTestClient
from aiohttp.test_utils import TestServer
from flask.testing import FlaskClient

from tests.recording_server import recording_server

from ._mesh import PROJECT_ROOT, listening_socket
from ._report import ISTIO_HEADERS
from .services._record import received_headers

EXAMPLES = PROJECT_ROOT / "examples"


@pytest.fixture(scope="module")
def downstream_url() -> Iterator[str]:
    """The next hop: answers with the propagation headers it received."""
    with recording_server(
        echo=lambda request: {"received": received_headers(request.headers)}
    ) as server:
        yield server.url


def _load(name: str, downstream_url: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("DOWNSTREAM_URL", downstream_url)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    """Serve an ASGI app on real uvicorn in a thread, lifespan included."""
    listener = listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.mark.parametrize("name", ["fastapi_app", "starlette_app"])
def test_asgi_example_forwards_headers(
    name: str, downstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _load(name, downstream_url, monkeypatch)
    with (
        _uvicorn(example.app) as base_url,
        httpx.Client(base_url=base_url, trust_env=False) as client,
    ):
        called = client.get("/call", headers=ISTIO_HEADERS)
        alone = client.get("/")

    assert called.json()["downstream"]["received"] == ISTIO_HEADERS
    assert called.headers["x-request-id"] == ISTIO_HEADERS["x-request-id"]
    assert alone.json()["request_id"] == alone.headers["x-request-id"]


def test_flask_example_forwards_headers(
    downstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _load("flask_app", downstream_url, monkeypatch)
    client: FlaskClient = example.app.test_client()
    called = client.get("/call", headers=ISTIO_HEADERS)
    alone = client.get("/")

    assert called.json is not None and alone.json is not None
    assert called.json["downstream"]["received"] == ISTIO_HEADERS
    assert called.headers["x-request-id"] == ISTIO_HEADERS["x-request-id"]
    assert alone.json["request_id"] == alone.headers["x-request-id"]


async def test_aiohttp_example_forwards_headers(
    downstream_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = _load("aiohttp_app", downstream_url, monkeypatch)
    async with AiohttpTestClient(TestServer(example.make_app())) as client:
        called = await client.get("/call", headers=ISTIO_HEADERS)
        alone = await client.get("/")
        called_body, alone_body = await called.json(), await alone.json()

    assert called_body["downstream"]["received"] == ISTIO_HEADERS
    assert called.headers["x-request-id"] == ISTIO_HEADERS["x-request-id"]
    assert alone_body["request_id"] == alone.headers["x-request-id"]


def _manifests() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted((EXAMPLES / "istio").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def _by_kind(documents: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def test_istio_manifests_parse_and_refer_to_each_other() -> None:
    documents = _manifests()
    for doc in documents:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), doc

    deployments = _by_kind(documents, "Deployment")
    services = _by_kind(documents, "Service")
    assert len(deployments) == len(services) == 2
    pod_labels = {
        name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments.items()
    }
    for name, deployment in deployments.items():
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels[name].items()
        assert {"app", "version"} <= pod_labels[name].keys()  # what Istio's telemetry keys on
    for service in services.values():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels.values())
        assert all(port["name"].startswith("http") for port in service["spec"]["ports"])

    for deployment in deployments.values():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for variable in container.get("env", []):
                if variable["name"] == "DOWNSTREAM_URL":
                    host, port = (
                        urlsplit(variable["value"]).hostname,
                        urlsplit(variable["value"]).port,
                    )
                    assert host in services
                    assert port in {p["port"] for p in services[host]["spec"]["ports"]}

    rules = _by_kind(documents, "DestinationRule")
    for rule in rules.values():
        assert rule["spec"]["host"] in services
        assert rule["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
        for subset in rule["spec"]["subsets"]:
            assert any(subset["labels"].items() <= labels.items() for labels in pod_labels.values())
    for virtual_service in _by_kind(documents, "VirtualService").values():
        for route in virtual_service["spec"]["http"][0]["route"]:
            destination = route["destination"]
            assert destination["host"] in services
            subsets = {s["name"] for s in rules[destination["host"]]["spec"]["subsets"]}
            assert destination["subset"] in subsets

    (peer_authentication,) = _by_kind(documents, "PeerAuthentication").values()
    assert peer_authentication["spec"]["mtls"]["mode"] == "STRICT"
