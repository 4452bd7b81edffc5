"""The fast path never changes an answer: whatever it accepts, the general path, judging header
by header, turns into the same snapshot; whatever it declines, the general path decides. And it
is derived from the rule table: whatever a rule's fragment accepts, the rule's validator accepts.

The vectors and tests/test_capture.py already run with the fast path on and off (the
``capture_path`` fixture). Here the two plans of one Config are held side by side: on the
Istio request, on every vector, and on generated requests under several Configs.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from meshprop import _headers as h
from meshprop._capture import capture_asgi, capture_environ, capture_multidict, capture_pairs
from meshprop._config import Config
from meshprop._fast_path import FastPath, possessive
from meshprop._headers import DEFAULT_HEADERS
from meshprop._plan import Plan
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
    "w3c preferred": Config(request_id_generator=_generated, prefer="w3c"),
    "small caps": Config(request_id_generator=_generated, max_length=20),
}
FAST = {name: Plan(config, use_fast_path=True) for name, config in CONFIGS.items()}
GENERAL = {name: Plan(config, use_fast_path=False) for name, config in CONFIGS.items()}


def _fast_path(config_name: str) -> FastPath:
    fast_path = FAST[config_name].fast_path
    assert fast_path is not None
    return fast_path


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


def _assert_same_answer(pairs: list[tuple[str, str]], config_name: str) -> bool:
    """Both plans give the same snapshot for every shape; whether the fast path took it."""
    fast, general = FAST[config_name], GENERAL[config_name]
    taken = _fast_path(config_name).capture_asgi(_asgi(pairs)) is not None
    assert _seen(capture_asgi(_asgi(pairs), fast)) == _seen(capture_asgi(_asgi(pairs), general))
    assert _seen(capture_environ(_environ(pairs), fast)) == _seen(
        capture_environ(_environ(pairs), general)
    )
    assert _seen(capture_multidict(_multidict(pairs), fast)) == _seen(
        capture_multidict(_multidict(pairs), general)
    )
    return taken


def test_the_istio_request_takes_the_fast_path_and_gets_the_general_answer() -> None:
    snapshot = _fast_path("default").capture_asgi(_asgi(ISTIO_REQUEST))
    assert snapshot is not None
    assert _seen(snapshot) == _seen(capture_asgi(_asgi(ISTIO_REQUEST), GENERAL["default"]))
    assert snapshot.request_id == "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93"
    assert snapshot.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"  # B3 before W3C
    assert snapshot.span_id == "a2fb4a1d1a96d312"
    assert _fast_path("default").capture_environ(_environ(ISTIO_REQUEST)) is not None
    assert _fast_path("default").capture_multidict(_multidict(ISTIO_REQUEST)) is not None


def test_w3c_preferred_reads_the_ids_from_traceparent() -> None:
    snapshot = _fast_path("w3c preferred").capture_asgi(_asgi(ISTIO_REQUEST))
    assert snapshot is not None
    assert (snapshot.trace_id, snapshot.span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
    )


def test_the_snapshot_reads_the_same_however_often() -> None:
    snapshot = _fast_path("default").capture_asgi(_asgi(ISTIO_REQUEST))
    assert snapshot is not None
    assert snapshot.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
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
            [("tracestate", "a=1 ,\tb=2"), ISTIO_REQUEST[2]], id="blanks around tracestate members"
        ),
        pytest.param([("x-request-id", "has space")], id="an invalid request id"),
        pytest.param([("x-request-id", "first,second")], id="a joined request id"),
        pytest.param([("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736")], id="half a B3 unit"),
        pytest.param([("tracestate", "a=1")], id="tracestate without traceparent"),
    ],
)
def test_the_fast_path_declines_what_it_does_not_cover(pairs: list[tuple[str, str]]) -> None:
    assert _fast_path("default").capture_asgi(_asgi(pairs)) is None
    assert _fast_path("default").capture_multidict(_multidict(pairs)) is None
    assert not _assert_same_answer(pairs, "default")


def test_a_repeat_whose_first_value_decides_keeps_the_multidict_fast_path() -> None:
    pairs = [*ISTIO_REQUEST, ("x-b3-sampled", "0")]
    assert _fast_path("default").capture_asgi(_asgi(pairs)) is None
    snapshot = _fast_path("default").capture_multidict(_multidict(pairs))
    assert snapshot is not None
    assert snapshot.headers["x-b3-sampled"] == "1"


def test_an_ordinary_header_repeated_keeps_the_fast_path() -> None:
    pairs = [*ISTIO_REQUEST, ("accept", "text/html")]
    assert _fast_path("default").capture_asgi(_asgi(pairs)) is not None


@pytest.mark.parametrize("emptied", [name for name, _ in ISTIO_REQUEST])
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_an_empty_value_gets_the_same_answer_on_both_paths(emptied: str, config_name: str) -> None:
    pairs = [(name, "" if name == emptied else value) for name, value in ISTIO_REQUEST]
    _assert_same_answer(pairs, config_name)


def test_an_empty_value_first_still_decides_for_a_repeated_header() -> None:
    pairs = [("x-b3-sampled", ""), ("x-b3-sampled", "1")]
    for plan in (FAST["default"], GENERAL["default"]):
        assert _seen(capture_asgi(_asgi(pairs), plan))[0] == {"x-request-id": GENERATED_ID}


def test_where_the_fast_path_does_not_apply() -> None:
    assert Plan(Config(prefixes=("x-tenant-",)), use_fast_path=True).fast_path is None
    assert Plan(Config(max_headers=5), use_fast_path=True).fast_path is None  # 9 named headers
    assert Plan(Config(max_lengths={"traceparent": 40}), use_fast_path=True).fast_path is not None
    assert Plan(Config(), use_fast_path=False).fast_path is None


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
    _assert_same_answer(pairs, config_name)


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
    _assert_same_answer(pairs, config_name)


def _hex_id(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=_HEX, min_size=length, max_size=length)


@st.composite
def _mesh_requests(draw: st.DrawFn, odd_value: bool = True) -> list[tuple[str, str]]:
    """A request as a sidecar sends it (random ids, some headers left out), with at most one
    value replaced by an odd one unless ``odd_value`` is False."""
    trace_id = draw(st.one_of(_hex_id(32), _hex_id(16)).filter(lambda v: v.strip("0")))
    span_id = draw(_hex_id(16).filter(lambda v: v.strip("0")))
    parent_id = draw(_hex_id(16))
    traceparent_ids = (_hex_id(32).filter(lambda v: v.strip("0")), _hex_id(16))
    w3c_trace, w3c_span = (
        draw(traceparent_ids[0]),
        draw(traceparent_ids[1].filter(lambda v: v.strip("0"))),
    )
    traceparent = f"00-{w3c_trace}-{w3c_span}-{draw(_hex_id(2))}"
    states = ["congo=t61rcWkgMzE", "a=1,b=2,c=3", "k@v=x y", "a=1,a=2", "foo@=1"]
    groups = [
        [("x-request-id", draw(st.text(alphabet="abcdef0123456789-", min_size=1, max_size=40)))],
        [("traceparent", traceparent), ("tracestate", draw(st.sampled_from(states)))],
        [("b3", f"{trace_id}-{span_id}-{draw(st.sampled_from('01d'))}-{parent_id}")],
        [("x-b3-traceid", trace_id), ("x-b3-spanid", span_id), ("x-b3-parentspanid", parent_id)],
        [("x-b3-sampled", draw(st.sampled_from(["0", "1", "true", "false"])))],
        [("x-b3-flags", "1")],
        [("baggage", "user=42,region=eu")],
        [("x-canary", "blue")],
    ]
    keep = draw(st.lists(st.booleans(), min_size=len(groups), max_size=len(groups)))
    kept = [pair for group, chosen in zip(groups, keep, strict=True) if chosen for pair in group]
    if odd_value and kept and draw(st.booleans()):
        index = draw(st.integers(0, len(kept) - 1))
        kept[index] = (kept[index][0], draw(_VALUES))
    return draw(st.permutations(kept))


@settings(max_examples=400, deadline=None)
@given(pairs=_mesh_requests(), config_name=st.sampled_from(list(CONFIGS)))
def test_mesh_requests_get_the_same_answer_on_both_paths(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    _assert_same_answer(pairs, config_name)


@settings(max_examples=300, deadline=None)
@given(pairs=_mesh_requests(odd_value=False))
def test_the_usual_mesh_request_takes_the_fast_path(pairs: list[tuple[str, str]]) -> None:
    """Not merely "the same answer when it happens to apply": the requests a sidecar sends,
    each header once in its usual form, are the ones the fast path is for."""
    assert _assert_same_answer(pairs, "default")
    assert _fast_path("default").capture_multidict(_multidict(pairs)) is not None


@pytest.mark.parametrize("name", ["traceparent", "tracestate", "baggage"])
def test_a_multidict_with_a_repeat_that_means_more_takes_the_general_path(name: str) -> None:
    pairs = [ISTIO_REQUEST[2], (name, "a=1"), (name.upper(), "b=2")]
    assert _fast_path("presets and extras").capture_multidict(_multidict(pairs)) is None
    plan = FAST["presets and extras"]
    assert _seen(capture_multidict(_multidict(pairs), plan)) == _seen(
        capture_pairs(_asgi(pairs), plan)
    )


@pytest.mark.parametrize(
    ("tracestate", "fast"),
    [
        ("congo=t61rcWkgMzE", True),
        ("a=1,ab=2", True),
        ("a=1,b=2,a=3", True),  # a duplicated key is kept as it came
        ("t@v=1,t@w=2,t@v=3", True),
        ("7bc5d33e-980fa2b9@dt=fw4;0", True),
        ("k@v=x y", True),
        ("foo@=1,foo@@bar=2", True),
        ("@foo=1", False),
        ("a=1 ,b=2", False),  # the general path strips the blank, the fast path leaves it to it
        ("a=1,,b=2", False),  # an empty member: valid, for the general path
        ("a=" + "v" * 256, True),
        ("a=" + "v" * 257, False),
        ("a" * 256 + "=1", True),
        ("a" * 257 + "=1", False),
        (",".join(f"k{i}=v" for i in range(32)), True),
        (",".join(f"k{i}=v" for i in range(33)), False),
        ("a=" + "v" * 254 + ",b=" + "v" * 253, True),  # 512 characters: the default cap
        ("a=" + "v" * 254 + ",b=" + "v" * 254, False),
    ],
)
@pytest.mark.parametrize("request_id", ["r", "r" * 200])
def test_tracestate_members_and_cap_on_the_fast_path(
    tracestate: str, fast: bool, request_id: str
) -> None:
    pairs = [("x-request-id", request_id), ISTIO_REQUEST[2], ("tracestate", tracestate)]
    assert _assert_same_answer(pairs, "default") is fast


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
        (("x-b3-parentspanid", "0" * 16), True),  # no parent, as brave reads it
        (("x-b3-parentspanid", ""), True),
        (("traceparent", "00-" + "0" * 31 + "1-00f067aa0ba902b7-01"), True),
        (("traceparent", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"), False),
        (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"), False),
        (("b3", "0" * 16 + "4bf92f3577b34da6-a2fb4a1d1a96d312-1-" + "0" * 15 + "1"), True),
        (("b3", "0" * 32 + "-a2fb4a1d1a96d312"), False),
        (("b3", "4bf92f3577b34da6-" + "0" * 16), False),
        (("b3", "4bf92f3577b34da6-a2fb4a1d1a96d312-d-" + "0" * 16), True),
        (("b3", "d"), True),
    ],
)
def test_all_zero_ids_leave_the_fast_path(pair: tuple[str, str], fast: bool) -> None:
    pairs = [(name, value) for name, value in ISTIO_REQUEST if name != pair[0]] + [pair]
    assert _assert_same_answer(pairs, "default") is fast


@pytest.mark.parametrize(("value", "fast"), [("bl ue", True), (" blue", False), ("blue ", False)])
def test_an_extra_header_takes_the_fast_path_without_surrounding_blanks(
    value: str, fast: bool
) -> None:
    assert _assert_same_answer([("x-canary", value)], "presets and extras") is fast


@settings(max_examples=400, deadline=None)
@given(
    pairs=st.one_of(_mesh_requests(), st.lists(st.tuples(_NAMES, _VALUES), max_size=10)),
    config_name=st.sampled_from(list(CONFIGS)),
)
def test_possessive_repeats_change_no_answer(
    pairs: list[tuple[str, str]], config_name: str
) -> None:
    pattern = _fast_path(config_name).pattern
    greedy = pattern.replace("}+", "}")
    if sys.version_info < (3, 11):
        assert pattern == greedy  # 3.10 has no possessive repeats: the greedy form runs
        return
    assert pattern == possessive(greedy) != greedy
    environ = _environ(pairs)
    joined = "\n".join(
        environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        for name in _line_names(config_name)
    )
    assert (re.fullmatch(pattern, joined) is None) is (re.fullmatch(greedy, joined) is None)


def _line_names(config_name: str) -> list[str]:
    """The fast path's line order, read back from what it accepts: one name per line."""
    plan = FAST[config_name]
    names = [plan.request_id_name] if plan.forwards_request_id else []
    order = {name: i for i, name in enumerate(h.RULES)}
    rules = sorted((rule for rule, _ in plan.rules), key=lambda r: order.get(r.name, len(order)))
    return names + [rule.name for rule in rules]


_ASSERTIONS = re.compile(r"\(\?<?!(?:[^()]|\([^()]*\))*\)")


def _rules_and_caps() -> list[tuple[str, int]]:
    """Each rule at caps its fragment can fill: its own longest value (and less where values
    vary in length), or a few caps for the fragments bounded by the cap itself."""
    cases = []
    for name, rule in sorted(h.RULES.items()):
        caps = [1, 16, 200] if rule.longest is None else [rule.longest]
        if name == h.TRACESTATE:
            caps += [64, 512]
        cases += [(name, cap) for cap in caps]
    return cases


@pytest.mark.parametrize(("name", "cap"), _rules_and_caps())
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_whatever_a_fragment_accepts_its_rule_accepts(
    name: str, cap: int, data: st.DataObject
) -> None:
    rule = h.RULES[name]
    fragment = h.fragment_for(rule, cap)
    accepts = re.compile(fragment).fullmatch
    # Hypothesis draws from the fragment without its look-arounds; the fragment itself filters.
    candidates = st.from_regex(
        _ASSERTIONS.sub("", fragment), fullmatch=True, alphabet=st.characters(max_codepoint=127)
    )
    value = data.draw(candidates.filter(lambda v: accepts(v) is not None), label="value")
    assert rule.is_valid(value) or (name == h.REQUEST_ID and value == "")
    assert len(value) <= cap
