"""meshprop.grpc against real servers: ``grpc.server`` and ``grpc.aio.server`` on 127.0.0.1.

Every server behaviour is checked on both servers (the ``served`` fixture); the calls into
them are plain grpcio channels, so what the server side does is all that is judged there.
"""

from __future__ import annotations

import asyncio
import base64
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
    return loads(rpc(channel, "unary_unary", name)(dumps(order or {}), timeout=WAIT, **kwargs))


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
