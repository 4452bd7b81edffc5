"""``meshprop.sentry.setup()``: every Sentry event tagged with its request's ids.

Sentry runs for real, with its own ``Transport`` interface: the test transport keeps each
envelope instead of sending it, so the DSN's host is never contacted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

import meshprop
from tests import logging_scenarios as scenarios
from tests.logging_scenarios import REJECTED_ID, SPAN, TRACE


class KeepingTransport(Transport):
    """Keeps the events Sentry would send."""

    events: list[dict[str, Any]]

    def capture_envelope(self, envelope: Envelope) -> None:
        event = envelope.get_event()
        if event is not None:
            self.events.append(dict(event))


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    kept: list[dict[str, Any]] = []
    KeepingTransport.events = kept
    sentry_sdk.init(
        dsn="https://public@sentry.invalid/1",
        transport=KeepingTransport,
        default_integrations=False,  # the test process's logging and threads stay unpatched
        auto_enabling_integrations=False,
    )
    meshprop.sentry.setup()
    meshprop.sentry.setup()  # a second call adds nothing
    yield kept
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def ids(event: dict[str, Any]) -> dict[str, str]:
    """The event's id tags (other code in the process may set tags of its own on Sentry's
    scopes: asgi-correlation-id's middleware sets ``transaction_id``)."""
    tags = event.get("tags", {})
    return {name: tags[name] for name in ("request_id", "trace_id") if name in tags}


def tagged(event: dict[str, Any]) -> str:
    """``request_id message``, the event's tag or ``-`` when it has none."""
    return f"{ids(event).get('request_id', '-')} {event['message']}"


async def test_each_event_is_tagged_with_its_own_request_also_when_requests_overlap(
    events: list[dict[str, Any]],
) -> None:
    sentry_sdk.capture_message("idle")
    served = await scenarios.serve_requests(sentry_sdk.capture_message)
    assert [tagged(event) for event in events] == [
        "- idle",
        *scenarios.expected(served, lambda rid, msg: f"{rid} {msg}"),
    ]
    assert ids(events[0]) == {}
    assert REJECTED_ID not in json.dumps(events)  # the rejected header is nowhere in any event


def test_the_trace_id_is_a_tag_too(events: list[dict[str, Any]]) -> None:
    with meshprop.bind({"x-request-id": "abc", "b3": f"{TRACE}-{SPAN}-1"}):
        sentry_sdk.capture_message("traced")
    with meshprop.bind({"x-request-id": "untraced"}):
        sentry_sdk.capture_message("untraced")
    assert [ids(event) for event in events] == [
        {"request_id": "abc", "trace_id": TRACE},
        {"request_id": "untraced"},
    ]


def test_a_marked_exception_names_its_own_request(events: list[dict[str, Any]]) -> None:
    """As an error handler reports an app's exception: after its request, maybe in another."""
    error = scenarios.failed_request_error()
    with meshprop.bind({"x-request-id": "later-request"}):
        sentry_sdk.capture_exception(error)
        try:
            raise RuntimeError("raised in the later request")
        except RuntimeError:
            sentry_sdk.capture_exception()
    assert [ids(event) for event in events] == [
        {"request_id": "failed-request"},
        {"request_id": "later-request"},
    ]


def test_a_tag_the_app_set_is_kept(events: list[dict[str, Any]]) -> None:
    with meshprop.bind({"x-request-id": "abc"}), sentry_sdk.new_scope() as scope:
        scope.set_tag("request_id", "the-apps-own")
        sentry_sdk.capture_message("own tag")
    assert ids(events[0]) == {"request_id": "the-apps-own"}
