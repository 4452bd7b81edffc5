"""Run one hop: ``python -m integrations.services FRAMEWORK --name N --fd FD [--next URL]``.

The launcher binds the listening socket and hands it over by file descriptor, so the port is
known before the process starts and no other process can take it in between.
"""

from __future__ import annotations

import argparse
import importlib
import socket

from .._parent_watch import exit_with_parent

#: Framework name -> the module that serves it.
SERVICES = {
    "fastapi": "integrations.services.fastapi_service",
    "flask": "integrations.services.flask_service",
    "aiohttp": "integrations.services.aiohttp_service",
    "grpc": "integrations.services.grpc_service",
    "fastapi-grpc": "integrations.services.fastapi_grpc_service",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m integrations.services")
    parser.add_argument("framework", choices=sorted(SERVICES))
    parser.add_argument("--name", required=True)
    parser.add_argument("--fd", type=int, required=True, help="listening socket to serve on")
    parser.add_argument("--next", dest="next_url", help="base URL of the next hop")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args()

    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    listener = socket.socket(fileno=args.fd)
    module = importlib.import_module(SERVICES[args.framework])
    module.serve(args.name, args.next_url, listener)


if __name__ == "__main__":
    main()
