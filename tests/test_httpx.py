"""meshprop.httpx: Client and AsyncClient forward the propagation headers.

Every behaviour is written once and checked for both clients: the ``api`` fixture runs the sync
client's calls directly and awaits the async client's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest

import meshprop
import meshprop.httpx as mhttpx
from tests.recording_server import RecordingServer, recording_server

# What an Istio sidecar hands an application, verbatim values a rewrite would change: a 64-bit
# B3 trace id (not padded), an Envoy request id whose version nibble carries sampling (not a
# valid UUID4), a debug flag.
ISTIO = {
    "x-request-id": "4d1ad0a2-3b7e-9c44-b1a3-0fbd53b1e2c7",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
    "b3": "a3ce929d0e0e4736-00f067aa0ba902b7-1-5b4185666d50f68b",
    "x-b3-traceid": "a3ce929d0e0e4736",
    "x-b3-spanid": "00f067aa0ba902b7",
    "x-b3-parentspanid": "5b4185666d50f68b",
    "x-b3-sampled": "1",
    "x-b3-flags": "1",
}
NAMES = frozenset(ISTIO)


class Sent:
    """What a transport or server received: the URL, and the header pairs exactly as sent."""

    def __init__(self, url: str, pairs: list[tuple[str, str]], body: bytes = b"") -> None:
        self.url = url
        self.pairs = pairs
        self.body = body

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key.lower() == name]

    def forwarded(self) -> dict[str, str]:
        """The propagation headers it carried, each exactly once."""
        found: dict[str, str] = {}
        for key, value in self.pairs:
            if key.lower() in NAMES:
                assert key.lower() not in found, f"{key} sent twice"
                found[key.lower()] = value
        return found


class Recorder:
    """A MockTransport handler (sync or async client alike) recording every request.

    ``?to=<url>`` answers with a 302 to that URL, so redirect chains cross hosts.
    """

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        self.sent.append(Sent(str(request.url), pairs, request.content))
        target = request.url.params.get("to")
        if target:
            return httpx.Response(302, headers={"location": target})
        return httpx.Response(200, text="ok")

    @property
    def last(self) -> Sent:
        return self.sent[-1]


class Api:
    """One test body for both clients: sync calls run as they are, async calls are awaited."""

    def __init__(self, kind: str) -> None:
        self.is_async = kind == "async"
        self._clients: list[httpx.Client | httpx.AsyncClient] = []

    def client(self, **kwargs: Any) -> Any:
        cls = mhttpx.AsyncClient if self.is_async else mhttpx.Client
        client = cls(**kwargs)
        self._clients.append(client)
        return client

    def recording_client(self, **kwargs: Any) -> tuple[Any, Recorder]:
        recorder = Recorder()
        return self.client(transport=httpx.MockTransport(recorder), **kwargs), recorder

    async def request(self, client: Any, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self.is_async:
            return await client.request(method, url, **kwargs)  # type: ignore[no-any-return]
        return client.request(method, url, **kwargs)  # type: ignore[no-any-return]

    async def get(self, client: Any, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request(client, "GET", url, **kwargs)

    async def send(self, client: Any, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        if self.is_async:
            return await client.send(request, **kwargs)  # type: ignore[no-any-return]
        return client.send(request, **kwargs)  # type: ignore[no-any-return]

    async def stream(self, client: Any, method: str, url: str, **kwargs: Any) -> bytes:
        """``client.stream(...)``, reading the response body chunk by chunk."""
        chunks: list[bytes] = []
        if self.is_async:
            async with client.stream(method, url, **kwargs) as response:
                async for chunk in response.aiter_bytes():
                    chunks.append(chunk)
        else:
            with client.stream(method, url, **kwargs) as response:
                for chunk in response.iter_bytes():
                    chunks.append(chunk)
        return b"".join(chunks)

    def body(self, chunks: list[bytes]) -> Any:
        """A streaming request body of the kind the client takes."""
        if self.is_async:

            async def agen() -> AsyncIterator[bytes]:
                for chunk in chunks:
                    yield chunk

            return agen()

        def gen() -> Iterator[bytes]:
            yield from chunks

        return gen()

    def hook(self, fn: Callable[[Any], None]) -> Callable[[Any], Any]:
        """An event hook of the kind the client takes (async clients await theirs)."""
        if self.is_async:

            async def ahook(item: Any) -> None:
                fn(item)

            return ahook
        return fn

    async def close(self) -> None:
        for client in self._clients:
            if isinstance(client, httpx.AsyncClient):
                await client.aclose()
            else:
                client.close()


@pytest.fixture(autouse=True, params=["accelerated", "public Headers API"])
def headers_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: with the headers appended to ``Headers``' own list, and through the
    public ``Headers`` API alone (what runs if httpx ever changes that list)."""
    if request.param != "accelerated":
        monkeypatch.setattr(mhttpx, "_LIST_LAYOUT", False)
    return str(request.param)


@pytest.fixture(params=["sync", "async"])
async def api(request: pytest.FixtureRequest) -> AsyncIterator[Api]:
    api = Api(request.param)
    yield api
    await api.close()


# -- forwarding and scope ---------------------------------------------------------------------


async def test_forwards_every_istio_header_verbatim_inside_bind(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        response = await api.get(client, "http://payment-service/charge")
    assert response.status_code == 200
    assert recorder.last.forwarded() == ISTIO
    # what was sent is what response.request shows: the headers are on the request itself
    assert {k: response.request.headers[k] for k in ISTIO} == ISTIO


async def test_drop_in_subclasses() -> None:
    assert issubclass(mhttpx.Client, httpx.Client)
    assert issubclass(mhttpx.AsyncClient, httpx.AsyncClient)
    assert meshprop.httpx.Client is mhttpx.Client  # the lazy attribute of the package


async def test_outside_a_request_nothing_is_added(api: Api) -> None:
    client, recorder = api.recording_client()
    response = await api.get(client, "http://payment-service/")
    assert response.status_code == 200
    assert recorder.last.forwarded() == {}


@pytest.mark.parametrize(
    "url",
    [
        "http://payment-service/",
        "http://x.svc.cluster.local/a",
        "http://127.0.0.1:8080/",
        "http://[::1]:8080/",
        "http://LOCALHOST/",
    ],
)
async def test_in_scope_destinations_get_the_headers(api: Api, url: str) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, url)
    assert recorder.last.forwarded() == ISTIO


@pytest.mark.parametrize("url", ["https://api.example.com/v1", "http://api.example.com:8080/"])
async def test_out_of_scope_destinations_get_nothing(api: Api, url: str) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, url)
    assert recorder.last.forwarded() == {}


async def test_config_widens_the_scope_and_the_header_set(api: Api) -> None:
    config = meshprop.Config(scope=("mesh", "api.example.com"), extra_headers=("x-canary",))
    client, recorder = api.recording_client(config=config)
    with meshprop.bind({**ISTIO, "X-Canary": "blue"}, config=config):
        await api.get(client, "https://api.example.com/")
    assert recorder.last.values("x-canary") == ["blue"]
    assert recorder.last.forwarded() == ISTIO


async def test_each_request_forwards_its_own_ids(api: Api) -> None:
    client, recorder = api.recording_client()
    for request_id in ("first-request", "second-request"):
        with meshprop.bind({"x-request-id": request_id}):
            await api.get(client, "http://payment-service/")
        assert recorder.last.values("x-request-id") == [request_id]


async def test_many_requests_in_a_row_never_see_an_earlier_ones_headers(api: Api) -> None:
    # more snapshots than meshprop keeps encoded, so ids of freed snapshots get reused
    client, recorder = api.recording_client()
    for n in range(600):
        with meshprop.bind({"x-request-id": f"request-{n}"}):
            await api.get(client, "http://payment-service/")
        assert recorder.last.values("x-request-id") == [f"request-{n}"]


async def test_concurrent_requests_on_one_client_keep_their_ids() -> None:
    recorder = Recorder()
    async with mhttpx.AsyncClient(transport=httpx.MockTransport(recorder)) as client:

        async def serve(request_id: str) -> None:
            with meshprop.bind({"x-request-id": request_id}):
                for _ in range(3):
                    await client.get(f"http://payment-service/{request_id}")
                    await asyncio.sleep(0)

        await asyncio.gather(*(serve(f"id-{n}") for n in range(5)))
    assert len(recorder.sent) == 15
    for sent in recorder.sent:
        assert sent.values("x-request-id") == [sent.url.rsplit("/", 1)[1]]


# -- the caller wins --------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["x-request-id", "X-Request-ID", "X-REQUEST-ID"])
async def test_a_request_header_the_caller_set_wins_in_any_case(api: Api, spelling: str) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/", headers={spelling: "callers-own"})
    assert recorder.last.values("x-request-id") == ["callers-own"]
    assert recorder.last.forwarded() == {**ISTIO, "x-request-id": "callers-own"}


async def test_a_client_default_header_wins(api: Api) -> None:
    traceparent = "00-11111111111111111111111111111111-2222222222222222-00"
    client, recorder = api.recording_client(headers={"TraceParent": traceparent})
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/")
    assert recorder.last.values("traceparent") == [traceparent]
    # The caller's trace context replaces the forwarded one as a whole: one trace per call.
    assert recorder.last.forwarded() == {
        "x-request-id": ISTIO["x-request-id"],
        "traceparent": traceparent,
    }


@pytest.mark.parametrize("name", ["traceparent", "b3", "X-B3-TraceId", "x-b3-spanid"])
async def test_a_caller_trace_header_replaces_the_forwarded_trace_context(
    api: Api, name: str
) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/", headers={name: "callers-own"})
    assert recorder.last.forwarded() == {
        "x-request-id": ISTIO["x-request-id"],
        name.lower(): "callers-own",
    }


async def test_a_request_header_wins_over_the_client_default_and_meshprop(api: Api) -> None:
    client, recorder = api.recording_client(headers={"x-b3-sampled": "0"})
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/", headers={"X-B3-Sampled": "1"})
    assert recorder.last.values("x-b3-sampled") == ["1"]


# -- opting out -------------------------------------------------------------------------------


async def test_a_request_can_opt_out(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/", extensions={"meshprop": False})
        assert recorder.last.forwarded() == {}
        await api.get(client, "http://payment-service/")
        assert recorder.last.forwarded() == ISTIO


async def test_only_the_value_false_opts_out(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/", extensions={"meshprop": True})
        assert recorder.last.forwarded() == ISTIO
        await api.get(client, "http://payment-service/", extensions={"other": False})
        assert recorder.last.forwarded() == ISTIO


async def test_the_opt_out_holds_across_redirects(api: Api) -> None:
    client, recorder = api.recording_client(follow_redirects=True)
    with meshprop.bind(ISTIO):
        await api.get(
            client,
            "http://payment-service/?to=http://ledger.svc/",
            extensions={mhttpx.OPT_OUT: False},
        )
    assert [sent.forwarded() for sent in recorder.sent] == [{}, {}]


# -- every way of sending ---------------------------------------------------------------------


async def test_client_stream(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        body = await api.stream(client, "GET", "http://payment-service/")
    assert body == b"ok"
    assert recorder.last.forwarded() == ISTIO


async def test_streaming_request_body(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        await api.request(
            client, "POST", "http://payment-service/upload", content=api.body([b"ab", b"cd"])
        )
        await api.stream(client, "PUT", "http://payment-service/upload", content=api.body([b"e"]))
    first, second = recorder.sent
    assert (first.body, second.body) == (b"abcd", b"e")
    assert first.values("transfer-encoding") == ["chunked"]
    assert first.forwarded() == second.forwarded() == ISTIO


async def test_send_of_a_request_from_build_request(api: Api) -> None:
    client, recorder = api.recording_client()
    with meshprop.bind(ISTIO):
        request = client.build_request("POST", "http://payment-service/", json={"n": 1})
        assert {k: request.headers[k] for k in ISTIO} == ISTIO  # visible before sending
        await api.send(client, request)
    assert recorder.last.forwarded() == ISTIO
    assert recorder.last.body == b'{"n":1}'


async def test_a_request_built_by_hand_is_sent_as_is(api: Api) -> None:
    # as httpx does with the client's default headers: send() does not change a Request
    client, recorder = api.recording_client(headers={"x-client-default": "1"})
    with meshprop.bind(ISTIO):
        await api.send(client, httpx.Request("GET", "http://payment-service/"))
    assert recorder.last.forwarded() == {}
    assert recorder.last.values("x-client-default") == []


# -- redirects --------------------------------------------------------------------------------


async def test_redirect_out_of_scope_drops_the_headers_meshprop_added(api: Api) -> None:
    client, recorder = api.recording_client(follow_redirects=True)
    with meshprop.bind(ISTIO):
        response = await api.get(client, "http://payment-service/?to=https://api.example.com/cb")
    assert response.status_code == 200
    inside, outside = recorder.sent
    assert inside.forwarded() == ISTIO
    assert outside.url == "https://api.example.com/cb"
    assert outside.forwarded() == {}


async def test_redirect_out_of_scope_keeps_the_callers_own_headers(api: Api) -> None:
    client, recorder = api.recording_client(follow_redirects=True)
    with meshprop.bind(ISTIO):
        await api.get(
            client,
            "http://payment-service/?to=https://api.example.com/cb",
            headers={"X-Request-Id": "callers-own"},
        )
    inside, outside = recorder.sent
    assert inside.forwarded() == {**ISTIO, "x-request-id": "callers-own"}
    assert outside.forwarded() == {"x-request-id": "callers-own"}


async def test_redirect_into_scope_adds_the_headers(api: Api) -> None:
    client, recorder = api.recording_client(follow_redirects=True)
    with meshprop.bind(ISTIO):
        await api.get(client, "https://api.example.com/?to=http://payment-service/cb")
    outside, inside = recorder.sent
    assert outside.forwarded() == {}
    assert inside.forwarded() == ISTIO


async def test_redirect_within_scope_keeps_the_headers_once(api: Api) -> None:
    client, recorder = api.recording_client(follow_redirects=True)
    with meshprop.bind(ISTIO):
        await api.get(
            client,
            "http://payment-service/?to=http://ledger.svc.cluster.local/"
            "%3Fto%3Dhttps://api.example.com/",
        )
    assert [sent.forwarded() for sent in recorder.sent] == [ISTIO, ISTIO, {}]


async def test_a_redirect_followed_by_hand_is_treated_alike(api: Api) -> None:
    client, recorder = api.recording_client()  # httpx does not follow redirects by default
    with meshprop.bind(ISTIO):
        response = await api.get(client, "http://payment-service/?to=https://api.example.com/")
        assert response.status_code == 302
        assert response.next_request is not None
        await api.send(client, response.next_request)
    assert [sent.forwarded() for sent in recorder.sent] == [ISTIO, {}]


# -- httpx features still work ----------------------------------------------------------------


async def test_base_url(api: Api) -> None:
    client, recorder = api.recording_client(base_url="http://payment-service/api")
    with meshprop.bind(ISTIO):
        await api.get(client, "/charge")
    assert recorder.last.url == "http://payment-service/api/charge"
    assert recorder.last.forwarded() == ISTIO


async def test_auth(api: Api) -> None:
    client, recorder = api.recording_client(auth=("user", "secret"))
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/")
    assert recorder.last.values("authorization") == ["Basic dXNlcjpzZWNyZXQ="]
    assert recorder.last.forwarded() == ISTIO


async def test_event_hooks_see_the_forwarded_headers(api: Api) -> None:
    seen: list[str] = []
    hooks = {
        "request": [api.hook(lambda request: seen.append(request.headers["x-request-id"]))],
        "response": [api.hook(lambda response: seen.append(str(response.status_code)))],
    }
    client, recorder = api.recording_client(event_hooks=hooks)
    with meshprop.bind(ISTIO):
        await api.get(client, "http://payment-service/")
    assert seen == [ISTIO["x-request-id"], "200"]
    assert recorder.last.forwarded() == ISTIO


async def test_mounts(api: Api) -> None:
    mounted, default = Recorder(), Recorder()
    client = api.client(
        transport=httpx.MockTransport(default),
        mounts={"http://ledger.svc": httpx.MockTransport(mounted)},
    )
    with meshprop.bind(ISTIO):
        await api.get(client, "http://ledger.svc/entries")
        await api.get(client, "http://payment-service/")
    assert [sent.url for sent in mounted.sent] == ["http://ledger.svc/entries"]
    assert mounted.last.forwarded() == default.last.forwarded() == ISTIO


def test_a_missing_httpx_names_the_extra_to_install() -> None:
    code = "import sys; sys.modules['httpx'] = None; import meshprop.httpx"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert 'pip install "meshprop[httpx]"' in result.stderr


# -- over a real socket -----------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with recording_server(redirects={"/redirect": "/landed"}) as running:
        yield running


def _sent(server: RecordingServer) -> list[Sent]:
    """What the server received, read the same way as what a MockTransport received."""
    return [Sent(request.path, request.headers) for request in server.received]


async def test_a_real_server_receives_the_headers(api: Api, server: RecordingServer) -> None:
    client = api.client(base_url=server.url, follow_redirects=True, timeout=10)
    with meshprop.bind(ISTIO):
        response = await api.get(client, "/redirect", headers={"X-B3-Sampled": "0"})
    assert response.status_code == 200
    assert response.text == "ok"
    assert [sent.url for sent in _sent(server)] == ["/redirect", "/landed"]
    for sent in _sent(server):
        assert sent.forwarded() == {**ISTIO, "x-b3-sampled": "0"}


async def test_a_real_server_outside_the_scope_receives_nothing(
    api: Api, server: RecordingServer
) -> None:
    client = api.client(config=meshprop.Config(scope=("*.svc",)), timeout=10)
    with meshprop.bind(ISTIO):
        response = await api.get(client, server.url + "/")
    assert response.status_code == 200
    assert _sent(server)[0].forwarded() == {}


async def test_the_opt_out_over_a_real_socket(api: Api, server: RecordingServer) -> None:
    # the extension reaches httpcore too, which must ignore it
    client = api.client(timeout=10)
    with meshprop.bind(ISTIO):
        response = await api.get(client, server.url + "/", extensions={"meshprop": False})
    assert response.status_code == 200
    assert _sent(server)[0].forwarded() == {}


def test_importing_never_fails_when_httpx_changes_its_internals() -> None:
    """A ``pip install -U httpx`` that changes ``Headers``' private list must not take the
    service down: the import works and the headers still travel, by the public API."""
    code = """
import httpx
class Unrecognised(list):  # a layout meshprop does not know: equal to nothing it expects
    __eq__ = lambda self, other: False
    __hash__ = None
original_init = httpx.Headers.__init__
def init(self, *args, **kwargs):
    original_init(self, *args, **kwargs)
    self._list = Unrecognised(self._list)
httpx.Headers.__init__ = init
import meshprop, meshprop.httpx
assert meshprop.httpx._LIST_LAYOUT is False
seen = []
transport = httpx.MockTransport(lambda r: seen.append(dict(r.headers)) or httpx.Response(200))
with meshprop.bind({"x-request-id": "r1"}), meshprop.httpx.Client(transport=transport) as c:
    c.get("http://payment-service/")
print(seen[0]["x-request-id"])
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "r1"
