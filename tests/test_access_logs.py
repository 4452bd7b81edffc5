"""The request id in the access logs of real uvicorn and gunicorn processes, on 127.0.0.1.

Each server runs the README's recipe unchanged (the config files in ``examples/logging/``, the
gunicorn flags below) in its own process, serves the requests of ``tests.logging_scenarios``,
and is stopped; then its log is read whole.

uvicorn logs an access line when the app sends ``http.response.start``, inside the app's
``send`` call and so inside meshprop's context: ``ContextFilter`` (or ``ContextFormatter``) on
the access handler sees the request's id. A response uvicorn sends itself, its 500 for an app
that raised before starting one, is sent after meshprop's context is reset: its line shows
``-`` (the "Exception in ASGI application" line before it names the request).

gunicorn writes its access line after the response, from its own atoms, in a context meshprop
has already left; the response-header atom ``%({x-request-id}o)s`` reads the id meshprop
echoed, which is the validated or generated one, never a rejected header.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gunicorn.config import KNOWN_SETTINGS  # type: ignore[import-untyped]

from tests.logging_scenarios import (
    FIRST_ID,
    INCOMING_ID,
    REJECTED_ID,
    SECOND_ID,
    Served,
    expected,
    send_requests,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = PROJECT_ROOT / "examples" / "logging"
STOP_SECONDS = 15.0
REQUEST_SECONDS = 30.0  # the first request waits for the server to start

#: The README's gunicorn flags.
GUNICORN_FORMAT = '%(h)s "%(r)s" %(s)s rid=%({x-request-id}o)s'
GUNICORN_FLAGS = ["--access-logfile", "access.log", "--access-logformat", GUNICORN_FORMAT]


#: gunicorn >= 24 opens a control socket in the home directory unless told not to; a test server
#: keeps out of it (and out of another gunicorn's).
NO_CONTROL_SOCKET = [
    setting.cli[0] for setting in KNOWN_SETTINGS if setting.name == "control_socket_disable"
]


@contextlib.contextmanager
def server(argv: list[str], directory: Path) -> Iterator[str]:
    """Run ``python -m argv…`` in ``directory`` on a loopback socket it inherits as ``{fd}``;
    yield the base URL. stdout and stderr go to files there. Stopped (SIGTERM, then SIGKILL)
    on the way out, whatever happened inside."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)  # requests wait in the backlog until the server accepts them
    listener.set_inheritable(True)
    fd = listener.fileno()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    with (
        listener,
        open(directory / "stdout.log", "wb") as stdout,
        open(directory / "stderr.log", "wb") as stderr,
    ):
        process = subprocess.Popen(
            [sys.executable, "-m", *(arg.replace("{fd}", str(fd)) for arg in argv)],
            cwd=directory,
            env=env,
            stdout=stdout,
            stderr=stderr,
            pass_fds=[fd],
        )
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_SECONDS)


async def requests_to(url: str) -> Served:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_SECONDS, trust_env=False) as client:
        return await send_requests(client)


async def boom(url: str, request_id: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_SECONDS, trust_env=False) as client:
        return await client.get("/boom", headers={"x-request-id": request_id})


def read_lines(path: Path) -> list[str]:
    """The log's lines, with the client's ephemeral port written as PORT."""
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", path.read_text()).splitlines()


def uvicorn(app: str, log_config: str) -> list[str]:
    return ["uvicorn", f"tests.access_log_apps:{app}", "--fd", "{fd}", "--log-config", log_config]


#: What each recipe writes: its access line, app line and uvicorn error line, and how it
#: shows a status.
UVICORN_RECIPES = {
    "uvicorn-logging.json": (
        'INFO:     [{id}] 127.0.0.1:PORT - "GET {path} HTTP/1.1" {status}',
        "INFO:     [{id}] app: {message}",
        "ERROR:    [{id}] uvicorn.error: {message}",
        {200: "200 OK", 500: "500 Internal Server Error"},  # uvicorn's AccessFormatter
    ),
    "logging.ini": (
        'INFO [{id}] uvicorn.access: 127.0.0.1:PORT - "GET {path} HTTP/1.1" {status}',
        "INFO [{id}] app: {message}",
        "ERROR [{id}] uvicorn.error: {message}",
        {200: "200", 500: "500"},
    ),
}


@pytest.mark.parametrize("log_config", UVICORN_RECIPES)
async def test_uvicorn_access_lines_carry_each_requests_id(tmp_path: Path, log_config: str) -> None:
    access, app_line, error_line, statuses = UVICORN_RECIPES[log_config]
    argv = [*uvicorn("asgi", str(EXAMPLES / log_config)), "--lifespan", "off"]
    with server(argv, tmp_path) as url:
        served = await requests_to(url)
        failed = await boom(url, "boom-1")
    assert failed.status_code == 500

    def line(id_: str, path: str, status: int = 200) -> str:
        return access.format(id=id_, path=path, status=statuses[status])

    lines = read_lines(tmp_path / "stdout.log")
    assert lines[:3] == [
        line(INCOMING_ID, "/with-id"),
        line(served.generated, "/without-id"),
        line(served.replaced, "/rejected-id"),
    ]
    assert sorted(lines[3:5]) == [  # the pair, in whichever order their responses started
        line(FIRST_ID, "/first"),
        line(SECOND_ID, "/second"),
    ]
    assert lines[5:] == [line("-", "/boom", 500)]  # the 500 uvicorn sends itself
    assert REJECTED_ID not in "\n".join(lines)

    errors = read_lines(tmp_path / "stderr.log")
    assert [line for line in errors if "] app: " in line] == expected(
        served, lambda id_, message: app_line.format(id=id_, message=message)
    )
    failure = "Exception in ASGI application"
    assert [line for line in errors if failure in line] == [
        error_line.format(id="boom-1", message=failure)  # the id marked on the exception
    ]


@pytest.mark.parametrize(
    ("app", "logged_id"), [("fastapi_wrapped", "boom-2"), ("fastapi_added", "-")]
)
async def test_uvicorn_access_line_of_starlettes_500(
    tmp_path: Path, app: str, logged_id: str
) -> None:
    """Starlette's 500 leaves through meshprop when it wraps the app, not when it was added
    with ``add_middleware`` (inside ``ServerErrorMiddleware``)."""
    with server(uvicorn(app, str(EXAMPLES / "uvicorn-logging.json")), tmp_path) as url:
        failed = await boom(url, "boom-2")
    assert failed.status_code == 500
    assert read_lines(tmp_path / "stdout.log") == [
        f'INFO:     [{logged_id}] 127.0.0.1:PORT - "GET /boom HTTP/1.1" 500 Internal Server Error'
    ]
    errors = read_lines(tmp_path / "stderr.log")
    assert "ERROR:    [boom-2] uvicorn.error: Exception in ASGI application" in errors


async def test_gunicorn_access_lines_show_the_id_the_response_echoed(tmp_path: Path) -> None:
    argv = [
        "gunicorn",
        "--bind",
        "fd://{fd}",
        "--threads",
        "2",
        *NO_CONTROL_SOCKET,
        *GUNICORN_FLAGS,
    ]
    with server([*argv, "tests.access_log_apps:wsgi"], tmp_path) as url:
        served = await requests_to(url)

    lines = read_lines(tmp_path / "access.log")
    assert lines[:3] == [
        f'127.0.0.1 "GET /with-id HTTP/1.1" 200 rid={INCOMING_ID}',
        f'127.0.0.1 "GET /without-id HTTP/1.1" 200 rid={served.generated}',
        f'127.0.0.1 "GET /rejected-id HTTP/1.1" 200 rid={served.replaced}',
    ]
    assert sorted(lines[3:]) == [  # the pair, in whichever order gunicorn's threads wrote them
        f'127.0.0.1 "GET /first HTTP/1.1" 200 rid={FIRST_ID}',
        f'127.0.0.1 "GET /second HTTP/1.1" 200 rid={SECOND_ID}',
    ]


def test_the_readme_shows_these_recipes_unchanged() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for recipe in ("uvicorn-logging.json", "logging.ini"):
        assert (EXAMPLES / recipe).read_text() in readme, recipe
    assert f"--access-logformat '{GUNICORN_FORMAT}'" in readme
