"""HTTP/1.1 over raw sockets: requests written byte for byte (hostile ones included) and a
small response reader, blocking and asyncio. Only loopback addresses are ever dialled."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

MAX_HEAD = 1 << 20
LOOPBACK = ("127.0.0.1", "::1")


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]

    def json(self) -> Any:
        return json.loads(self.body)

    def echoes(self) -> list[str]:
        return [value.decode("latin-1") for value in self.values(b"x-request-id")]


class Incomplete(Exception):
    """The connection ended before a whole response arrived."""


def request(path: str, lines: Sequence[bytes] = (), *, close: bool = True) -> bytes:
    """A GET request with ``lines`` written as given after Host (no CRLF in them is added)."""
    head = [b"GET " + path.encode() + b" HTTP/1.1", b"Host: 127.0.0.1", *lines]
    if close:
        head.append(b"Connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n"


def _check(address: tuple[str, int]) -> None:
    if address[0] not in LOOPBACK:
        raise ValueError(f"stress traffic goes to loopback only, not {address[0]}")


def _parse_head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise Incomplete(f"bad status line {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
    return int(parts[1]), headers


def _length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(n == b"transfer-encoding" and b"chunked" in v.lower() for n, v in headers)


class _Reader(Protocol):
    def readline(self, limit: int = ..., /) -> bytes: ...
    def read(self, size: int = ..., /) -> bytes: ...


def read_response(stream: _Reader, *, body: bool = True) -> Response:
    """One response from a buffered socket file; with ``body=False`` only its head."""
    head = b""
    while True:
        line = stream.readline(MAX_HEAD)
        if not line:
            raise Incomplete("closed before the head ended" if head else "closed, no response")
        if line in (b"\r\n", b"\n"):
            if head:
                break
            continue
        head += line
        if len(head) > MAX_HEAD:
            raise Incomplete("head too long")
    status, headers = _parse_head(head.rstrip(b"\r\n"))
    if not body:
        return Response(status, headers, b"")
    length = _length(headers)
    if _chunked(headers):
        data = b""
        while True:
            size = int(stream.readline(1024).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                stream.readline(1024)
                break
            data += _exactly(stream, size)
            stream.readline(1024)
        return Response(status, headers, data)
    if length is not None:
        return Response(status, headers, _exactly(stream, length))
    if status in (204, 304) or 100 <= status < 200:
        return Response(status, headers, b"")
    return Response(status, headers, stream.read())


def _exactly(stream: _Reader, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise Incomplete(f"body cut at {len(data)} of {size} bytes")
    return data


class Connection:
    """One blocking client connection."""

    def __init__(self, address: tuple[str, int], timeout: float) -> None:
        _check(address)
        self.sock = socket.create_connection(address, timeout=timeout)
        self.stream = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, *, body: bool = True) -> Response:
        return read_response(self.stream, body=body)

    def abort(self) -> None:
        """Close with a reset, as a client that gives up mid-body does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        self.stream.close()
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(address: tuple[str, int], data: bytes, timeout: float) -> Response:
    """Send one request on a new connection and read its response."""
    with Connection(address, timeout) as connection:
        # The server may answer (400, 431) before it has read all of a huge request.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.send(data)
        return connection.response()


async def read_response_async(reader: asyncio.StreamReader) -> Response:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        raise Incomplete("closed before the head ended") from error
    status, headers = _parse_head(head[:-4])
    length = _length(headers)
    if length is None:
        raise Incomplete("no content-length")
    try:
        return Response(status, headers, await reader.readexactly(length))
    except asyncio.IncompleteReadError as error:
        raise Incomplete("body cut") from error


async def exchange_async(address: tuple[str, int], data: bytes) -> Response:
    _check(address)
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response_async(reader)
    finally:
        writer.close()
