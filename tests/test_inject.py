"""``meshprop.inject`` writes the forwarded headers into a message's headers, and
``meshprop.bind`` reads them back on the consumer's side, in the shapes message clients use."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest

import meshprop
from meshprop import Config

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
INBOUND = {"x-request-id": "req-1", "traceparent": TRACEPARENT, "x-b3-sampled": "1"}


class Headers(MutableMapping[str, Any]):
    """A case-insensitive mapping, as AMQP clients and HTTP libraries keep headers."""

    def __init__(self, **items: Any) -> None:
        self._items = {name.lower(): (name, value) for name, value in items.items()}

    def __getitem__(self, name: str) -> Any:
        return self._items[name.lower()][1]

    def __setitem__(self, name: str, value: Any) -> None:
        self._items[name.lower()] = (name, value)

    def __delitem__(self, name: str) -> None:
        del self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


def test_outside_a_request_nothing_is_added() -> None:
    headers: dict[str, Any] = {"content-type": "application/json"}
    assert meshprop.inject(headers) is headers
    assert headers == {"content-type": "application/json"}
    assert meshprop.inject([]) == []


def test_a_dict_gets_the_forwarded_headers_as_str() -> None:
    with meshprop.bind(INBOUND):
        headers = meshprop.inject({"priority": 5})
    assert headers == {"priority": 5, **INBOUND}


def test_kafka_headers_get_bytes_values() -> None:
    """kafka-python and confluent-kafka take ``[(str, bytes)]``; an empty list is that shape."""
    with meshprop.bind(INBOUND):
        empty: list[tuple[str, bytes]] = meshprop.inject([])
        existing = meshprop.inject([("event-type", b"order-created")])
    expected = [(name, value.encode()) for name, value in INBOUND.items()]
    assert empty == expected
    assert existing == [("event-type", b"order-created"), *expected]


def test_pairs_with_str_values_get_str_and_bytes_names_get_bytes() -> None:
    with meshprop.bind({"x-request-id": "req-1"}):
        assert meshprop.inject([("source", "web")]) == [
            ("source", "web"),
            ("x-request-id", "req-1"),
        ]
        assert meshprop.inject([(b"source", b"web")]) == [
            (b"source", b"web"),
            (b"x-request-id", b"req-1"),
        ]


def test_as_bytes_decides_over_the_carrier() -> None:
    with meshprop.bind({"x-request-id": "req-1"}):
        assert meshprop.inject([], as_bytes=False) == [("x-request-id", "req-1")]
        assert meshprop.inject({}, as_bytes=True) == {"x-request-id": b"req-1"}
        assert meshprop.inject({"a": b"b"}) == {"a": b"b", "x-request-id": b"req-1"}


def test_a_header_the_producer_set_wins_in_any_case() -> None:
    with meshprop.bind(INBOUND):
        headers = meshprop.inject(Headers(**{"X-Request-ID": "mine"}))
        pairs = meshprop.inject([("X-Request-Id", b"mine")])
    assert dict(headers) == {
        "X-Request-ID": "mine",
        "x-b3-sampled": "1",
        "traceparent": TRACEPARENT,
    }
    assert pairs == [
        ("X-Request-Id", b"mine"),
        ("traceparent", TRACEPARENT.encode()),
        ("x-b3-sampled", b"1"),
    ]


def test_a_producer_with_its_own_trace_gets_none_of_the_forwarded_trace() -> None:
    own = "00-11111111111111111111111111111111-2222222222222222-01"
    with meshprop.bind({**INBOUND, "tracestate": "rojo=00f067aa0ba902b7"}):
        headers = meshprop.inject({"traceparent": own})
    assert headers == {"traceparent": own, "x-request-id": "req-1"}


def test_the_url_is_judged_by_the_scope() -> None:
    with meshprop.bind(INBOUND):
        assert meshprop.inject({}, "https://events.example.com/ingest") == {}
        assert meshprop.inject({}, "http://orders.shop.svc.cluster.local/") == INBOUND
        wide: dict[str, str] = meshprop.inject(
            {}, "https://events.example.com/", config=Config(scope="all")
        )
    assert wide == INBOUND


def test_entries_that_are_not_pairs_are_left_alone() -> None:
    carrier: list[Any] = [None, ("x-request-id",), 7, ("x-request-id", b"mine")]
    with meshprop.bind(INBOUND):
        meshprop.inject(carrier)
    assert carrier[:4] == [None, ("x-request-id",), 7, ("x-request-id", b"mine")]
    assert [name for name, _ in carrier[4:]] == ["traceparent", "x-b3-sampled"]


@pytest.mark.parametrize("carrier", [None, ("a", "b"), "x-request-id: 1", 42])
def test_a_carrier_that_cannot_take_headers_is_a_type_error(carrier: Any) -> None:
    with meshprop.bind(INBOUND), pytest.raises(TypeError, match="MutableMapping or a list"):
        meshprop.inject(carrier)


def test_what_inject_writes_bind_reads_back() -> None:
    with meshprop.bind(INBOUND):
        kafka: list[tuple[str, bytes]] = meshprop.inject([])
        amqp: dict[str, str] = meshprop.inject({})
    for carrier in (kafka, amqp):
        with meshprop.bind(carrier) as forwarded:
            assert dict(forwarded) == INBOUND
            assert meshprop.trace_id() == "0af7651916cd43dd8448eb211c80319c"


def test_bind_reads_kafka_headers() -> None:
    """A consumed Kafka record's headers: ``[(str, bytes)]``, in the producer's case, repeats
    and all."""
    headers = [
        ("X-Request-Id", b"req-kafka"),
        ("tracestate", b"congo=t61rcWkgMzE"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
        ("traceparent", TRACEPARENT.encode()),
        ("content-type", b"application/avro"),
    ]
    with meshprop.bind(headers) as forwarded:
        assert dict(forwarded) == {
            "x-request-id": "req-kafka",
            "traceparent": TRACEPARENT,
            "tracestate": "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
        }


def test_bind_reads_a_mapping_with_bytes_values() -> None:
    """AMQP headers (aio-pika, pika) may come back as bytes."""
    with meshprop.bind({"x-request-id": b"req-amqp", "traceparent": TRACEPARENT.encode()}):
        assert meshprop.request_id() == "req-amqp"
        assert meshprop.trace_id() == "0af7651916cd43dd8448eb211c80319c"


def test_bind_of_a_malformed_value_still_drops_it() -> None:
    with meshprop.bind([("x-request-id", b"bad\r\nid"), ("traceparent", b"00-zz")]) as forwarded:
        assert meshprop.request_id() not in (None, "bad\r\nid")
        assert set(forwarded) == {"x-request-id"}


@pytest.mark.parametrize(
    "carrier",
    [
        None,  # confluent-kafka: Message.headers() of a message without headers
        42,
        [("x-request-id", None)],  # Kafka allows a null header value
        [("x-request-id", 7), ("traceparent", 1.5)],
        {"x-request-id": None, "traceparent": 12, "x-b3-sampled": ["1"]},  # AMQP table values
        [None, ("x-request-id",), ("a", "b", "c"), 5, "xy"],
        {7: b"seven", None: "none"},
        (pair for pair in [("x-request-id", None), None]),
    ],
    ids=[
        "none",
        "int",
        "null-value",
        "number-values",
        "table-values",
        "not-pairs",
        "odd-names",
        "generator",
    ],
)
def test_bind_of_a_bad_carrier_never_raises(carrier: Any) -> None:
    with meshprop.bind(carrier) as forwarded:
        request_id = meshprop.request_id()
        assert request_id is not None  # a new one, as for a request that came with none
        assert dict(forwarded) == {"x-request-id": request_id}


def test_bind_of_a_bad_carrier_keeps_the_pairs_it_holds() -> None:
    pairs: list[Any] = [None, ("x-request-id", b"req-kept"), 5]
    with meshprop.bind(pairs):
        assert meshprop.request_id() == "req-kept"
    headers: Any = (pair for pair in [("x-b3-sampled", b"1"), None, ("x-request-id", b"req-gen")])
    with meshprop.bind(headers) as forwarded:
        assert dict(forwarded) == {"x-request-id": "req-gen", "x-b3-sampled": "1"}
