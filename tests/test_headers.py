"""The validators of meshprop._headers, one rule at a time (spec vectors: test_vectors.py)."""

from __future__ import annotations

import pytest

from meshprop import _headers as h

TRACE_128 = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACE_64 = "a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_128}-{SPAN}-01"


@pytest.mark.parametrize(
    "value",
    [
        "8a9f3c2e-4b1d-4e7a-8c5f-2d6b0e1a4f93",  # UUID4
        "8a9f3c2e-4b1d-9e7a-8c5f-2d6b0e1a4f93",  # Envoy: version nibble 9 (sampled)
        "8a9f3c2e-4b1d-ae7a-8c5f-2d6b0e1a4f93",  # Envoy: version nibble a
        "8a9f3c2e-4b1d-be7a-8c5f-2d6b0e1a4f93",  # Envoy: version nibble b
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0",  # nginx $request_id
        "Root=1-5759e988-bd862e3fe1be46a994272793",  # AWS ALB
        "a",
        "x" * 200,
        "!#$%&'()*+-./:;<=>?@[\\]^_`{|}~",
    ],
)
def test_request_id_accepts_printable_ascii_without_spaces(value: str) -> None:
    assert h.is_valid_request_id(value)


@pytest.mark.parametrize(
    "value",
    ["", "a b", "a,b", "a\tb", "a\r\nb", "a\x00b", "a\x7fb", "caf\u00e9", "id\u2028"],
)
def test_request_id_rejects(value: str) -> None:
    # A comma: a WSGI server's join of a repeated header, read as its first member instead.
    assert not h.is_valid_request_id(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("abc DEF 123 !~", True),
        ("", True),
        ("tab\there", False),
        ("cr\rlf\n", False),
        ("nul\x00", False),
        ("del\x7f", False),
        ("\u00e9", False),
    ],
)
def test_is_safe_value(value: str, expected: bool) -> None:
    assert h.is_safe_value(value) is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x-request-id", True),
        ("X-Tenant_ID.v2", True),
        ("!#$%&'*+-.^_`|~", True),
        ("", False),
        ("a b", False),
        ("a:b", False),
        ("a\r\nb", False),
        ("a\tb", False),
        ("caf\u00e9", False),
        ("a(b)", False),
        ('a"b', False),
    ],
)
def test_is_header_name(name: str, expected: bool) -> None:
    assert h.is_header_name(name) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SPAN, True),
        ("0" * 16, False),
        ("0" * 15 + "1", True),
        (SPAN.upper(), False),
        (SPAN[:-1], False),
        (SPAN + "0", False),
        (SPAN[:-1] + "g", False),
        (SPAN[:-1] + "-", False),
    ],
)
def test_is_b3_span_id(value: str, expected: bool) -> None:
    assert h.is_b3_span_id(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"), [(SPAN, True), ("0" * 16, True), (SPAN.upper(), False), ("", False)]
)
def test_a_b3_parent_id_of_zeros_is_valid_and_means_no_parent(value: str, expected: bool) -> None:
    assert h.is_b3_parent_id(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(TRACE_64, True), (TRACE_128, True), ("0" * 16, False), ("0" * 32, False), ("a" * 24, False)],
)
def test_is_b3_trace_id(value: str, expected: bool) -> None:
    assert h.is_b3_trace_id(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", ("", "")),
        ("1", ("", "")),
        ("d", ("", "")),
        (f"{TRACE_128}-{SPAN}", (TRACE_128, SPAN)),
        (f"{TRACE_64}-{SPAN}-1", (TRACE_64, SPAN)),
        (f"{TRACE_128}-{SPAN}-d-{SPAN}", (TRACE_128, SPAN)),
        (f"{TRACE_128}-{SPAN}-1-{'0' * 16}", (TRACE_128, SPAN)),  # brave: no parent
        ("2", None),
        ("", None),
        ("true", None),
        (f"{TRACE_128}-{SPAN}-2", None),
        (f"{TRACE_128}-{SPAN}-1-{SPAN}-1", None),
        (f"{TRACE_128}-{SPAN}-{SPAN}", None),
        (f"{TRACE_128}", None),
    ],
)
def test_b3_single_ids(value: str, expected: tuple[str, str] | None) -> None:
    assert h.b3_single_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", True),
        ("1", True),
        ("true", True),
        ("false", True),
        ("d", False),
        ("True", False),
        ("", False),
        ("01", False),
    ],
)
def test_is_b3_sampled(value: str, expected: bool) -> None:
    assert h.is_b3_sampled(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"), [("1", True), ("0", False), ("2", False), ("", False)]
)
def test_is_b3_flags(value: str, expected: bool) -> None:
    assert h.is_b3_flags(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACEPARENT, (TRACE_128, SPAN)),
        (f"01-{TRACE_128}-{SPAN}-03", (TRACE_128, SPAN)),
        (f"fe-{TRACE_128}-{SPAN}-01-future-fields", (TRACE_128, SPAN)),
        (TRACEPARENT[:-1], None),
        (TRACEPARENT + "-", None),
        (f"ff-{TRACE_128}-{SPAN}-01", None),
        (f"00_{TRACE_128}-{SPAN}-01", None),
        (f"01-{TRACE_128}-{SPAN}-01x", None),
        (f"01-{TRACE_128}-{SPAN}-01-\r\ninjected: yes", None),
        (f"01-{TRACE_128}-{SPAN}-01-\x00", None),
        (f"01-{TRACE_128}-{SPAN}-01-caf\u00e9", None),
        ("", None),
    ],
)
def test_traceparent_ids(value: str, expected: tuple[str, str] | None) -> None:
    assert h.traceparent_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("congo=t61rcWkgMzE", True),
        ("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", True),
        ("a,,b=1", False),
        ("a=1,,b=2", True),
        ("tenant@vendor=x", True),
        ("0tenant@vendor=x", True),
        ("0key=x", True),
        ("foo@=1", True),
        ("foo@@bar=1", True),
        ("@foo=1", False),
        ("_key=1", False),
        ("k" * 255 + "@=1", True),
        ("k" * 256 + "@=1", False),
        ("foo=1 \t , \t bar=2", True),
        ("foo=1\t,bar=2", True),
        ("foo=1\tx,bar=2", False),
        ("key=value with spaces", True),
        ("key=trailing ", True),
        ("key=", False),
        ("key=a,b", False),
        ("key=a=b", False),
        ("Key=1", False),
        ("k=1,k=2", True),  # a duplicated key is kept as it came
        ("", False),
        (" , ", False),
        (",".join(f"k{i}=v" for i in range(32)), True),
        (",".join(f"k{i}=v" for i in range(33)), False),
        ("k=" + "v" * 256, True),
        ("k=" + "v" * 257, False),
    ],
)
def test_is_tracestate(value: str, expected: bool) -> None:
    assert h.is_tracestate(value) is expected


def test_catalogue() -> None:
    assert h.DEFAULT_HEADERS == (
        "x-request-id",
        "traceparent",
        "tracestate",
        "b3",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    )
    assert set(h.PRESETS) == {
        "aws",
        "baggage",
        "lightstep",
        "stackdriver",
        "skywalking",
        "datadog",
    }
    caps = {name: rule.cap for name, rule in h.RULES.items() if rule.cap is not None}
    assert caps == {
        "baggage": 8192,
        "tracestate": 512,
        "sw8": 2048,
        "sw8-correlation": 1024,
        "x-datadog-tags": 512,
        "x-amzn-trace-id": 512,
    }
    assert h.DEFAULT_MAX_LENGTH == 200


@pytest.mark.parametrize("name", sorted(h.RULES))
def test_every_rule_names_a_lower_case_header(name: str) -> None:
    rule = h.RULES[name]
    assert rule.name == name == name.lower() and h.is_header_name(name)
    assert all(required in h.RULES for required in rule.requires)
    assert rule.repeats in ("first", "join", "invalid")
