"""``meshprop.logging.ContextFilter``: ids on every record, never a dropped one."""

from __future__ import annotations

import io
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context

import meshprop
from meshprop._snapshot import CURRENT, mark_request
from meshprop.logging import ContextFilter, ContextFormatter
from meshprop.otel import MeshPropagator
from tests import logging_scenarios as scenarios
from tests.logging_scenarios import SPAN, TRACE

FORMAT = "%(request_id)s %(trace_id)s %(span_id)s %(message)s"


@pytest.fixture
def log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(ContextFilter())
    logger = logging.getLogger("meshprop-test-logging")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_outside_a_request_every_field_is_a_dash(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    logger.info("idle")
    assert lines(stream) == ["- - - idle"]


def test_inside_a_request_the_ids_that_came_in(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    with meshprop.bind({"x-request-id": "abc", "b3": f"{TRACE}-{SPAN}-1"}):
        logger.info("working")
    logger.info("done")
    assert lines(stream) == [f"abc {TRACE} {SPAN} working", "- - - done"]


def test_an_active_span_gives_its_own_ids(log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = log
    own_span = scenarios.log_received_then_traced(logger.info)
    assert lines(stream) == [f"abc {TRACE} {SPAN} received", f"abc {TRACE} {own_span} traced"]


def test_a_request_served_by_opentelemetry_alone(log: tuple[logging.Logger, io.StringIO]) -> None:
    """No meshprop adapter: the snapshot the propagator stored in the OTel context is used."""
    logger, stream = log
    context = MeshPropagator().extract(
        {"x-request-id": "abc", "traceparent": f"00-{TRACE}-{SPAN}-01"}
    )
    token = otel_context.attach(context)
    try:
        logger.info("otel only")
    finally:
        otel_context.detach(token)
    assert lines(stream) == [f"abc {TRACE} {SPAN} otel only"]


def test_a_marked_exception_logged_after_the_request_keeps_its_id(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = log
    error = scenarios.failed_request_error()
    try:
        raise error
    except RuntimeError:
        logger.exception("unhandled")  # as a server logs it, after the context is reset
    assert lines(stream)[0] == "failed-request - - unhandled"


def test_a_marked_exception_names_its_own_request_over_the_context(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    """A server may log a request's exception in a task that still holds another request's
    snapshot (uvicorn on a keep-alive connection): the exception's own id wins."""
    logger, stream = log
    error = scenarios.failed_request_error()
    with meshprop.bind({"x-request-id": "earlier-request"}):
        try:
            raise error
        except RuntimeError:
            logger.exception("unhandled")
        try:
            raise RuntimeError("not through an adapter")
        except RuntimeError:
            logger.exception("handled in the request")
        logger.info("working")
    logged = [line for line in lines(stream) if " - - " in line]  # the records, not tracebacks
    assert logged == [
        "failed-request - - unhandled",
        "earlier-request - - handled in the request",
        "earlier-request - - working",
    ]


def test_values_passed_with_extra_win_and_no_record_is_dropped() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.request_id = "explicit"
    assert ContextFilter().filter(record) is True
    added = {name: record.__dict__[name] for name in ("request_id", "trace_id", "span_id")}
    assert added == {"request_id": "explicit", "trace_id": "-", "span_id": "-"}


def test_a_record_about_a_marked_request_gets_its_id(
    log: tuple[logging.Logger, io.StringIO],
) -> None:
    """Django logs a 4xx response after its middleware, with the request on the record."""
    logger, stream = log
    request = type("Request", (), {})()
    with meshprop.bind({"x-request-id": "served"}):
        snapshot = CURRENT.get()
        assert snapshot is not None
        mark_request(request, snapshot)
    logger.warning("Not Found: /x", extra={"request": request})
    logger.warning("Not Found: /y", extra={"request": object()})
    assert lines(stream) == ["served - - Not Found: /x", "- - - Not Found: /y"]


#: The README's dictConfig recipe.
README_DICT_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"meshprop": {"()": "meshprop.logging.ContextFilter"}},
    "formatters": {
        "ids": {"format": "%(levelname)s [%(request_id)s %(trace_id)s] %(name)s: %(message)s"}
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "filters": ["meshprop"], "formatter": "ids"}
    },
    "root": {"handlers": ["console"], "level": "INFO"},
}


@pytest.fixture
def root_logger_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_the_readme_dict_config_logs_each_requests_own_id(
    root_logger_restored: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.config.dictConfig(README_DICT_CONFIG)
    app_log = logging.getLogger("app")  # a child logger: its records reach the root's handler
    app_log.info("idle")
    served = await scenarios.serve_requests(app_log.info)
    logged = capsys.readouterr().err.splitlines()
    assert [line for line in logged if "] app: " in line] == [  # not the test client's lines
        "INFO [- -] app: idle",
        *scenarios.expected(served, lambda id_, message: f"INFO [{id_} -] app: {message}"),
    ]


def test_context_formatter_fills_the_fields_a_filter_would() -> None:
    """For an ``.ini`` ``fileConfig``, which can name a formatter class but attach no filter
    (``tests/test_access_logs.py`` runs it under uvicorn's ``--log-config logging.ini``)."""
    formatter = ContextFormatter(FORMAT)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "formatted", None, None)
    with meshprop.bind({"x-request-id": "abc", "b3": f"{TRACE}-{SPAN}-1"}):
        assert formatter.format(record) == f"abc {TRACE} {SPAN} formatted"
    passed = logging.LogRecord("x", logging.INFO, __file__, 1, "extra", None, None)
    passed.request_id = "explicit"
    assert formatter.format(passed) == "explicit - - extra"


def test_context_formatter_from_an_ini_file(tmp_path: Path, root_logger_restored: None) -> None:
    ini = tmp_path / "logging.ini"
    log_file = str(tmp_path / "app.log")
    ini.write_text(
        "[loggers]\nkeys = root\n\n[handlers]\nkeys = file\n\n[formatters]\nkeys = meshprop\n\n"
        "[logger_root]\nlevel = INFO\nhandlers = file\n\n"
        f"[handler_file]\nclass = FileHandler\nformatter = meshprop\nargs = ({log_file!r},)\n\n"
        "[formatter_meshprop]\nclass = meshprop.logging.ContextFormatter\n"
        "format = %(request_id)s %(message)s\n"
    )
    logging.config.fileConfig(ini, disable_existing_loggers=False)
    with meshprop.bind({"x-request-id": "from-ini"}):
        logging.getLogger("app").info("inside")
    logging.getLogger("app").info("outside")
    for handler in logging.getLogger().handlers:
        handler.close()
    assert (tmp_path / "app.log").read_text().splitlines() == ["from-ini inside", "- outside"]
