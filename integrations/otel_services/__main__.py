"""Run one hop of the OpenTelemetry interop test (see the package docstring)."""

from __future__ import annotations

import argparse
import os
import socket

from .._parent_watch import exit_with_parent


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m integrations.otel_services")
    parser.add_argument("kind", choices=["fastapi", "flask", "aiohttp", "plain-fastapi"])
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--spans", help="JSON-lines file for finished spans (no OTel without)")
    parser.add_argument("--propagators", help="OTEL_PROPAGATORS for this process")
    parser.add_argument("--next", dest="next_url")
    parser.add_argument("--parent-pid", type=int)
    args = parser.parse_args()
    if args.parent_pid is not None:
        exit_with_parent(args.parent_pid)
    if args.propagators:
        # Read by opentelemetry.propagate at import: the stock entry-point loading is exercised.
        os.environ["OTEL_PROPAGATORS"] = args.propagators

    from . import _apps

    listener = socket.socket(fileno=args.fd)
    _apps.serve(args.kind, args.next_url, args.spans, listener)


if __name__ == "__main__":
    main()
