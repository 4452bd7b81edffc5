"""meshprop.grpc against real servers: ``grpc.server`` and ``grpc.aio.server`` on 127.0.0.1.

Every server behaviour is checked on both servers (the ``served`` fixture); the calls into
them are plain grpcio channels, so what the server side does is all that is judged there.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any, NamedTuple

import grpc
import grpc.aio
import pytest

import meshprop
import meshprop.grpc
from meshprop._grpc_target import target_hosts
from tests.grpc_apps import (
    HOLD,
    SERVERS,
    WAIT,
    Rendezvous,
    Served,
    dumps,
    loads,
    recording_http2,
    rpc,
)

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"
INBOUND = (
    ("x-request-id", "req-grpc-1"),
    ("traceparent", TRACEPARENT),
    ("tracestate", "rojo=00f067aa0ba902b7"),
    ("x-b3-traceid", TRACE_ID),
    ("x-b3-spanid", "b7ad6b7169203331"),
    ("x-b3-sampled", "1"),
)
FORWARDED = dict(INBOUND)
#: INBOUND as the Metadata method reports it: sorted pairs.
RECEIVED = sorted([name, value] for name, value in INBOUND)


class CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


@pytest.fixture(params=sorted(SERVERS))
def served(request: pytest.FixtureRequest) -> Iterator[Served]:
    with SERVERS[request.param]() as running:
        yield running


@pytest.fixture
def channel(served: Served) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.target) as plain:
        yield plain


def unary(channel: grpc.Channel, name: str, order: Any = None, **kwargs: Any) -> Any:
    kwargs.setdefault("timeout", WAIT)
    return loads(rpc(channel, "unary_unary", name)(dumps(order or {}), **kwargs))


def with_call(channel: grpc.Channel, name: str, **kwargs: Any) -> tuple[Any, grpc.Call]:
    reply, call = rpc(channel, "unary_unary", name).with_call(b"{}", timeout=WAIT, **kwargs)
    return loads(reply), call


def seen_as_sent(seen: dict[str, Any], request_id: str = "req-grpc-1") -> None:
    assert seen["request_id"] == request_id
    assert seen["trace_id"] == TRACE_ID
    assert seen["current"] == {**FORWARDED, "x-request-id": request_id}


# -- server: the handler's context ---------------------------------------------------------


def test_a_unary_handler_sees_the_calls_request_id_and_trace(
    served: Served, channel: grpc.Channel
) -> None:
    seen_as_sent(unary(channel, "Unary", metadata=INBOUND))
    assert served.probe.after == [None]


def test_a_streaming_handler_sees_them_in_every_message_and_grpc_never_does(
    served: Served, channel: grpc.Channel
) -> None:
    replies = list(rpc(channel, "unary_stream", "Stream")(b"", metadata=INBOUND, timeout=WAIT))

    assert len(replies) == 3
    for reply in replies:
        seen_as_sent(loads(reply))
    assert served.probe.between == [None, None, None]
    assert served.probe.after == [None]


def test_a_handler_reading_a_request_stream_sees_them_while_it_reads(
    served: Served, channel: grpc.Channel
) -> None:
    requests = iter([b"1", b"2"])
    reply = loads(rpc(channel, "stream_unary", "Collect")(requests, metadata=INBOUND, timeout=WAIT))

    for seen in [*reply["while_reading"], reply]:
        seen_as_sent(seen)


def test_a_bidirectional_handler_sees_them_for_every_message(
    served: Served, channel: grpc.Channel
) -> None:
    replies = rpc(channel, "stream_stream", "Chat")(
        iter([b"1", b"2", b"3"]), metadata=INBOUND, timeout=WAIT
    )

    seen = [loads(reply) for reply in replies]
    assert len(seen) == 3
    for one in seen:
        seen_as_sent(one)
    assert served.probe.after == [None]


def test_a_cancelled_stream_closes_the_handler_in_its_context(
    served: Served, channel: grpc.Channel
) -> None:
    replies = rpc(channel, "unary_stream", "Endless")(b"", metadata=INBOUND, timeout=WAIT)
    seen_as_sent(loads(next(replies)))
    replies.cancel()

    assert served.probe.stream_closed.wait(WAIT)
    assert served.probe.closed_ids == ["req-grpc-1"]


def test_nothing_leaks_into_the_next_call(served: Served, channel: grpc.Channel) -> None:
    seen_as_sent(unary(channel, "Unary", metadata=INBOUND))
    list(rpc(channel, "unary_stream", "Stream")(b"", metadata=INBOUND, timeout=WAIT))

    bare = unary(channel, "Unary")
    assert bare["request_id"] not in (None, "req-grpc-1")  # a new one, generated
    assert bare["trace_id"] is None
    assert bare["current"] == {"x-request-id": bare["request_id"]}
    assert set(served.probe.after) == {None}


def test_concurrent_calls_keep_their_own_ids() -> None:
    calls = 8
    rendezvous = {"all": Rendezvous(calls)}
    for serving in SERVERS.values():
        rendezvous["all"] = Rendezvous(calls)
        with (
            serving(rendezvous=rendezvous) as served,
            grpc.insecure_channel(served.target) as channel,
        ):

            def call(index: int, channel: grpc.Channel = channel) -> Any:
                metadata = (
                    ("x-request-id", f"req-{index}"),
                    ("b3", f"{TRACE_ID}-{index + 1:016x}-1"),
                )
                return unary(channel, "Unary", {"rendezvous": "all"}, metadata=metadata)

            with futures.ThreadPoolExecutor(calls) as pool:
                replies = list(pool.map(call, range(calls)))
        for index, reply in enumerate(replies):
            for seen in (reply, reply["after_wait"]):
                assert seen["request_id"] == f"req-{index}"
                assert seen["current"]["b3"] == f"{TRACE_ID}-{index + 1:016x}-1"


def test_an_invalid_header_is_dropped_and_never_forwarded(
    served: Served, channel: grpc.Channel
) -> None:
    metadata = (
        ("x-request-id", "has space"),
        ("traceparent", f"00-{TRACE_ID[:-1]}g-b7ad6b7169203331-01"),
        ("tracestate", "rojo=00f067aa0ba902b7"),
        ("x-b3-sampled", "1"),
    )
    order = {"call": served.target}
    seen = unary(channel, "Unary", order, metadata=metadata)

    request_id = seen["request_id"]
    assert request_id != "has space"
    assert seen["current"] == {"x-request-id": request_id, "x-b3-sampled": "1"}
    assert seen["downstream"] == [["x-b3-sampled", "1"], ["x-request-id", request_id]]


def test_a_plain_function_under_the_aio_server_sees_them_too() -> None:
    with SERVERS["grpc.aio.server"]() as served, grpc.insecure_channel(served.target) as channel:
        seen_as_sent(unary(channel, "Threaded", metadata=INBOUND))


def test_a_coroutine_writing_its_stream_sees_them_in_every_write() -> None:
    with SERVERS["grpc.aio.server"]() as served, grpc.insecure_channel(served.target) as channel:
        replies = rpc(channel, "unary_stream", "WriteStream")(b"", metadata=INBOUND, timeout=WAIT)
        seen = [loads(reply) for reply in replies]
    assert len(seen) == 3
    for one in seen:
        seen_as_sent(one)


# -- server: the echo and errors -------------------------------------------------------------


def initial(call: grpc.Call) -> list[tuple[str, Any]]:
    return [(key, value) for key, value in call.initial_metadata() or ()]


def test_the_request_id_goes_back_once_as_initial_metadata(channel: grpc.Channel) -> None:
    _, call = with_call(channel, "Unary", metadata=INBOUND)
    assert initial(call).count(("x-request-id", "req-grpc-1")) == 1
    assert [key for key, _ in initial(call)].count("x-request-id") == 1


def test_a_generated_request_id_goes_back_too(channel: grpc.Channel) -> None:
    seen, call = with_call(channel, "Unary")
    assert ("x-request-id", seen["request_id"]) in initial(call)


def test_a_stream_echoes_the_request_id(channel: grpc.Channel) -> None:
    replies = rpc(channel, "unary_stream", "Stream")(b"", metadata=INBOUND, timeout=WAIT)
    list(replies)
    assert ("x-request-id", "req-grpc-1") in initial(replies)


def test_a_handler_that_sends_its_own_initial_metadata_keeps_it(channel: grpc.Channel) -> None:
    _, call = with_call(channel, "OwnMetadata", metadata=INBOUND)
    assert initial(call) == [("x-app", "own")]


def test_a_failing_handler_echoes_and_marks_its_exception(
    served: Served, channel: grpc.Channel
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        with_call(channel, "Fail", metadata=INBOUND)

    error: Any = raised.value
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert ("x-request-id", "req-grpc-1") in list(error.initial_metadata())
    assert served.probe.error_ids == ["req-grpc-1"]
    assert served.probe.after == [None]


def test_no_echo_when_the_config_turns_it_off() -> None:
    config = meshprop.Config(echo_header=None)
    for serving in SERVERS.values():
        with serving(config) as served, grpc.insecure_channel(served.target) as channel:
            seen, call = with_call(channel, "Unary", metadata=INBOUND)
        assert seen["request_id"] == "req-grpc-1"
        assert initial(call) == []


# -- clients -------------------------------------------------------------------------------


def test_a_call_from_the_handler_carries_the_same_headers(
    served: Served, channel: grpc.Channel
) -> None:
    seen = unary(channel, "Unary", {"call": served.target}, metadata=INBOUND)
    assert seen["downstream"] == RECEIVED


def test_caller_metadata_wins_and_never_doubles(served: Served, channel: grpc.Channel) -> None:
    own = {"call": served.target, "metadata": [["x-request-id", "callers-own"]]}
    downstream = unary(channel, "Unary", own, metadata=INBOUND)["downstream"]
    assert ["x-request-id", "callers-own"] in downstream
    assert [key for key, _ in downstream].count("x-request-id") == 1
    assert len(downstream) == len(INBOUND)

    own_trace = {"call": served.target, "metadata": [["b3", "1"]]}
    downstream = unary(channel, "Unary", own_trace, metadata=INBOUND)["downstream"]
    assert downstream == [["b3", "1"], ["x-request-id", "req-grpc-1"]]  # no second trace


def call_metadata(
    target: str,
    config: meshprop.Config | None = None,
    **kwargs: Any,
) -> Any:
    interceptor = meshprop.grpc.client_interceptor(target, config)
    with grpc.insecure_channel(target) as plain:
        channel = grpc.intercept_channel(plain, interceptor)
        return loads(rpc(channel, "unary_unary", "Metadata")(b"", timeout=WAIT, **kwargs))


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[Served]:
    with SERVERS["grpc.server"]() as running:
        yield running


def test_a_call_outside_a_request_gets_nothing(metadata_server: Served) -> None:
    assert call_metadata(metadata_server.target) == []


def test_a_target_outside_the_scope_gets_nothing(metadata_server: Served) -> None:
    # The scope is decided on the channel's target: a real 127.0.0.1 channel, with a scope that
    # leaves loopback out.
    outside = meshprop.Config(scope=("10.0.0.0/8",))
    with meshprop.bind(INBOUND):
        assert call_metadata(metadata_server.target, outside) == []
        assert call_metadata(metadata_server.target) == RECEIVED


@pytest.mark.parametrize(
    ("target", "hosts"),
    [
        ("127.0.0.1:50051", ("127.0.0.1",)),
        ("reviews:9080", ("reviews",)),
        ("reviews.default.svc.cluster.local:9080", ("reviews.default.svc.cluster.local",)),
        ("localhost", ("localhost",)),
        ("[::1]:50051", ("[::1]",)),
        ("::1", ("::1",)),
        ("dns:///reviews:9080", ("reviews",)),
        ("dns://8.8.8.8/reviews:9080", ("reviews",)),
        ("dns:reviews:9080", ("reviews",)),
        ("ipv4:10.0.0.1:80,10.0.0.2:80", ("10.0.0.1", "10.0.0.2")),
        ("ipv4:///10.0.0.1:80", ("10.0.0.1",)),
        ("ipv6:[::1]:80", ("[::1]",)),
        ("unix:/run/app.sock", ("localhost",)),
        ("unix:///run/app.sock", ("localhost",)),
        ("unix-abstract:app", ("localhost",)),
        ("api.example.com:443", ("api.example.com",)),
        ("xds:///reviews:9080", None),
        ("vsock:3:5000", None),
        ("dns:///review%73:9080", None),
        ("dns:///reviews:9080?x=1", None),
        ("ipv4://server/10.0.0.1:80", None),
        ("reviews:port", None),
        ("", None),
        ("unix:", None),
    ],
)
def test_the_target_is_read_as_grpc_reads_it(target: str, hosts: tuple[str, ...] | None) -> None:
    assert target_hosts(target) == hosts


@pytest.mark.parametrize(
    ("target", "in_scope"),
    [
        ("reviews:9080", True),
        ("dns:///reviews.default.svc.cluster.local:9080", True),
        ("unix:/run/app.sock", True),
        ("ipv4:10.0.0.1:80,10.0.0.2:80", True),
        ("ipv4:10.0.0.1:80,8.8.8.8:80", False),  # one address outside is outside
        ("api.example.com:443", False),
        ("dns:///api.example.com:443", False),
        ("xds:///reviews:9080", False),
        ("not a target", False),
    ],
)
def test_the_scope_is_judged_on_the_target(target: str, in_scope: bool) -> None:
    # Judged only: nothing here connects.
    captured: list[Any] = []
    interceptor = meshprop.grpc.client_interceptor(target)
    details = CallDetails("/m", None, None, None, None, None)
    with meshprop.bind(INBOUND):
        interceptor.intercept_unary_unary(
            lambda sent, request: captured.append(sent.metadata), details, b""
        )
    assert (captured[0] is not None) is in_scope


def test_names_and_values_grpc_would_refuse_are_left_out(metadata_server: Served) -> None:
    config = meshprop.Config(presets=("stackdriver",), prefixes=("x-tenant-",))
    headers = {
        "x-request-id": "req-grpc-1",
        "x-tenant-id": "acme",
        "x-tenant-a!b": "an HTTP token, not a gRPC key",
        "grpc-trace-bin": "not base64!",
    }
    with meshprop.bind(headers, config=config) as forwarded:
        assert "x-tenant-a!b" in forwarded and "grpc-trace-bin" in forwarded
        received = call_metadata(metadata_server.target, config)
    assert received == [["x-request-id", "req-grpc-1"], ["x-tenant-id", "acme"]]


def test_binary_metadata_travels_as_it_came_when_configured() -> None:
    config = meshprop.Config(extra_headers=("x-meta-bin",))
    value = bytes(range(29))  # any bytes at all, zero included
    text = base64.b64encode(value).decode().rstrip("=")
    metadata = (("x-request-id", "req-bin"), ("x-meta-bin", value))
    for serving in SERVERS.values():
        with serving(config) as served, grpc.insecure_channel(served.target) as channel:
            seen = unary(channel, "Unary", {"call": served.target}, metadata=metadata)
        assert seen["current"] == {"x-request-id": "req-bin", "x-meta-bin": text}
        assert seen["downstream"] == [
            ["x-meta-bin", "b64:" + base64.b64encode(value).decode()],
            ["x-request-id", "req-bin"],
        ]
    with SERVERS["grpc.server"]() as served, grpc.insecure_channel(served.target) as channel:
        seen = unary(channel, "Unary", {"call": served.target}, metadata=metadata)
    assert seen["current"] == {"x-request-id": "req-bin"}  # not configured: not forwarded
    assert seen["downstream"] == [["x-request-id", "req-bin"]]


def test_grpc_trace_bin_from_http_leaves_on_the_wire_as_it_came() -> None:
    # grpcio never shows grpc-trace-bin to a server's application, so what the client sends is
    # read off the wire by a bare HTTP/2 listener.
    config = meshprop.Config(presets=("stackdriver",))
    headers = {"x-request-id": "req-bin", "grpc-trace-bin": "AAECAwQ"}
    with recording_http2() as (target, requests), meshprop.bind(headers, config=config):
        interceptor = meshprop.grpc.client_interceptor(target, config)
        with grpc.insecure_channel(target) as plain:
            channel = grpc.intercept_channel(plain, interceptor)
            with pytest.raises(grpc.RpcError):
                rpc(channel, "unary_unary", "Metadata")(b"", timeout=WAIT)
    assert requests[0][b"grpc-trace-bin"] == b"AAECAwQ"
    assert requests[0][b"x-request-id"] == b"req-bin"


def test_every_kind_of_call_through_the_sync_interceptor(metadata_server: Served) -> None:
    # The sync interceptor on all four kinds, against the Chat and Collect handlers, which
    # report what the server captured from the metadata the interceptor sent.
    interceptor = meshprop.grpc.client_interceptor(metadata_server.target)
    with grpc.insecure_channel(metadata_server.target) as plain, meshprop.bind(INBOUND):
        channel = grpc.intercept_channel(plain, interceptor)
        seen_as_sent(loads(rpc(channel, "unary_unary", "Unary")(b"{}", timeout=WAIT)))
        for reply in rpc(channel, "unary_stream", "Stream")(b"", timeout=WAIT):
            seen_as_sent(loads(reply))
        seen_as_sent(loads(rpc(channel, "stream_unary", "Collect")(iter([b"1"]), timeout=WAIT)))
        for reply in rpc(channel, "stream_stream", "Chat")(iter([b"1"]), timeout=WAIT):
            seen_as_sent(loads(reply))


async def test_every_kind_of_call_through_the_aio_interceptors(metadata_server: Served) -> None:
    target = metadata_server.target
    interceptors = meshprop.grpc.aio_client_interceptors(target)

    async def requests() -> Any:
        yield b"1"

    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
        assert loads(await rpc(channel, "unary_unary", "Metadata")(b"", timeout=WAIT)) == []
        with meshprop.bind(INBOUND):
            caller = (("x-request-id", "callers-own"),)
            received = loads(
                await rpc(channel, "unary_unary", "Metadata")(b"", metadata=caller, timeout=WAIT)
            )
            assert received == sorted([["x-request-id", "callers-own"], *map(list, INBOUND[1:])])
            seen_as_sent(loads(await rpc(channel, "unary_unary", "Unary")(b"{}", timeout=WAIT)))
            async for reply in rpc(channel, "unary_stream", "Stream")(b"", timeout=WAIT):
                seen_as_sent(loads(reply))
            seen_as_sent(
                loads(await rpc(channel, "stream_unary", "Collect")(requests(), timeout=WAIT))
            )
            async for reply in rpc(channel, "stream_stream", "Chat")(requests(), timeout=WAIT):
                seen_as_sent(loads(reply))


async def test_concurrent_aio_calls_forward_their_own_headers(metadata_server: Served) -> None:
    target = metadata_server.target
    interceptors = meshprop.grpc.aio_client_interceptors(target)
    async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:

        async def call(index: int) -> Any:
            with meshprop.bind({"x-request-id": f"req-{index}"}):
                await asyncio.sleep(0)
                return loads(await rpc(channel, "unary_unary", "Metadata")(b"", timeout=WAIT))

        replies = await asyncio.gather(*(call(index) for index in range(8)))
    assert replies == [[["x-request-id", f"req-{index}"]] for index in range(8)]


# -- the deadline ----------------------------------------------------------------------------
#
# grpc reads a call's grpc-timeout itself and never hands it to the application as metadata:
# the handler's meshprop.deadline() comes from the call's own deadline. The clients cap their
# timeout to what the caller has left (Config(cap_timeouts=True)), and grpc sends it on.

CAPPED = meshprop.Config(cap_timeouts=True)
MARGIN = 1.5  # seconds a failing call may take beyond what was left: generous, never a speed
#: grpc rounds the timeout it sends up (to whole milliseconds under a second, to tens of them
#: under ten seconds), so a server may find a little more left than its caller had.
ROUNDING = 0.02
#: Each kind of method: the one answering with what its handler saw, and the one that holds.
KINDS = {
    "unary_unary": ("Unary", "Wait"),
    "unary_stream": ("Stream", "WaitStream"),
    "stream_unary": ("Collect", "WaitCollect"),
    "stream_stream": ("Chat", "WaitChat"),
}


def expected_timeout(milliseconds: int) -> dict[str, str]:
    return {"x-request-id": "req-deadline", "x-envoy-expected-rq-timeout-ms": str(milliseconds)}


def call_kind(channel: grpc.Channel, kind: str, name: str, order: Any = None, **kwargs: Any) -> Any:
    """One call of ``kind`` on a sync channel, read to its end: the first reply."""
    request = dumps(order or {})
    callable_ = rpc(channel, kind, name)
    reply = callable_(request if kind.startswith("unary") else iter([request]), **kwargs)
    return loads(next(iter(reply)) if kind.endswith("stream") else reply)


async def call_kind_aio(channel: Any, kind: str, name: str, order: Any, **kwargs: Any) -> Any:
    """The same on a grpc.aio channel."""
    request = dumps(order or {})

    async def requests() -> Any:
        yield request

    callable_ = rpc(channel, kind, name)
    call = callable_(request if kind.startswith("unary") else requests(), **kwargs)
    if kind.endswith("stream"):
        async for reply in call:
            return loads(reply)
    return loads(await call)


def call_through_meshprop(
    client: str,
    target: str,
    kind: str,
    name: str,
    config: meshprop.Config | None = CAPPED,
    order: Any = None,
    **kwargs: Any,
) -> Any:
    """One call through meshprop's sync or aio client interceptor(s), in the caller's context
    (asyncio.run copies it into the aio call's task)."""
    if client == "sync":
        interceptor = meshprop.grpc.client_interceptor(target, config)
        with grpc.insecure_channel(target) as plain:
            return call_kind(
                grpc.intercept_channel(plain, interceptor), kind, name, order, **kwargs
            )

    async def aio_call() -> Any:
        interceptors = meshprop.grpc.aio_client_interceptors(target, config)
        async with grpc.aio.insecure_channel(target, interceptors=interceptors) as channel:
            return await call_kind_aio(channel, kind, name, order, **kwargs)

    return asyncio.run(aio_call())


def test_the_handler_sees_what_is_left_of_the_callers_timeout(
    served: Served, channel: grpc.Channel
) -> None:
    for kind, (name, _) in KINDS.items():
        seen = call_kind(channel, kind, name, timeout=5.0)
        assert 0.0 < seen["deadline"] <= 5.0 + ROUNDING, kind


def test_a_call_without_a_timeout_has_no_deadline(served: Served, channel: grpc.Channel) -> None:
    # grpc.aio reports such a call's time remaining as None, grpc.server as about 2**63 s.
    for kind, (name, _) in KINDS.items():
        assert call_kind(channel, kind, name)["deadline"] is None, kind


def test_a_plain_function_and_a_writing_coroutine_under_the_aio_server_see_it_too() -> None:
    with SERVERS["grpc.aio.server"]() as served, grpc.insecure_channel(served.target) as channel:
        assert 0.0 < unary(channel, "Threaded", timeout=5.0)["deadline"] <= 5.0 + ROUNDING
        replies = rpc(channel, "unary_stream", "WriteStream")(b"", timeout=5.0)
        assert all(0.0 < loads(reply)["deadline"] <= 5.0 + ROUNDING for reply in replies)


def test_the_nearer_of_the_envoy_header_and_the_calls_deadline_wins(
    served: Served, channel: grpc.Channel
) -> None:
    # Envoy sets x-envoy-expected-rq-timeout-ms on gRPC calls too.
    nearer_header = call_kind(
        channel,
        "unary_unary",
        "Unary",
        metadata=tuple(expected_timeout(2000).items()),
        timeout=WAIT,
    )
    assert 0.0 < nearer_header["deadline"] <= 2.0
    nearer_call = call_kind(
        channel,
        "unary_unary",
        "Unary",
        metadata=tuple(expected_timeout(60_000).items()),
        timeout=3.0,
    )
    assert 0.0 < nearer_call["deadline"] <= 3.0 + ROUNDING
    header_alone = call_kind(
        channel, "unary_unary", "Unary", metadata=tuple(expected_timeout(2000).items())
    )
    assert 0.0 < header_alone["deadline"] <= 2.0


CLIENTS = ("sync", "aio")


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("client", CLIENTS)
def test_a_capped_call_fails_with_deadline_exceeded_once_the_callers_time_is_up(
    served: Served, client: str, kind: str
) -> None:
    # The Wait methods would hold the call for 30 s; the caller has 0.4 s left.
    started = time.monotonic()
    with (
        meshprop.bind(expected_timeout(400), config=CAPPED),
        pytest.raises(grpc.RpcError) as raised,
    ):
        call_through_meshprop(client, served.target, kind, KINDS[kind][1], timeout=HOLD)
    elapsed = time.monotonic() - started

    error: Any = raised.value
    if client == "aio":
        assert isinstance(error, grpc.aio.AioRpcError)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert elapsed < 0.4 + MARGIN


@pytest.mark.parametrize("client", CLIENTS)
def test_with_the_cap_off_a_call_may_outlive_what_the_caller_had_left(
    metadata_server: Served, client: str
) -> None:
    # The caller had 0.4 s; the server answers after 0.8 s, within the call's own timeout.
    with meshprop.bind(expected_timeout(400)):
        seen = call_through_meshprop(
            client,
            metadata_server.target,
            "unary_unary",
            "Wait",
            None,
            {"seconds": 0.8},
            timeout=WAIT,
        )
    assert seen["request_id"] == "req-deadline"


def sent_deadlines(client: str, target: str, config: meshprop.Config, **kwargs: Any) -> Any:
    """What the handlers saw left for a call of each kind: the timeout the client sent."""
    return [
        call_through_meshprop(client, target, kind, name, config, **kwargs)["deadline"]
        for kind, (name, _) in KINDS.items()
    ]


def between(low: float, high: float, deadlines: list[float | None]) -> bool:
    return all(left is not None and low < left <= high + ROUNDING for left in deadlines)


@pytest.mark.parametrize("client", CLIENTS)
def test_the_timeout_is_capped_to_what_the_caller_has_left_and_never_raised(
    metadata_server: Served, client: str
) -> None:
    target = metadata_server.target
    with meshprop.bind(expected_timeout(2000), config=CAPPED):
        assert between(0.0, 2.0, sent_deadlines(client, target, CAPPED, timeout=WAIT))
        assert between(0.0, 2.0, sent_deadlines(client, target, CAPPED))  # none of its own
    with meshprop.bind(expected_timeout(60_000), config=CAPPED):
        assert between(0.0, 2.0, sent_deadlines(client, target, CAPPED, timeout=2.0))  # kept


@pytest.mark.parametrize("client", CLIENTS)
def test_the_timeout_stays_as_it_is_without_the_cap_or_a_deadline(
    metadata_server: Served, client: str
) -> None:
    target = metadata_server.target
    plain = meshprop.Config()
    with meshprop.bind(expected_timeout(2000)):
        assert between(2.0, 5.0, sent_deadlines(client, target, plain, timeout=5.0))
        assert sent_deadlines(client, target, plain) == [None] * len(KINDS)
    with meshprop.bind({"x-request-id": "req-deadline"}):
        assert between(2.0, 5.0, sent_deadlines(client, target, CAPPED, timeout=5.0))
        assert sent_deadlines(client, target, CAPPED) == [None] * len(KINDS)
    assert between(2.0, 5.0, sent_deadlines(client, target, CAPPED, timeout=5.0))  # no request


@pytest.mark.parametrize("client", CLIENTS)
def test_the_timeout_is_capped_outside_the_propagation_scope_too(
    metadata_server: Served, client: str
) -> None:
    # The caller's wait is the caller's wherever the call goes: the headers stay home, the
    # cap applies.
    outside = meshprop.Config(cap_timeouts=True, scope=("10.0.0.0/8",))
    with meshprop.bind(expected_timeout(2000), config=outside):
        seen = call_through_meshprop(
            client, metadata_server.target, "unary_unary", "Unary", outside, timeout=WAIT
        )
    assert 0.0 < seen["deadline"] <= 2.0 + ROUNDING
    assert seen["request_id"] != "req-deadline"


@pytest.mark.parametrize("client", CLIENTS)
def test_with_nothing_left_a_call_fails_at_once_and_never_reaches_the_server(
    served: Served, client: str
) -> None:
    with meshprop.bind(expected_timeout(1), config=CAPPED):
        for _ in range(200):
            if meshprop.deadline() == 0.0:
                break
            time.sleep(0.01)
        assert meshprop.deadline() == 0.0
        started = time.monotonic()
        for kind, (name, _) in KINDS.items():
            with pytest.raises(grpc.RpcError) as raised:
                call_through_meshprop(client, served.target, kind, name, timeout=WAIT)
            error: Any = raised.value
            assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, kind
        elapsed = time.monotonic() - started

    assert elapsed < MARGIN
    # A call made after them reaches the server, and is the only one that did.
    call_through_meshprop(client, served.target, "unary_unary", "Unary", timeout=WAIT)
    assert served.probe.methods == ["/meshprop.test.Probe/Unary"]


@pytest.mark.parametrize("first", sorted(SERVERS))
def test_the_deadline_travels_on_through_a_chain_of_grpc_services(first: str) -> None:
    # Client → A (its deadline: the client's timeout of 1 s) → B through A's client
    # interceptor, with no HTTP hop and no Envoy header anywhere.
    order_b = {"method": "Unary"}
    with SERVERS["grpc.server"]() as b:
        order_b["call"] = b.target
        with SERVERS[first](CAPPED) as a, grpc.insecure_channel(a.target) as channel:
            capped = unary(channel, "Unary", order_b, timeout=1.0)
        with SERVERS[first]() as a, grpc.insecure_channel(a.target) as channel:
            uncapped = unary(channel, "Unary", order_b, timeout=1.0)

    a_left, b_left = capped["deadline"], capped["downstream"]["deadline"]
    assert 0.0 < a_left <= 1.0 + ROUNDING
    assert 0.0 < b_left <= a_left + ROUNDING
    # Without the cap, B gets the timeout of A's own call (WAIT) instead.
    assert uncapped["downstream"]["deadline"] > 1.0
