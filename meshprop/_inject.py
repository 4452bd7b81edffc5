"""Writing the forwarded headers into a message's own headers, for producers that are not HTTP
clients: Kafka, AMQP, Celery.

A message's headers come in two shapes: a mapping (AMQP, aio-pika, confluent-kafka's dict,
Celery's task headers) or a list of ``(name, value)`` pairs (kafka-python and confluent-kafka,
values in bytes). Either gets what an HTTP client would add (``outbound_headers``), with the same
rule that a header the producer set wins, compared case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, TypeVar

from ._config import Config
from ._outbound import RECORDERS, names_to_add, outbound_headers, record_call
from ._plan import plan_for

Carrier = TypeVar("Carrier", bound="MutableMapping[Any, Any] | list[Any]")


def inject(
    carrier: Carrier,
    url: str | None = None,
    *,
    config: Config | None = None,
    as_bytes: bool | None = None,
) -> Carrier:
    """Add the current request's forwarded headers to ``carrier`` and return it.

    ``url`` is the destination when the message has one the scope should judge; without it
    the scope is not checked (a queue's consumer is the service's own). Outside a request, or
    for a ``url`` outside the scope, nothing is added. A name the carrier already holds, in
    any case, is left as it is, and a carrier holding any trace header gets no forwarded trace
    context beside it.

    Values are added as the carrier holds its own: bytes when its values are bytes, else str.
    An empty list takes bytes (the Kafka clients' header values), an empty mapping str;
    ``as_bytes`` decides instead when given. Names follow the carrier's names the same way,
    str when it holds none.
    """
    if not isinstance(carrier, MutableMapping | list):
        raise TypeError(
            "meshprop.inject writes into a MutableMapping or a list of (name, value) pairs, "
            f"not {type(carrier).__name__}"
        )
    forwarded = outbound_headers(url, config=config)
    added = _add_missing(carrier, forwarded, as_bytes) if forwarded else ()
    if RECORDERS:
        _record(carrier, url, {name: forwarded[name] for name in added}, config)
    return carrier


def _add_missing(
    carrier: MutableMapping[Any, Any] | list[Any],
    forwarded: Mapping[str, str],
    as_bytes: bool | None,
) -> tuple[str, ...]:
    """Add the forwarded headers ``carrier`` lacks, in its own form; returns their names."""
    if isinstance(carrier, MutableMapping):
        keys: Iterable[Any] = carrier.keys()
        values: Iterable[Any] = carrier.values()
        default_bytes = False
    else:
        pairs = _pairs_in(carrier)
        keys = [name for name, _ in pairs]
        values = [value for _, value in pairs]
        default_bytes = True
    present = {_lower(name) for name in keys}
    missing = names_to_add(forwarded, present)
    if not missing:
        return missing
    bytes_values = _holds_bytes(values, default_bytes) if as_bytes is None else as_bytes
    bytes_names = _holds_bytes(keys, False)
    for name in missing:
        value = forwarded[name]
        # Forwarded values are visible ASCII (the rule table checks it), so any ASCII-compatible
        # encoding gives the bytes that came in.
        key: str | bytes = name.encode("ascii") if bytes_names else name
        encoded: str | bytes = value.encode("ascii") if bytes_values else value
        if isinstance(carrier, list):
            carrier.append((key, encoded))
        else:
            carrier[key] = encoded
    return missing


def _pairs_in(carrier: list[Any]) -> list[Any]:
    """The entries of a list carrier that are pairs; anything else in it is left alone."""
    return [entry for entry in carrier if isinstance(entry, tuple | list) and len(entry) == 2]


def _record(
    carrier: MutableMapping[Any, Any] | list[Any],
    url: str | None,
    added: Mapping[str, str],
    config: Config | None,
) -> None:
    """Hand the message to the recorders (``meshprop.testing``) as an outbound call: its
    destination is ``url`` ("" without one, which the scope does not judge)."""
    in_scope = url is None or plan_for(config).scope.includes_url(url)
    carried = carrier if isinstance(carrier, MutableMapping) else _pairs_in(carrier)
    record_call("inject", None, url or "", added, in_scope, carried)


def _lower(name: object) -> str:
    if isinstance(name, bytes):
        return name.decode("latin-1").lower()
    return name.lower() if isinstance(name, str) else ""


def _holds_bytes(items: Iterable[Any], default: bool) -> bool:
    """Whether the carrier's own names or values are bytes: the first str or bytes decides."""
    for item in items:
        if isinstance(item, bytes):
            return True
        if isinstance(item, str):
            return False
    return default
