"""DESIGN.md §3, the header rules, through every capture entry point.

Each behaviour is written once and checked through the three shapes headers arrive in: ASGI
lower-case byte pairs, a WSGI ``environ``, and plain str pairs (what ``bind`` and the aiohttp
adapter use). Repeated headers cannot be expressed in an ``environ`` (the WSGI server has joined
them already), so those rules run on the pair-based shapes, and the WSGI case has its own test.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshprop
from meshprop import _headers as h
from meshprop._capture import capture_asgi, capture_environ, capture_pairs
from meshprop._config import DEFAULT_CONFIG, Config
from meshprop._plan import plan_for
from meshprop._snapshot import Snapshot

# Every rule is checked with the fast matcher and with the general path alone.
pytestmark = pytest.mark.usefixtures("capture_path")

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = "00f067aa0ba90200"
OTHER_TRACE = "463ac35c9f6413ad48485a3953bb6124"
OTHER_SPAN = "a2fb4a1d1a96d312"
TRACEPARENT = f"00-{OTHER_TRACE}-{OTHER_SPAN}-01"
ENVOY_ID = "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93"

Pairs = Iterable[tuple[str, str]]
Capture = Callable[..., Snapshot]


def _asgi(pairs: Pairs, config: Config = DEFAULT_CONFIG) -> Snapshot:
    # What an ASGI server delivers: lower-case names, the raw bytes of each value.
    raw = [(name.lower().encode("latin-1"), value.encode("utf-8")) for name, value in pairs]
    return capture_asgi(raw, plan_for(config))


def _environ(pairs: Pairs, config: Config = DEFAULT_CONFIG) -> Snapshot:
    # What a WSGI server delivers: HTTP_* keys, values decoded as latin-1, repeats comma-joined.
    environ: dict[str, str] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in pairs:
        key = "HTTP_" + name.upper().replace("-", "_")
        raw = value.encode("utf-8").decode("latin-1")
        environ[key] = environ[key] + "," + raw if key in environ else raw
    return capture_environ(environ, plan_for(config))


def _pairs(pairs: Pairs, config: Config = DEFAULT_CONFIG) -> Snapshot:
    return capture_pairs(list(pairs), plan_for(config))


def _pairs_bytes(pairs: Pairs, config: Config = DEFAULT_CONFIG) -> Snapshot:
    raw = [(name.encode("latin-1"), value.encode("utf-8")) for name, value in pairs]
    return capture_pairs(raw, plan_for(config))


ALL_SHAPES = {"asgi": _asgi, "environ": _environ, "pairs": _pairs, "pairs-bytes": _pairs_bytes}
PAIR_SHAPES = {"asgi": _asgi, "pairs": _pairs, "pairs-bytes": _pairs_bytes}


@pytest.fixture(params=sorted(ALL_SHAPES))
def capture(request: pytest.FixtureRequest) -> Capture:
    return ALL_SHAPES[request.param]


@pytest.fixture(params=sorted(PAIR_SHAPES))
def capture_repeats(request: pytest.FixtureRequest) -> Capture:
    return PAIR_SHAPES[request.param]


def _is_uuid4(value: str | None) -> bool:
    return value is not None and str(uuid.UUID(value, version=4)) == value


def _trace_headers(snapshot: Snapshot) -> dict[str, str]:
    return {k: v for k, v in snapshot.headers.items() if k != "x-request-id"}


# --- x-request-id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_id",
    [
        "8a9f3c2e-4b1d-4e7a-8c5f-2d6b0e1a4f93",
        ENVOY_ID,  # Envoy's sampled-trace version nibble
        "8a9f3c2e-4b1d-ae7a-8c5f-2d6b0e1a4f93",
        "8a9f3c2e-4b1d-be7a-8c5f-2d6b0e1a4f93",
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",  # nginx $request_id
        "req_01HZX3",
        "x" * 200,
    ],
)
def test_a_valid_request_id_is_kept_verbatim(capture: Capture, request_id: str) -> None:
    snapshot = capture([("x-request-id", request_id)])
    assert snapshot.request_id == request_id
    assert snapshot.headers == {"x-request-id": request_id}


@pytest.mark.parametrize(
    "request_id",
    ["x" * 201, "a b", "abc\x01", "abc\x7f", "caf\u00e9", "\u65e5\u672c", "", "  "],
)
def test_an_invalid_request_id_is_replaced_by_a_uuid4(capture: Capture, request_id: str) -> None:
    snapshot = capture([("x-request-id", request_id)])
    assert snapshot.request_id != request_id
    assert _is_uuid4(snapshot.request_id)
    assert snapshot.headers["x-request-id"] == snapshot.request_id


def test_a_missing_request_id_is_generated_and_forwarded(capture: Capture) -> None:
    first, second = capture([]), capture([])
    assert _is_uuid4(first.request_id)
    assert first.headers == {"x-request-id": first.request_id}
    assert first.request_id != second.request_id


def test_the_generator_is_configurable(capture: Capture) -> None:
    config = Config(request_id_generator=lambda: "generated-1")
    assert capture([], config).request_id == "generated-1"
    assert capture([("x-request-id", "bad id")], config).request_id == "generated-1"
    assert capture([("x-request-id", "good")], config).request_id == "good"


def test_no_generator_means_no_request_id(capture: Capture) -> None:
    config = Config(request_id_generator=None)
    snapshot = capture([("x-request-id", "bad id"), ("b3", "1")], config)
    assert snapshot.request_id is None
    assert snapshot.headers == {"b3": "1"}
    assert capture([("x-request-id", "kept")], config).request_id == "kept"


def test_edge_mode_replaces_only_the_request_id(capture: Capture) -> None:
    config = Config(trust_incoming_request_id=False)
    snapshot = capture(
        [("x-request-id", ENVOY_ID), ("traceparent", TRACEPARENT), ("b3", f"{TRACE}-{SPAN}")],
        config,
    )
    assert snapshot.request_id != ENVOY_ID
    assert _is_uuid4(snapshot.request_id)
    assert _trace_headers(snapshot) == {"traceparent": TRACEPARENT, "b3": f"{TRACE}-{SPAN}"}
    assert snapshot.trace_id == TRACE


def test_a_custom_request_id_header(capture: Capture) -> None:
    config = Config(request_id_header="X-Correlation-ID")
    snapshot = capture([("x-correlation-id", "corr-1"), ("x-request-id", "ignored")], config)
    assert snapshot.request_id == "corr-1"
    assert snapshot.headers == {"x-correlation-id": "corr-1"}


def test_the_request_id_cap_is_configurable(capture: Capture) -> None:
    long_id = "r" * 250
    assert capture([("x-request-id", long_id)]).request_id != long_id
    wider = Config(max_lengths={"x-request-id": 300})
    assert capture([("x-request-id", long_id)], wider).request_id == long_id
    narrower = Config(max_length=50)
    assert capture([("x-request-id", "r" * 51)], narrower).request_id != "r" * 51


def test_an_excluded_request_id_is_not_forwarded(capture: Capture) -> None:
    snapshot = capture([("x-request-id", "abc")], Config(exclude=["x-request-id"]))
    assert "x-request-id" not in snapshot.headers
    assert _is_uuid4(snapshot.request_id)  # still there for logs and the echo


# --- B3 -----------------------------------------------------------------------------------------


def test_b3_single_takes_precedence_for_the_trace_id(capture: Capture) -> None:
    snapshot = capture(
        [
            ("traceparent", TRACEPARENT),
            ("x-b3-traceid", OTHER_TRACE),
            ("x-b3-spanid", OTHER_SPAN),
            ("b3", f"{TRACE}-{SPAN}-1"),
        ]
    )
    assert (snapshot.trace_id, snapshot.span_id) == (TRACE, SPAN)
    assert set(snapshot.headers) == {
        "x-request-id",
        "traceparent",
        "x-b3-traceid",
        "x-b3-spanid",
        "b3",
    }


def test_multi_b3_comes_before_traceparent(capture: Capture) -> None:
    snapshot = capture(
        [
            ("traceparent", f"00-{TRACE}-{SPAN}-01"),
            ("x-b3-traceid", OTHER_TRACE),
            ("x-b3-spanid", OTHER_SPAN),
        ]
    )
    assert (snapshot.trace_id, snapshot.span_id) == (OTHER_TRACE, OTHER_SPAN)


def test_an_invalid_b3_falls_back_to_valid_multi_headers(capture: Capture) -> None:
    snapshot = capture(
        [
            ("b3", f"{TRACE}-{SPAN}-x"),
            ("x-b3-traceid", OTHER_TRACE),
            ("x-b3-spanid", OTHER_SPAN),
            ("x-b3-sampled", "1"),
        ]
    )
    assert _trace_headers(snapshot) == {
        "x-b3-traceid": OTHER_TRACE,
        "x-b3-spanid": OTHER_SPAN,
        "x-b3-sampled": "1",
    }
    assert snapshot.trace_id == OTHER_TRACE


def test_a_lone_b3_decision_leaves_the_trace_id_to_the_multi_headers(capture: Capture) -> None:
    snapshot = capture([("b3", "d"), ("x-b3-traceid", OTHER_TRACE), ("x-b3-spanid", OTHER_SPAN)])
    assert snapshot.headers["b3"] == "d"
    assert (snapshot.trace_id, snapshot.span_id) == (OTHER_TRACE, OTHER_SPAN)


@pytest.mark.parametrize(
    "ids",
    [
        {"x-b3-traceid": TRACE},
        {"x-b3-spanid": SPAN},
        {"x-b3-parentspanid": PARENT},
        {"x-b3-traceid": TRACE, "x-b3-parentspanid": PARENT},
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-parentspanid": "bad"},
        {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN.upper()},
        {"x-b3-traceid": "0" * 32, "x-b3-spanid": SPAN, "x-b3-parentspanid": PARENT},
    ],
    ids=repr,
)
def test_the_multi_b3_ids_travel_as_one_unit(capture: Capture, ids: dict[str, str]) -> None:
    snapshot = capture([*ids.items(), ("x-b3-sampled", "0"), ("x-b3-flags", "1")])
    assert _trace_headers(snapshot) == {"x-b3-sampled": "0", "x-b3-flags": "1"}
    assert snapshot.trace_id is None


def test_complete_multi_b3_ids_travel_with_the_parent(capture: Capture) -> None:
    ids = {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-parentspanid": PARENT}
    assert _trace_headers(capture(list(ids.items()))) == ids


def test_an_empty_parent_id_is_no_parent(capture: Capture) -> None:
    ids = {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN}
    snapshot = capture([*ids.items(), ("x-b3-parentspanid", "")])
    assert _trace_headers(snapshot) == ids
    assert (snapshot.trace_id, snapshot.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize(
    ("name", "value"), [("x-b3-sampled", "1"), ("x-b3-sampled", "false"), ("x-b3-flags", "1")]
)
def test_a_lone_sampling_decision_travels(capture: Capture, name: str, value: str) -> None:
    snapshot = capture([(name, value)])
    assert _trace_headers(snapshot) == {name: value}
    assert snapshot.trace_id is None


# --- W3C ----------------------------------------------------------------------------------------


def test_traceparent_gives_the_trace_id_without_b3(capture: Capture) -> None:
    snapshot = capture([("traceparent", TRACEPARENT), ("tracestate", "rojo=1")])
    assert _trace_headers(snapshot) == {"traceparent": TRACEPARENT, "tracestate": "rojo=1"}
    assert (snapshot.trace_id, snapshot.span_id) == (OTHER_TRACE, OTHER_SPAN)


def test_an_invalid_traceparent_takes_tracestate_down(capture: Capture) -> None:
    snapshot = capture([("traceparent", TRACEPARENT.upper()), ("tracestate", "rojo=1")])
    assert _trace_headers(snapshot) == {}


def test_tracestate_alone_is_dropped(capture: Capture) -> None:
    assert _trace_headers(capture([("tracestate", "rojo=1")])) == {}


def test_an_invalid_tracestate_leaves_traceparent(capture: Capture) -> None:
    snapshot = capture([("traceparent", TRACEPARENT), ("tracestate", "Rojo=1")])
    assert _trace_headers(snapshot) == {"traceparent": TRACEPARENT}


# --- repeated headers ---------------------------------------------------------------------------


def test_repeated_tracestate_and_baggage_join_in_order(capture_repeats: Capture) -> None:
    config = Config(presets=["baggage"])
    snapshot = capture_repeats(
        [
            ("tracestate", "a=1"),
            ("baggage", "k1=v1"),
            ("traceparent", TRACEPARENT),
            ("tracestate", "b=2"),
            ("baggage", "k2=v2"),
        ],
        config,
    )
    assert snapshot.headers["tracestate"] == "a=1,b=2"
    assert snapshot.headers["baggage"] == "k1=v1,k2=v2"


def test_two_traceparent_headers_are_invalid(capture_repeats: Capture) -> None:
    snapshot = capture_repeats(
        [("traceparent", TRACEPARENT), ("traceparent", TRACEPARENT), ("tracestate", "a=1")]
    )
    assert _trace_headers(snapshot) == {}
    assert snapshot.trace_id is None


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("x-request-id", "first-id", "second-id"),
        ("b3", f"{TRACE}-{SPAN}", f"{OTHER_TRACE}-{OTHER_SPAN}"),
        ("x-b3-sampled", "1", "0"),
    ],
)
def test_otherwise_the_first_occurrence_wins(
    capture: Capture, name: str, first: str, second: str
) -> None:
    # On every server: a WSGI server hands the app both values joined with a comma.
    snapshot = capture([(name, first), (name, second)])
    assert snapshot.headers[name] == first


def test_a_repeated_routing_header_is_joined_on_every_server(capture: Capture) -> None:
    config = Config(extra_headers=["x-canary"])
    snapshot = capture([("x-canary", "blue"), ("x-canary", "green")], config)
    assert snapshot.headers["x-canary"] == "blue,green"


def test_a_request_id_with_a_comma_is_read_as_its_first_member(capture: Capture) -> None:
    snapshot = capture([("x-request-id", "first-1,second-2")])
    assert snapshot.request_id == "first-1"
    assert snapshot.headers["x-request-id"] == "first-1"


@pytest.mark.parametrize(
    ("name", "invalid", "valid"),
    [
        ("b3", "not-b3", f"{TRACE}-{SPAN}"),
        ("x-b3-sampled", "yes", "1"),
        ("x-canary", "bad\x00", "green"),
    ],
)
def test_an_invalid_first_occurrence_drops_the_header(
    capture_repeats: Capture, name: str, invalid: str, valid: str
) -> None:
    snapshot = capture_repeats([(name, invalid), (name, valid)], Config(extra_headers=["x-canary"]))
    assert name not in snapshot.headers


def test_an_invalid_first_request_id_is_replaced(capture_repeats: Capture) -> None:
    snapshot = capture_repeats([("x-request-id", "bad id"), ("x-request-id", "good")])
    assert _is_uuid4(snapshot.request_id)


def test_wsgi_servers_join_repeats_before_meshprop_sees_them() -> None:
    environ = {"HTTP_TRACEPARENT": f"{TRACEPARENT},{TRACEPARENT}", "HTTP_TRACESTATE": "a=1,b=2"}
    assert _trace_headers(capture_environ(environ, plan_for(DEFAULT_CONFIG))) == {}
    environ["HTTP_TRACEPARENT"] = TRACEPARENT
    assert (
        _trace_headers(capture_environ(environ, plan_for(DEFAULT_CONFIG)))["tracestate"]
        == "a=1,b=2"
    )


# --- names and values ---------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["X-Request-Id", "X-REQUEST-ID", "x-ReQuEsT-iD"])
def test_header_names_are_case_insensitive(capture: Capture, spelling: str) -> None:
    snapshot = capture([(spelling, "abc"), ("TraceParent", TRACEPARENT), ("B3", "1")])
    assert snapshot.headers == {"x-request-id": "abc", "traceparent": TRACEPARENT, "b3": "1"}


@pytest.mark.parametrize("padding", [" ", "\t", " \t ", "\t\t"])
def test_surrounding_spaces_and_tabs_are_stripped(capture: Capture, padding: str) -> None:
    snapshot = capture(
        [
            ("x-request-id", padding + "abc" + padding),
            ("traceparent", padding + TRACEPARENT + padding),
            ("tracestate", padding + "a=1" + padding),
            ("b3", padding + "1" + padding),
            ("x-canary", padding + "blue green" + padding),
        ],
        Config(extra_headers=["x-canary"]),
    )
    assert snapshot.headers == {
        "x-request-id": "abc",
        "traceparent": TRACEPARENT,
        "tracestate": "a=1",
        "b3": "1",
        "x-canary": "blue green",
    }


@pytest.mark.parametrize("bad", ["\r", "\n", "\r\n", "\x00", "\t", "\x1b", "\x7f"])
@pytest.mark.parametrize(
    "name",
    [
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-sampled",
        "baggage",
        "x-canary",
        "x-tenant-id",
    ],
)
def test_control_characters_are_never_forwarded(capture: Capture, name: str, bad: str) -> None:
    values = {
        "traceparent": f"01-{OTHER_TRACE}-{OTHER_SPAN}-01-x{bad}y",
        "tracestate": f"a=1{bad}b",
        "b3": f"{TRACE}-{SPAN}-{bad}1",
    }
    config = Config(presets=["baggage"], extra_headers=["x-canary"], prefixes=["x-tenant-"])
    pairs = [(name, values.get(name, f"a{bad}b"))]
    if name == "tracestate":
        pairs.append(("traceparent", TRACEPARENT))
    snapshot = capture(pairs, config)
    assert all(bad not in value for value in snapshot.headers.values())
    assert name == "x-request-id" or name not in snapshot.headers


@pytest.mark.parametrize(
    ("name", "cap", "config"),
    [
        ("baggage", 8192, Config(presets=["baggage"])),
        ("tracestate", 512, DEFAULT_CONFIG),
        ("x-canary", 200, Config(extra_headers=["x-canary"])),
        ("x-canary", 20, Config(extra_headers=["x-canary"], max_length=20)),
        ("x-canary", 1000, Config(extra_headers=["x-canary"], max_lengths={"X-Canary": 1000})),
        ("tracestate", 100, Config(max_lengths={"tracestate": 100})),
        ("baggage", 300, Config(presets=["baggage"], max_lengths={"baggage": 300})),
    ],
)
def test_size_caps(capture: Capture, name: str, cap: int, config: Config) -> None:
    def value_of(length: int) -> str:
        if name == "tracestate":  # a valid tracestate of exactly `length` characters
            members: list[str] = []
            rest = length
            while rest > 0:
                size = min(rest, 200)
                if rest - size == 1 or 0 < rest - size < 4:
                    size -= 4
                members.append(f"k{len(members)}=" + "v" * (size - len(f"k{len(members)}=")))
                rest -= size + 1
            value = ",".join(members)
            return value + "v" * (length - len(value))
        return "k=" + "v" * (length - 2)

    at_cap, over_cap = value_of(cap), value_of(cap + 1)
    assert (len(at_cap), len(over_cap)) == (cap, cap + 1)
    extra = [("traceparent", TRACEPARENT)] if name == "tracestate" else []
    assert capture([*extra, (name, at_cap)], config).headers[name] == at_cap
    assert name not in capture([*extra, (name, over_cap)], config).headers


def test_a_capped_traceparent_is_dropped(capture: Capture) -> None:
    long = f"01-{OTHER_TRACE}-{OTHER_SPAN}-01-" + "f" * 200
    assert "traceparent" not in capture([("traceparent", long)]).headers
    wide = Config(max_lengths={"traceparent": 400})
    assert capture([("traceparent", long)], wide).headers["traceparent"] == long


@pytest.mark.parametrize(
    "config",
    [
        Config(extra_headers=["x-envoy-decorator-operation"]),
        Config(headers=["x-envoy-attempt-count"]),
        Config(prefixes=["x-envoy-"]),
        Config(prefixes=["x-"]),
        Config(prefixes=["x-e"]),
    ],
    ids=["extra", "base", "envoy-prefix", "x-prefix", "x-e-prefix"],
)
def test_x_envoy_headers_are_never_forwarded(capture: Capture, config: Config) -> None:
    snapshot = capture(
        [
            ("x-envoy-attempt-count", "1"),
            ("x-envoy-decorator-operation", "op"),
            ("x-envoy-expected-rq-timeout-ms", "15000"),
        ],
        config,
    )
    assert not [name for name in snapshot.headers if name.startswith("x-envoy-")]


@pytest.mark.parametrize(
    ("preset", "pairs"),
    [
        ("baggage", [("baggage", "userId=alice")]),
        ("lightstep", [("x-ot-span-context", "1;2;3")]),
        ("stackdriver", [("x-cloud-trace-context", f"{TRACE}/1;o=1"), ("grpc-trace-bin", "AAA=")]),
        ("skywalking", [("sw8", "1-abc-def-0-c2Vydg==-aW5zdA==-L2dldA==-aG9zdA==")]),
        (
            "datadog",
            [
                ("x-datadog-trace-id", "123"),
                ("x-datadog-parent-id", "456"),
                ("x-datadog-sampling-priority", "1"),
            ],
        ),
    ],
)
def test_presets(capture: Capture, preset: str, pairs: list[tuple[str, str]]) -> None:
    assert _trace_headers(capture(pairs)) == {}
    assert _trace_headers(capture(pairs, Config(presets=[preset]))) == dict(pairs)


def test_extra_headers_prefixes_and_exclude(capture: Capture) -> None:
    config = Config(
        extra_headers=["x-canary", "End-User"],
        prefixes=["x-tenant-"],
        exclude=["b3", "x-tenant-secret"],
    )
    snapshot = capture(
        [
            ("x-canary", "blue"),
            ("end-user", "jason"),
            ("x-tenant-id", "t1"),
            ("X-Tenant-Region", "eu"),
            ("x-tenant-secret", "s"),
            ("b3", "1"),
            ("x-b3-sampled", "1"),
            ("authorization", "Bearer x"),
            ("cookie", "a=b"),
        ],
        config,
    )
    assert _trace_headers(snapshot) == {
        "x-canary": "blue",
        "end-user": "jason",
        "x-tenant-id": "t1",
        "x-tenant-region": "eu",
        "x-b3-sampled": "1",
    }


@pytest.mark.parametrize("shape", sorted({"pairs", "pairs-bytes"}))
@pytest.mark.parametrize(
    "name", ["x-tenant-a b", "x-tenant-a:b", "x-tenant-a\r\nx", "x-tenant-\u00e9"]
)
def test_a_prefixed_name_must_be_a_header_name(shape: str, name: str) -> None:
    if shape == "pairs-bytes" and not name.isascii():
        raw: list[tuple[str | bytes, str | bytes]] = [(name.encode("utf-8"), b"v")]
        snapshot = capture_pairs(raw, plan_for(Config(prefixes=["x-tenant-"])))
    else:
        snapshot = ALL_SHAPES[shape]([(name, "v")], Config(prefixes=["x-tenant-"]))
    assert _trace_headers(snapshot) == {}


def test_an_empty_value_is_not_forwarded(capture: Capture) -> None:
    config = Config(extra_headers=["x-canary"])
    assert _trace_headers(capture([("x-canary", ""), ("b3", "")], config)) == {}


def test_a_mapping_is_accepted_and_bind_uses_the_same_rules() -> None:
    snapshot = capture_pairs({"X-Request-Id": "abc", "B3": "0"}, plan_for(DEFAULT_CONFIG))
    assert snapshot.headers == {"x-request-id": "abc", "b3": "0"}
    with meshprop.bind({"X-Request-Id": "bad id", "b3": f"{TRACE}-{SPAN}"}) as forwarded:
        assert forwarded["b3"] == f"{TRACE}-{SPAN}"
        assert _is_uuid4(meshprop.request_id())
        assert meshprop.trace_id() == TRACE
        assert meshprop.span_id() == SPAN


def test_bind_takes_a_config() -> None:
    with meshprop.bind([("x-canary", "blue")], config=Config(extra_headers=["x-canary"])):
        assert meshprop.current()["x-canary"] == "blue"


# --- whatever arrives, capture never raises nor forwards anything unsafe -------------------------

_NAMES = st.sampled_from(
    [
        *h.DEFAULT_HEADERS,
        "baggage",
        "x-canary",
        "X-Tenant-Id",
        "x-tenant-",
        "x-envoy-foo",
        "TRACEPARENT",
        "B3",
        "x-datadog-trace-id",
        "sw8",
        "host",
    ]
)
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_NAME = st.one_of(
    _NAMES, _TEXT, _NAMES.map(lambda n: n + "\r\n"), _TEXT.map(lambda t: "x-tenant-" + t)
)
_VALUE = st.one_of(
    _TEXT,
    st.sampled_from(["1", "0", "d", TRACEPARENT, f"{TRACE}-{SPAN}-1", TRACE, SPAN, "a=1"]),
    st.text(alphabet="abc=,- \t\r\n\x00\x7f", max_size=600),
    st.builds(lambda n: "k=" + "v" * n, st.integers(0, 9000)),
)
_PAIR = st.one_of(
    st.tuples(_NAME, _VALUE),
    st.tuples(_NAME.map(lambda n: n.encode("utf-8")), _VALUE.map(lambda v: v.encode("utf-8"))),
    st.tuples(st.binary(max_size=20), st.binary(max_size=60)),
)
_PROPERTY_CONFIG = Config(
    presets=["baggage", "datadog", "skywalking"], extra_headers=["x-canary"], prefixes=["x-tenant-"]
)


def _assert_safe(snapshot: Snapshot, config: Config) -> None:
    plan = plan_for(config)
    caps = {rule.name: cap for rule, cap in plan.rules}
    for name, value in snapshot.headers.items():
        assert name in plan.forwarded_name_set or (
            name.startswith(plan.prefixes) and plan.is_prefixed_name_forwarded(name)
        ), name
        assert h.is_safe_value(value.replace("\t", " ")), (name, value)
        if "\t" in value:  # only list headers have optional whitespace
            assert name in ("tracestate", "baggage"), (name, value)
        assert len(value) <= caps.get(name, config.max_length), name


@settings(max_examples=300, deadline=None)
@given(pairs=st.lists(_PAIR, max_size=12))
def test_any_header_pairs_are_captured_safely(
    pairs: list[tuple[str | bytes, str | bytes]],
) -> None:
    _assert_safe(capture_pairs(pairs, plan_for(_PROPERTY_CONFIG)), _PROPERTY_CONFIG)
    _assert_safe(capture_pairs(pairs, plan_for(DEFAULT_CONFIG)), DEFAULT_CONFIG)
    raw = [
        (
            n if isinstance(n, bytes) else n.encode("utf-8"),
            v if isinstance(v, bytes) else v.encode(),
        )
        for n, v in pairs
    ]
    _assert_safe(capture_asgi(raw, plan_for(_PROPERTY_CONFIG)), _PROPERTY_CONFIG)
    environ = {
        "HTTP_" + n.decode("latin-1").upper().replace("-", "_"): v.decode("latin-1") for n, v in raw
    }
    _assert_safe(capture_environ(environ, plan_for(_PROPERTY_CONFIG)), _PROPERTY_CONFIG)


def test_every_header_obeys_a_small_general_cap(capture: Capture) -> None:
    pairs = [
        ("b3", f"{TRACE}-{SPAN}"),
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("traceparent", TRACEPARENT),
        ("x-b3-sampled", "1"),
    ]
    snapshot = capture(pairs, Config(max_length=10))
    assert _trace_headers(snapshot) == {"x-b3-sampled": "1"}


@pytest.mark.parametrize("cap", [0, 10**10, 200.5, True, "200"])
def test_a_cap_that_is_not_a_whole_number_in_range_is_refused(cap: object) -> None:
    with pytest.raises(ValueError, match="max_length"):
        Config(max_length=cap)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_lengths"):
        Config(max_lengths={"x-canary": cap})  # type: ignore[dict-item]


def test_prefixed_headers_stay_within_the_total_budget(capture: Capture) -> None:
    tenants = [(f"x-tenant-{i:04}", "t" * 40) for i in range(1000)]
    pairs = [("x-request-id", "req-1"), *tenants, ("traceparent", TRACEPARENT)]
    snapshot = capture(pairs, Config(prefixes=["x-tenant-"]))
    forwarded = snapshot.headers
    assert forwarded["traceparent"] == TRACEPARENT
    assert forwarded["x-request-id"] == "req-1"
    assert len(forwarded) == 32
    assert sum(len(name) + len(value) for name, value in forwarded.items()) <= 16384
    assert list(forwarded)[2:4] == ["x-tenant-0000", "x-tenant-0001"]  # in arrival order


def test_the_budget_drops_prefixed_headers_before_named_ones(capture: Capture) -> None:
    config = Config(
        presets=["baggage"], prefixes=["x-tenant-"], max_headers=4, max_total_length=9000
    )
    pairs = [
        ("x-tenant-a", "a"),
        ("baggage", "k=" + "v" * 8000),
        ("x-tenant-b", "b" * 990),
        ("traceparent", TRACEPARENT),
    ]
    forwarded = capture(pairs, config).headers
    assert set(forwarded) == {"x-request-id", "traceparent", "baggage", "x-tenant-a"}


@pytest.mark.parametrize(
    "name", ["authorization", "cookie", "x-api-key", "x-amz-security-token", "proxy-authorization"]
)
def test_a_prefix_never_picks_up_credentials(capture: Capture, name: str) -> None:
    config = Config(prefixes=["x-", "author", "cook", "proxy-"])
    forwarded = capture([(name, "secret"), ("x-tenant", "t1")], config).headers
    assert name not in forwarded
    assert forwarded["x-tenant"] == "t1"


def test_naming_a_credential_forwards_it_with_a_warning(capture: Capture) -> None:
    with pytest.warns(UserWarning, match="authorization"):
        config = Config(extra_headers=["Authorization"])
    assert capture([("authorization", "Bearer t")], config).headers["authorization"] == "Bearer t"


@pytest.mark.parametrize(
    "bad_id", ["", "x" * 201, "id\r\nSet-Cookie: pwn=1", "caf\u00e9", 42, None, "a b", "a,b"]
)
def test_a_bad_generated_id_is_replaced_by_a_uuid4(
    capture: Capture, bad_id: object, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(request_id_generator=lambda: bad_id)  # type: ignore[arg-type,return-value]
    first = capture([], config)
    second = capture([], config)
    assert _is_uuid4(first.request_id) and _is_uuid4(second.request_id)
    assert first.headers["x-request-id"] == first.request_id
    warnings = [r for r in caplog.records if "request_id_generator" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not per request


def test_a_generator_that_raises_falls_back_to_a_uuid4(capture: Capture) -> None:
    def broken() -> str:
        raise RuntimeError("no ids today")

    assert _is_uuid4(capture([], Config(request_id_generator=broken)).request_id)


def test_a_good_generated_id_is_kept(capture: Capture) -> None:
    snapshot = capture([], Config(request_id_generator=lambda: "job-42"))
    assert snapshot.request_id == "job-42"


@pytest.mark.parametrize(
    ("preset", "name", "value"),
    [
        ("skywalking", "sw8", "1-" + "A" * 271),  # 273 characters, a real sw8
        ("skywalking", "sw8-correlation", "a2V5=dmFsdWU=" * 20),
        ("skywalking", "sw8-x", "1-1234567890"),
        ("datadog", "x-datadog-tags", "_dd.p.dm=-4," + "_dd.p.tid=" + "a" * 248),  # 270
        ("aws", "x-amzn-trace-id", "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"),
    ],
)
def test_the_presets_forward_realistic_values(
    capture: Capture, preset: str, name: str, value: str
) -> None:
    assert capture([(name, value)], Config(presets=[preset])).headers[name] == value


def test_prefer_w3c_reads_the_ids_from_traceparent(capture: Capture) -> None:
    pairs = [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("traceparent", TRACEPARENT)]
    assert (capture(pairs).trace_id, capture(pairs).span_id) == (TRACE, SPAN)
    w3c = capture(pairs, Config(prefer="w3c"))
    assert (w3c.trace_id, w3c.span_id) == (OTHER_TRACE, OTHER_SPAN)
    assert _trace_headers(w3c) == _trace_headers(capture(pairs))  # forwarding is unchanged


def test_an_empty_first_member_is_no_value(capture: Capture) -> None:
    pairs = [("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), ("x-b3-parentspanid", ",")]
    assert _trace_headers(capture(pairs)) == {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN}
    assert _is_uuid4(capture([("x-request-id", ",")]).request_id)
