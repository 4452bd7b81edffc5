"""The fast path never changes an answer: whatever it accepts, the general path, judging header
by header, turns into the same snapshot; whatever it declines, the general path decides.

The vectors in tests/vectors and tests/test_capture.py already run through ``capture_asgi`` and
``capture_environ`` (so through the fast path wherever it applies). Here the two paths are held
side by side: on the Istio request, on every vector, and on generated requests mixing valid,
invalid and borderline values under several Configs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from meshprop._capture import (
    _capture_asgi_by_header,
    _capture_environ_by_header,
    capture_asgi,
    capture_environ,
    capture_multidict,
    capture_pairs,
)
from meshprop._config import Config
from meshprop._fast_path import FastPath
from meshprop._headers import DEFAULT_HEADERS
from meshprop._snapshot import Snapshot

GENERATED_ID = "generated-request-id"
VECTORS = Path(__file__).parent / "vectors"

ISTIO_REQUEST = [
    ("host", "orders.shop.svc.cluster.local:8080"),
    ("x-request-id", "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("x-b3-spanid", "a2fb4a1d1a96d312"),
    ("x-b3-parentspanid", "00f067aa0ba902b7"),
    ("x-b3-sampled", "1"),
    ("accept", "application/json"),
]


def _generated() -> str:
    return GENERATED_ID


CONFIGS = {
    "default": Config(request_id_generator=_generated),
    "edge": Config(request_id_generator=_generated, trust_incoming_request_id=False),
    "no generator": Config(request_id_generator=None),
    "presets and extras": Config(
        request_id_generator=_generated,
        presets=("baggage", "lightstep"),
        extra_headers=("x-canary",),
        max_lengths={"x-canary": 8, "tracestate": 64},
    ),
    "without tracestate and parent": Config(
        request_id_generator=_generated, exclude=("tracestate", "x-b3-parentspanid")
    ),
    "without span id": Config(request_id_generator=_generated, exclude=("x-b3-spanid",)),
    "without traceparent": Config(request_id_generator=_generated, exclude=("traceparent",)),
    "other request id header": Config(
        request_id_generator=_generated, request_id_header="x-correlation-id"
    ),
}


def _asgi(pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def _environ(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "GET", "PATH_INFO": "/"}
    for name, value in pairs:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = environ[key] + "," + value if key in environ else value
    return environ


def _multidict(pairs: list[tuple[str, str]]) -> CIMultiDict[str]:
    """As aiohttp hands a server its request headers: in the case they were sent."""
    return CIMultiDict((name.title(), value) for name, value in pairs)


def _seen(snapshot: Snapshot) -> tuple[Mapping[str, str], str | None, str | None, str | None]:
    return dict(snapshot.headers), snapshot.request_id, snapshot.trace_id, snapshot.span_id


def _assert_same_answer(pairs: list[tuple[str, str]], config: Config) -> None:
    assert config._fast_path is not None
    fast = config._fast_path.capture_asgi(_asgi(pairs))
    if fast is not None:
        assert _seen(fast) == _seen(_capture_asgi_by_header(_asgi(pairs), config))
    fast = config._fast_path.capture_environ(_environ(pairs))
    if fast is not None:
        assert _seen(fast) == _seen(_capture_environ_by_header(_environ(pairs), config))
    fast = config._fast_path.capture_multidict(_multidict(pairs))
    if fast is not None:
        assert _seen(fast) == _seen(capture_pairs(_asgi(pairs), config))


def test_the_istio_request_takes_the_fast_path_and_gets_the_general_answer() -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    snapshot = config._fast_path.capture_asgi(_asgi(ISTIO_REQUEST))
    assert snapshot is not None
    assert _seen(snapshot) == _seen(_capture_asgi_by_header(_asgi(ISTIO_REQUEST), config))
    assert snapshot.request_id == "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93"
    assert snapshot.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # B3 before W3C
    assert snapshot.span_id == "a2fb4a1d1a96d312"
    assert config._fast_path.capture_environ(_environ(ISTIO_REQUEST)) is not None
    assert config._fast_path.capture_multidict(_multidict(ISTIO_REQUEST)) is not None


def test_the_headers_are_built_on_first_use_only() -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    snapshot = config._fast_path.capture_asgi(_asgi(ISTIO_REQUEST))
    assert snapshot is not None
    assert snapshot._headers is None
    assert snapshot.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert snapshot._headers is not None
    assert snapshot.headers is snapshot.headers
    assert snapshot.view()["x-b3-sampled"] == "1"


@pytest.mark.parametrize(
    "pairs",
    [
        pytest.param([*ISTIO_REQUEST, ("traceparent", ISTIO_REQUEST[2][1])], id="a repeat"),
        pytest.param([("traceparent", " " + ISTIO_REQUEST[2][1])], id="a blank around a value"),
        pytest.param(
            [("traceparent", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")],
            id="a higher traceparent version",
        ),
        pytest.param(
            [("tracestate", "a=1,b=2,c=3,d=4"), ISTIO_REQUEST[2]], id="4 tracestate members"
        ),
        pytest.param([("x-request-id", "has space")], id="an invalid request id"),
        pytest.param([("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736")], id="half a B3 unit"),
        pytest.param([("tracestate", "a=1")], id="tracestate without traceparent"),
    ],
)
def test_the_fast_path_declines_what_it_does_not_cover(pairs: list[tuple[str, str]]) -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    assert config._fast_path.capture_asgi(_asgi(pairs)) is None
    assert config._fast_path.capture_multidict(_multidict(pairs)) is None
    # ...and the general path, through the public entry point, still gives its answer.
    assert _seen(capture_asgi(_asgi(pairs), config)) == _seen(
        _capture_asgi_by_header(_asgi(pairs), config)
    )


def test_a_repeat_whose_first_value_decides_keeps_the_multidict_fast_path() -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    pairs = [*ISTIO_REQUEST, ("x-b3-sampled", "0")]
    assert config._fast_path.capture_asgi(_asgi(pairs)) is None
    snapshot = config._fast_path.capture_multidict(_multidict(pairs))
    assert snapshot is not None
    assert snapshot.headers["x-b3-sampled"] == "1"


def test_an_ordinary_header_repeated_keeps_the_fast_path() -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    pairs = [*ISTIO_REQUEST, ("accept", "text/html")]
    assert config._fast_path.capture_asgi(_asgi(pairs)) is not None


@pytest.mark.parametrize("emptied", [name for name, _ in ISTIO_REQUEST])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_an_empty_value_gets_the_same_answer_on_both_paths(emptied: str, config_name: str) -> None:
    pairs = [(name, "" if name == emptied else value) for name, value in ISTIO_REQUEST]
    _assert_same_answer(pairs, CONFIGS[config_name])


def test_an_empty_value_first_still_decides_for_a_repeated_header() -> None:
    config = CONFIGS["default"]
    pairs = [("x-b3-sampled", ""), ("x-b3-sampled", "1")]
    assert _seen(capture_asgi(_asgi(pairs), config))[0] == {"x-request-id": GENERATED_ID}


def test_a_config_with_prefixes_has_no_fast_path() -> None:
    assert Config(prefixes=("x-tenant-",))._fast_path is None


def test_a_cap_below_a_structured_headers_length_has_no_fast_path() -> None:
    assert Config(max_lengths={"traceparent": 40})._fast_path is None
    assert isinstance(Config(max_lengths={"baggage": 40})._fast_path, FastPath)


def _vector_cases() -> list[Any]:
    params = []
    for path in sorted(VECTORS.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8"))["cases"]:
            pairs = [(name.lower(), value) for name, value in case["headers"]]
            if all(value.isascii() for _, value in pairs):
                params.append(pytest.param(pairs, id=f"{path.stem}: {case['name']}"))
    return params


@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("pairs", _vector_cases())
def test_every_vector_gets_the_same_answer_on_both_paths(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    _assert_same_answer(pairs, CONFIGS[config_name])


_HEX = "0123456789abcdef"
_VALUES = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "1",
            "d",
            "true",
            "false",
            "2",
            "0" * 16,
            "0" * 32,
            "a2fb4a1d1a96d312",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            "A2FB4A1D1A96D312",
            "4bf92f3577b34da6-a2fb4a1d1a96d312",
            "4bf92f3577b34da6a3ce929d0e0e4736-a2fb4a1d1a96d312-1-00f067aa0ba902b7",
            "4bf92f3577b34da6a3ce929d0e0e4736-a2fb4a1d1a96d312-x",
            "4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000",
            ISTIO_REQUEST[2][1],
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "congo=t61rcWkgMzE",
            "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
            "a=1,a=2",
            "a=1,b=2,a=3",
            "a=1,b=2,c=3",
            "a=1, b=2",
            "a@b=1,a=2",
            "A=1",
            "=1",
            "x-very-long-" + "v" * 190,
            "value\twith tab",
            "inner space",
            "tab-after\t",
            "café",
            "line\nbreak",
            "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93",
        ]
    ),
    st.text(alphabet=_HEX + "-", min_size=1, max_size=70),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), min_size=0, max_size=20),
)
_NAMES = st.sampled_from(
    [*DEFAULT_HEADERS, "x-correlation-id", "baggage", "x-ot-span-context", "x-canary", "accept"]
)


@settings(max_examples=400, deadline=None)
@given(
    pairs=st.lists(st.tuples(_NAMES, _VALUES), max_size=10),
    config_name=st.sampled_from(list(CONFIGS)),
)
def test_generated_requests_get_the_same_answer_on_both_paths(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    _assert_same_answer(pairs, CONFIGS[config_name])


def _hex_id(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_HEX, min_size=length, max_size=length)


@st.composite
def _mesh_requests(draw: st.DrawFn) -> list[tuple[str, str]]:
    """A request as a sidecar sends it (random ids, some headers left out), with at most one
    value replaced by an odd one: most of these take the fast path."""
    trace_id = draw(st.one_of(_hex_id(32), _hex_id(16)))
    span_id, parent_id = draw(_hex_id(16)), draw(_hex_id(16))
    traceparent = f"00-{draw(_hex_id(32))}-{draw(_hex_id(16))}-{draw(_hex_id(2))}"
    groups = [
        [("x-request-id", draw(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40)))],
        [
            ("traceparent", traceparent),
            ("tracestate", draw(st.sampled_from(["congo=t61rcWkgMzE", "a=1,b=2,c=3", "k@v=x y"]))),
        ],
        [("b3", f"{trace_id}-{span_id}-{draw(st.sampled_from('01d'))}-{parent_id}")],
        [("x-b3-traceid", trace_id), ("x-b3-spanid", span_id), ("x-b3-parentspanid", parent_id)],
        [("x-b3-sampled", draw(st.sampled_from(["0", "1", "true", "false"])))],
        [("x-b3-flags", "1")],
        [("baggage", "user=42,region=eu")],
        [("x-canary", "blue")],
    ]
    keep = draw(st.lists(st.booleans(), min_size=len(groups), max_size=len(groups)))
    kept = [pair for group, chosen in zip(groups, keep, strict=True) if chosen for pair in group]
    replace_one: bool = draw(st.booleans())
    if kept and replace_one:
        index = draw(st.integers(0, len(kept) - 1))
        kept[index] = (kept[index][0], draw(_VALUES))
    return draw(st.permutations(kept))


@settings(max_examples=400, deadline=None)
@given(pairs=_mesh_requests(), config_name=st.sampled_from(list(CONFIGS)))
def test_mesh_requests_get_the_same_answer_on_both_paths(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    _assert_same_answer(pairs, CONFIGS[config_name])


def test_the_public_entry_points_use_the_fast_path() -> None:
    config = CONFIGS["default"]
    assert capture_asgi(_asgi(ISTIO_REQUEST), config)._headers is None
    assert capture_environ(_environ(ISTIO_REQUEST), config)._headers is None
    assert capture_multidict(_multidict(ISTIO_REQUEST), config)._headers is None


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "baggage"])
def test_a_multidict_with_a_repeat_that_means_more_takes_the_general_path(name: str) -> None:
    config = CONFIGS["presets and extras"]
    assert config._fast_path is not None
    pairs = [ISTIO_REQUEST[2], (name, "a=1"), (name.upper(), "b=2")]
    assert config._fast_path.capture_multidict(_multidict(pairs)) is None
    assert _seen(capture_multidict(_multidict(pairs), config)) == _seen(
        capture_pairs(_asgi(pairs), config)
    )


@pytest.mark.parametrize(
    ("tracestate", "fast"),
    [
        ("congo=t61rcWkgMzE", True),
        ("a=1,ab=2", True),  # a key that starts with an earlier key is another key
        ("ab=1,a=2,b=3", True),
        ("a=1,b=2,a=3", False),
        ("a=1,b=2,b=3", False),
        ("t@v=1,t@w=2,t@v=3", False),
        ("7bc5d33e-980fa2b9@dt=fw4;0", True),
        ("k@v=x y", True),
        ("a=1 ,b=2", False),  # the general path strips the blank, the fast path leaves it to it
        ("a=" + "v" * 256, True),
        ("a=" + "v" * 257, False),
        ("a" * 256 + "=1", True),
        ("a" * 257 + "=1", False),
        ("t" * 241 + "@v=1", True),
        ("t" * 242 + "@v=1", False),
        ("t@" + "v" * 14 + "=1", True),
        ("t@" + "v" * 15 + "=1", False),
        ("a=" + "v" * 254 + ",b=" + "v" * 253, True),  # 512 characters: the default cap
        ("a=" + "v" * 254 + ",b=" + "v" * 254, False),
    ],
)
@pytest.mark.parametrize("request_id", ["r", "r" * 200])
def test_tracestate_members_and_cap_on_the_fast_path(
    tracestate: str, fast: bool, request_id: str
) -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    pairs = [("x-request-id", request_id), ISTIO_REQUEST[2], ("tracestate", tracestate)]
    assert (config._fast_path.capture_asgi(_asgi(pairs)) is not None) is fast
    _assert_same_answer(pairs, config)


@pytest.mark.parametrize(
    ("pair", "fast"),
    [
        (("x-b3-traceid", "0" * 16 + "4bf92f3577b34da6"), True),
        (("x-b3-traceid", "0" * 31 + "1"), True),
        (("x-b3-traceid", "0" * 32), False),
        (("x-b3-traceid", "0" * 16), False),
        (("x-b3-traceid", "4bf92f3577b34da6"), True),
        (("x-b3-spanid", "0" * 15 + "1"), True),
        (("x-b3-spanid", "0" * 16), False),
        (("x-b3-parentspanid", "0" * 16), False),
        (("x-b3-parentspanid", ""), True),
        (("traceparent", "00-" + "0" * 31 + "1-00f067aa0ba902b7-01"), True),
        (("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"), False),
        (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"), False),
        (("b3", "0" * 16 + "4bf92f3577b34da6-a2fb4a1d1a96d312-1-" + "0" * 15 + "1"), True),
        (("b3", "0" * 32 + "-a2fb4a1d1a96d312"), False),
        (("b3", "4bf92f3577b34da6-" + "0" * 16), False),
        (("b3", "4bf92f3577b34da6-a2fb4a1d1a96d312-d-" + "0" * 16), False),
        (("b3", "d"), True),
    ],
)
def test_all_zero_ids_leave_the_fast_path(pair: tuple[str, str], fast: bool) -> None:
    config = CONFIGS["default"]
    assert config._fast_path is not None
    pairs = [(name, value) for name, value in ISTIO_REQUEST if name != pair[0]] + [pair]
    assert (config._fast_path.capture_asgi(_asgi(pairs)) is not None) is fast
    _assert_same_answer(pairs, config)


@pytest.mark.parametrize(("value", "fast"), [("bl ue", True), (" blue", False), ("blue ", False)])
def test_an_extra_header_takes_the_fast_path_without_surrounding_blanks(
    value: str, fast: bool
) -> None:
    config = CONFIGS["presets and extras"]
    assert config._fast_path is not None
    pairs = [("x-canary", value)]
    assert (config._fast_path.capture_asgi(_asgi(pairs)) is not None) is fast
    _assert_same_answer(pairs, config)


def _with_repeats_that_give_back(fast_path: FastPath) -> re.Pattern[str]:
    """The fast path's pattern as Python 3.10 compiles it (possessive repeats made greedy)."""
    compiled: re.Pattern[str] = cast(Any, fast_path._match_text).__self__
    return re.compile(compiled.pattern.replace("}+", "}"))


@settings(max_examples=400, deadline=None)
@given(
    pairs=st.one_of(_mesh_requests(), st.lists(st.tuples(_NAMES, _VALUES), max_size=10)),
    config_name=st.sampled_from(list(CONFIGS)),
)
def test_possessive_repeats_change_no_answer(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    fast_path = CONFIGS[config_name]._fast_path
    assert fast_path is not None
    environ = _environ(pairs)
    joined = "\n".join(environ.get(key, "") for key in fast_path._environ_keys)
    expected = _with_repeats_that_give_back(fast_path).fullmatch(joined) is not None
    assert (fast_path._match_text(joined) is not None) is expected
