"""A small HTTP/1.1 load generator, run as its own process against one server on loopback.

Keep-alive connections each send the benchmark request and read the whole response before the
next one (no pipelining). It stops at a request count or after a number of seconds, whichever
comes first, and prints one JSON line: requests, seconds, errors.

    python -m benchmarks._loadgen --port 8000 --seconds 3 --max-requests 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from ._workload import PATH, REQUEST_HEADERS


def _request_bytes(port: int) -> bytes:
    lines = [f"GET {PATH} HTTP/1.1", f"host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in REQUEST_HEADERS if name != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _connection(port: int, deadline: float, budget: list[int], counts: list[int]) -> None:
    request = _request_bytes(port)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts[0 if status == b"200" else 1] += 1
    finally:
        writer.close()


async def _run(port: int, seconds: float, max_requests: int, connections: int) -> dict[str, float]:
    counts = [0, 0]
    budget = [max_requests]
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_connection(port, deadline, budget, counts) for _ in range(connections)))
    return {
        "requests": counts[0],
        "errors": counts[1],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(_run(args.port, args.seconds, args.max_requests, args.connections))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
