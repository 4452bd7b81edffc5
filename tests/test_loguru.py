"""``meshprop.loguru.patcher``: the request's ids in every loguru record's ``extra``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

import meshprop
from tests import logging_scenarios as scenarios
from tests.logging_scenarios import SPAN, TRACE

FORMAT = "{extra[request_id]} {extra[trace_id]} {extra[span_id]} {message}"


@pytest.fixture
def output() -> Iterator[list[str]]:
    """loguru configured as the README shows, writing each line to a list."""
    written: list[str] = []
    logger.configure(patcher=meshprop.loguru.patcher)
    sink = logger.add(lambda message: written.append(str(message).rstrip("\n")), format=FORMAT)
    yield written
    logger.remove(sink)
    logger.configure(patcher=lambda record: None)  # loguru keeps a patcher until replaced


async def test_each_request_logs_its_own_id_also_when_requests_overlap(
    output: list[str],
) -> None:
    logger.info("idle")
    served = await scenarios.serve_requests(logger.info)
    assert output == [
        "- - - idle",
        *scenarios.expected(served, lambda rid, msg: f"{rid} - - {msg}"),
    ]


def test_the_trace_ids_that_came_in_and_an_active_span_s(output: list[str]) -> None:
    own_span = scenarios.log_received_then_traced(logger.info)
    assert output == [f"abc {TRACE} {SPAN} received", f"abc {TRACE} {own_span} traced"]


def test_a_marked_exception_names_its_own_request(output: list[str]) -> None:
    """As a server logs an app's exception: after its request, maybe inside another."""
    error = scenarios.failed_request_error()
    with meshprop.bind({"x-request-id": "later-request"}):
        try:
            raise error
        except RuntimeError:
            logger.exception("unhandled")
        logger.opt(exception=error).error("passed")
        logger.info("working")
    assert [line.splitlines()[0] for line in output] == [  # each without its traceback
        "failed-request - - unhandled",
        "failed-request - - passed",
        "later-request - - working",
    ]


def test_values_bound_by_the_app_are_kept(output: list[str]) -> None:
    with meshprop.bind({"x-request-id": "abc"}):
        logger.bind(request_id="bound").info("bound")
        with logger.contextualize(trace_id="contextualized"):
            logger.info("contextualized")
    assert output == ["bound - - bound", "abc contextualized - contextualized"]
