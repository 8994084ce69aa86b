"""HTTP/1.1 over a plain socket, byte for byte: requests are sent exactly as given (any request
line, header or body a fuzz case makes) and answers are read with a bound on time.

An :class:`Answer` is what came back for one request: its status (``None`` when the server
closed the connection without answering, or did not answer in time), headers, body and how
long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

# Answers with no body whatever their headers say.
_NO_BODY = frozenset({204, 304})
_READ_LIMIT = 1 << 24


@dataclass(frozen=True)
class Answer:
    """One answer, or why there is none: ``error`` is ``"timeout"`` (nothing complete within
    the bound), ``"closed"`` (the connection ended first) or ``None``."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seconds: float = 0.0
    error: str | None = None

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None

    def describe(self, limit: int = 600) -> str:
        if self.status is None:
            return f"no answer ({self.error}) after {self.seconds:.1f}s"
        text = self.body[:limit].decode("utf-8", "replace")
        return f"{self.status} {text}"


class NoAnswer(Exception):
    """The connection ended (or never opened) before a whole answer arrived."""


async def read_answer(reader: asyncio.StreamReader, *, head_only: bool = False) -> Answer:
    """Read one whole answer (1xx interim answers are skipped). Raises :class:`NoAnswer` when
    the stream ends first."""
    started = time.monotonic()
    while True:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise NoAnswer(type(exc).__name__) from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise NoAnswer(f"not an HTTP status line: {lines[0][:100]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            continue
        break
    try:
        if head_only or status in _NO_BODY:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body = await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
        raise NoAnswer(f"body cut short: {type(exc).__name__}") from None
    return Answer(status, headers, body, time.monotonic() - started)


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            await _skip_trailers(reader)
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _skip_trailers(reader: asyncio.StreamReader) -> None:
    while (await reader.readuntil(b"\r\n")) != b"\r\n":
        pass


def _out_of_step(reader: asyncio.StreamReader) -> bool:
    """Whether the server sent more than the answers asked for: bytes past the last answer read
    (the answer to a second request that the last request's bytes held, e.g. a body longer
    than its Content-Length, which the server parses as the start of another request and
    answers 400 before it closes). The next answer read would be that one, not the next
    request's: the connection is out of step and must be replaced. (StreamReader has no
    public way to see what it holds unread.)"""
    return bool(getattr(reader, "_buffer", b""))


class Connection:
    """A kept-alive connection to one HTTP server, reopened when the server ends it or sends
    more than it was asked for."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, limit=_READ_LIMIT)
        return self._streams

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None

    async def exchange(self, data: bytes, *, head_only: bool = False) -> Answer:
        """Send one request and read its answer within ``timeout`` seconds. A kept-alive
        connection that the server had already closed is reopened once (nothing of the
        request reached the server then)."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                for attempt in (0, 1):
                    if self._streams is not None and _out_of_step(self._streams[0]):
                        self.close()
                    fresh = self._streams is None
                    reader, writer = await self._open()
                    try:
                        writer.write(data)
                        with contextlib.suppress(ConnectionError):
                            # A server may answer and close before it has read everything.
                            await writer.drain()
                        answer = await read_answer(reader, head_only=head_only)
                    except (NoAnswer, ConnectionError) as exc:
                        self.close()
                        if fresh or attempt:
                            return Answer(None, seconds=time.monotonic() - started,
                                          error=f"closed ({exc})")
                        continue
                    if answer.headers.get("connection", "").lower() == "close" or (
                        _out_of_step(reader)
                    ):
                        self.close()
                    return answer
        except TimeoutError:
            self.close()
            return Answer(None, seconds=time.monotonic() - started, error="timeout")
        except OSError as exc:
            self.close()
            return Answer(None, seconds=time.monotonic() - started, error=f"closed ({exc})")
        raise AssertionError("unreachable")


def encode_request(
    method: str,
    target: str | bytes,
    headers: list[tuple[str | bytes, str | bytes]],
    body: bytes | None,
    *,
    content_length: bool = True,
) -> bytes:
    """The bytes of one HTTP/1.1 request; ``str`` parts are UTF-8 (lone surrogates included, as
    the bytes that would encode them), ``bytes`` are sent as they are."""

    def b(value: str | bytes) -> bytes:
        return value if isinstance(value, bytes) else value.encode("utf-8", "surrogatepass")

    lines = [b(method) + b" " + b(target) + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [b(name) + b": " + b(value) for name, value in headers]
    if content_length and body is not None:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


async def call(
    conn: Connection,
    method: str,
    path: str,
    headers: dict[str, str],
    doc: Any = None,
    *,
    content_type: str = "application/json",
) -> Answer:
    """A well-formed request with an optional JSON body (set-up and checks, not fuzzing)."""
    body = None if doc is None else orjson.dumps(doc)
    pairs: list[tuple[str | bytes, str | bytes]] = list(headers.items())
    if body is not None:
        pairs.append(("Content-Type", content_type))
    elif method in ("POST", "PUT", "PATCH"):
        body = b""
    return await conn.exchange(encode_request(method, path, pairs, body),
                               head_only=method == "HEAD")
