"""Run one stress server: ``python -m stress.serve KIND --fd FD --config NAME [--threads N]``.

The launcher binds the listening socket and passes it by descriptor (as the integration
services do), so the port is known before the child starts. The child exits by itself when
the launcher is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any

from integrations._parent_watch import exit_with_parent

from . import apps

KINDS = ("uvicorn-h11", "uvicorn-httptools", "hypercorn", "gunicorn", "waitress", "aiohttp")
#: The interface each kind serves: how its app sees the headers.
INTERFACE = {
    "uvicorn-h11": "asgi",
    "uvicorn-httptools": "asgi",
    "hypercorn": "asgi",
    "gunicorn": "wsgi",
    "waitress": "wsgi",
    "aiohttp": "aiohttp",
}
BACKLOG = 4096


def _uvicorn(kind: str, listener: socket.socket, config_name: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        apps.AsgiApp(config_name),
        http=kind.removeprefix("uvicorn-"),
        log_config=None,
        access_log=False,
        backlog=BACKLOG,
        timeout_keep_alive=30,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[listener]))


def _hypercorn(listener: socket.socket, config_name: str) -> None:
    import hypercorn.asyncio
    import hypercorn.config

    config = hypercorn.config.Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = None
    config.backlog = BACKLOG
    config.keep_alive_timeout = 30
    asyncio.run(hypercorn.asyncio.serve(apps.AsgiApp(config_name), config))  # type: ignore[arg-type]


def _gunicorn(listener: socket.socket, config_name: str, threads: int) -> None:
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    app = apps.WsgiApp(config_name, threads)
    options = {
        "bind": [f"fd://{listener.fileno()}"],
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "worker_connections": 20000,
        "backlog": BACKLOG,
        "keepalive": 30,
        "timeout": 300,
        "graceful_timeout": 2,
        "accesslog": None,
        "loglevel": "warning",
        # Hundreds of x-tenant-* headers are part of the attack; gunicorn's default is 100.
        "limit_request_fields": 1000,
    }

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return app

    Gunicorn().run()


def _waitress(listener: socket.socket, config_name: str, threads: int) -> None:
    import waitress  # type: ignore[import-untyped]

    waitress.serve(
        apps.WsgiApp(config_name, threads),
        sockets=[listener],
        threads=threads,
        backlog=BACKLOG,
        connection_limit=20000,
        channel_timeout=60,
        _quiet=True,
    )


def _aiohttp(listener: socket.socket, config_name: str) -> None:
    from aiohttp import web

    web.run_app(
        apps.aiohttp_app(config_name), sock=listener, print=None, access_log=None, backlog=BACKLOG
    )


def serve(kind: str, listener: socket.socket, config_name: str, threads: int) -> None:
    if kind.startswith("uvicorn-"):
        _uvicorn(kind, listener, config_name)
    elif kind == "hypercorn":
        _hypercorn(listener, config_name)
    elif kind == "gunicorn":
        _gunicorn(listener, config_name, threads)
    elif kind == "waitress":
        _waitress(listener, config_name, threads)
    elif kind == "aiohttp":
        _aiohttp(listener, config_name)
    else:
        raise SystemExit(f"unknown server kind {kind!r}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stress.serve")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", choices=sorted(apps.CONFIGS), default="default")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    serve(args.kind, socket.socket(fileno=args.fd), args.config, args.threads)


if __name__ == "__main__":
    main()
