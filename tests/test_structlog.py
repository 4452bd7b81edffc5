"""``meshprop.structlog.add_context``: the request's ids on every structlog event."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
import structlog

import meshprop
from meshprop.structlog import add_context
from tests import logging_scenarios as scenarios
from tests.logging_scenarios import SPAN, TRACE


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """structlog configured as the README shows, writing to a buffer."""
    stream = io.StringIO()
    structlog.configure(
        processors=[
            meshprop.structlog.add_context,
            structlog.processors.KeyValueRenderer(
                key_order=["request_id", "trace_id", "span_id", "event"]
            ),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    yield stream
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


async def test_each_request_logs_its_own_id_also_when_requests_overlap(
    output: io.StringIO,
) -> None:
    log = structlog.get_logger()
    log.info("idle")
    served = await scenarios.serve_requests(log.info)
    assert lines(output) == [
        "request_id='-' trace_id='-' span_id='-' event='idle'",
        *scenarios.expected(
            served, lambda rid, msg: f"request_id={rid!r} trace_id='-' span_id='-' event={msg!r}"
        ),
    ]


def test_the_trace_ids_that_came_in_and_an_active_span_s(output: io.StringIO) -> None:
    own_span = scenarios.log_received_then_traced(structlog.get_logger().info)
    assert lines(output) == [
        f"request_id='abc' trace_id={TRACE!r} span_id={SPAN!r} event='received'",
        f"request_id='abc' trace_id={TRACE!r} span_id={own_span!r} event='traced'",
    ]


def test_a_marked_exception_names_its_own_request(output: io.StringIO) -> None:
    """As a server logs an app's exception: after its request, maybe inside another."""
    log = structlog.get_logger()
    error = scenarios.failed_request_error()
    with meshprop.bind({"x-request-id": "later-request"}):
        try:
            raise error
        except RuntimeError:
            log.exception("unhandled")
        log.error("passed", exc_info=error)
        log.error("as a tuple", exc_info=(RuntimeError, error, None))
        log.info("working")
    assert [line.split(" trace_id")[0] for line in lines(output)] == [
        "request_id='failed-request'",
        "request_id='failed-request'",
        "request_id='failed-request'",
        "request_id='later-request'",
    ]


def test_keys_already_in_the_event_are_kept() -> None:
    with meshprop.bind({"x-request-id": "abc"}):
        event = add_context(None, "info", {"event": "e", "request_id": "bound", "span_id": None})
    assert event == {"event": "e", "request_id": "bound", "trace_id": "-", "span_id": None}
