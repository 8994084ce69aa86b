"""Family "raw": malformed HTTP/1.x on a fresh socket: request lines, versions, header syntax,
Content-Length / Transfer-Encoding conflicts, chunked bodies, truncated bodies, pipelining.

A case is the bytes to send and whether they end in the middle of a request (``complete``
False): then the client half-closes its side right after sending, and the server must answer
or close within the bound; otherwise the client waits (within the bound) for one answer per
request it sent, or for the server to close.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.fuzz.fixture import Fixture
from bench.fuzz.wire import Answer, NoAnswer, read_answer

CRLF = b"\r\n"


@dataclass(frozen=True)
class RawCase:
    label: str
    data: bytes
    complete: bool = True
    expect: int = 1
    # Answers owed whatever else happens: one per well-formed request sent before anything
    # malformed (the server may answer the malformed one and close, but not drop those).
    owed: int = 0


@dataclass(frozen=True)
class RawResult:
    answers: list[Answer]
    closed: bool
    timed_out: bool
    seconds: float


def _tenant(fx: Fixture) -> list[bytes]:
    return [f"Client-ID: {fx.client_id}".encode(), f"X-Project-ID: {fx.project}".encode()]


def _request(fx: Fixture, *, method: bytes = b"GET", target: bytes | None = None,
             version: bytes = b"HTTP/1.1", headers: list[bytes] | None = None,
             body: bytes | None = None, length: bool = True, eol: bytes = CRLF) -> bytes:
    target = target if target is not None else f"/v2/queues/{fx.queue}/stats".encode()
    lines = [method + b" " + target + (b" " + version if version else b""), b"Host: 127.0.0.1"]
    lines += _tenant(fx) + (headers or [])
    if body is not None and length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return eol.join(lines) + eol + eol + (body or b"")


def _messages(fx: Fixture) -> bytes:
    return f"/v2/queues/{fx.queue}/messages".encode()


_BODY = b'{"messages": [{"body": {"raw": true}, "ttl": 300}]}'


def request_line(rng: random.Random, fx: Fixture) -> RawCase:
    tenant = CRLF.join(_tenant(fx))
    line = rng.choice((
        b"GET", b"GET /v2/ping HTTP/1.1 extra", b"G@T /v2/ping HTTP/1.1", b"get /v2/ping HTTP/1.1",
        b"FOO /v2/ping HTTP/1.1", b"X" * 10000 + b" /v2/ping HTTP/1.1",
        b"GET http://127.0.0.1/v2/ping HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET * HTTP/1.1",
        b"GET  /v2/ping  HTTP/1.1", b"GET v2/ping HTTP/1.1", b"GET /v2/ping\x00 HTTP/1.1",
        b"GET /v2/p\xffing HTTP/1.1", b"GET /v2/ping http/1.1", b"GET /v2/ping HTTP/1.1\t",
        b" GET /v2/ping HTTP/1.1", b"GET /" + b"a" * 9000 + b" HTTP/1.1",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1", b"GET /v2/ping?" + b"a=1&" * 3000 + b" HTTP/1.1",
        b"GET /v2/ping#frag HTTP/1.1", b"GET /v2/ping\tHTTP/1.1", b"GET /v2/ping HTTP/1.1 ",
        b"CONNECT 127.0.0.1:80 HTTP/1.1", b"GET //127.0.0.1/v2/ping HTTP/1.1",
        b"GET /v2/queues/\xc3\xa9/stats HTTP/1.1", b"GET /%00 HTTP/1.1", b"\x16\x03\x01\x02\x00",
    ))
    return RawCase(f"request line {line[:30]!r}",
                   line + CRLF + b"Host: x" + CRLF + tenant + CRLF + CRLF)


def version(rng: random.Random, fx: Fixture) -> RawCase:
    v = rng.choice((b"HTTP/0.9", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/3.0", b"HTTP/1.10",
                    b"HTTP/01.1", b"HTTP/1", b"HTTP/", b"HTTP/1.1.1", b"HTTP/9.9", b"",
                    b"HTTPS/1.1", b"HTTP/-1.1", b"HTTP/2", b"PRI"))
    return RawCase(f"version {v!r}", _request(fx, version=v))


def header_syntax(rng: random.Random, fx: Fixture) -> RawCase:
    kind = rng.randrange(14)
    if kind == 13:
        return RawCase("LF-only line endings", _request(fx, eol=b"\n"))
    header = (
        b"NoColon", b"Host : x", b"X-Fz: a" + CRLF + b" folded", b": empty-name",
        b"X-Fz\x00: v", b"X-Fz: v\x00w", b"X-Fz: a\rb", b"X-Fz: " + b"v" * 70000,
        CRLF.join(b"X-H%d: v" % i for i in range(200)), b"Host: second",
        b"Client-ID:", b"X-F\xc3\xa9: v", b"X-Fz: \xff\xfe",
    )[kind]
    return RawCase(f"header {header[:24]!r}", _request(fx, headers=[header]))


def framing(rng: random.Random, fx: Fixture) -> RawCase:
    """Content-Length and Transfer-Encoding that disagree or do not parse."""
    kind = rng.randrange(16)
    body = _BODY
    chunked = hex(len(body))[2:].encode() + CRLF + body + CRLF + b"0" + CRLF + CRLF
    headers, data, complete = {
        0: ([b"Content-Length: %d" % len(body), b"Transfer-Encoding: chunked"], chunked, True),
        1: ([b"Content-Length: %d" % len(body), b"Content-Length: 3"], body, True),
        2: ([b"Content-Length: %d, %d" % (len(body), len(body))], body, True),
        3: ([b"Content-Length: -1"], body, True),
        4: ([b"Content-Length: abc"], body, True),
        5: ([b"Content-Length: +%d" % len(body)], body, True),
        6: ([b"Content-Length: 18446744073709551617"], body, False),
        7: ([b"Content-Length: 0x10"], body, True),
        8: ([b"Content-Length:"], body, True),
        9: ([b"Transfer-Encoding: gzip, chunked"], chunked, True),
        10: ([b"Transfer-Encoding: chunked, chunked"], chunked, True),
        11: ([b"Transfer-Encoding: xchunked"], body, False),
        12: ([b"Transfer-Encoding: identity"], body, False),
        13: ([b"Transfer-Encoding: Chunked"], chunked, True),
        14: ([b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"], chunked, True),
        15: ([b"Content-Length: 99999999999999999999999999"], body, False),
    }[kind]
    return RawCase(f"framing {b' / '.join(headers)[:60]!r}",
                   _request(fx, method=b"POST", target=_messages(fx),
                            headers=[b"Content-Type: application/json", *headers], body=data,
                            length=False), complete=complete)


def chunks(rng: random.Random, fx: Fixture) -> RawCase:
    """Bad chunked encoding of a messages post."""
    body = _BODY
    size = hex(len(body))[2:].encode()
    kind = rng.randrange(11)
    data, complete, label = {
        0: (b"zz" + CRLF + body + CRLF + b"0" + CRLF + CRLF, True, "size not hex"),
        1: (b"f" * 20 + CRLF + body + CRLF + b"0" + CRLF + CRLF, False, "size overflow"),
        2: (size + CRLF + body + b"0" + CRLF + CRLF, True, "no CRLF after data"),
        3: (size + b";a=b" + CRLF + body + CRLF + b"0" + CRLF + CRLF, True, "extension"),
        4: (size + b";;;\x00" + CRLF + body + CRLF + b"0" + CRLF + CRLF, True, "junk extension"),
        5: (b"ff" + CRLF + body + CRLF + b"0" + CRLF + CRLF, False, "size past the data"),
        6: (size + CRLF + body + CRLF, False, "no last chunk"),
        7: (size + CRLF + body + CRLF + b"0" + CRLF + b"X-T: 1" + CRLF + CRLF, True, "trailer"),
        8: (b"-1" + CRLF + body + CRLF + b"0" + CRLF + CRLF, True, "negative size"),
        9: (b"".join(b"1" + CRLF + body[i:i + 1] + CRLF for i in range(len(body)))
            + b"0" + CRLF + CRLF, True, "one byte per chunk"),
        10: (size + CRLF + body + CRLF + b"0" + CRLF + b"bad trailer" + CRLF + CRLF, True,
             "bad trailer"),
    }[kind]
    return RawCase(f"chunked: {label}",
                   _request(fx, method=b"POST", target=_messages(fx),
                            headers=[b"Content-Type: application/json",
                                     b"Transfer-Encoding: chunked"], body=data, length=False),
                   complete=complete)


def truncated(rng: random.Random, fx: Fixture) -> RawCase:
    kind = rng.randrange(3)
    if kind == 0:
        declared = rng.choice((len(_BODY) + 1, 1000, 262144, 10**9))
        head = _request(fx, method=b"POST", target=_messages(fx),
                        headers=[b"Content-Type: application/json",
                                 b"Content-Length: %d" % declared], body=b"", length=False)
        return RawCase(f"body shorter than Content-Length {declared}", head + _BODY,
                       complete=False)
    whole = _request(fx, method=b"POST", target=_messages(fx), body=_BODY,
                     headers=[b"Content-Type: application/json"])
    cut = rng.randint(1, len(whole) - len(_BODY) - 1) if kind == 1 else len(whole) - 1
    return RawCase(f"request cut after {cut} bytes", whole[:cut], complete=False)


def pipelined(rng: random.Random, fx: Fixture) -> RawCase:
    parts = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(_request(fx, target=b"/v2/ping"))
        elif kind == 1:
            parts.append(_request(fx, method=b"POST", target=_messages(fx), body=_BODY,
                                  headers=[b"Content-Type: application/json"]))
        elif kind == 2:
            parts.append(_request(fx, target=_messages(fx) + b"?echo=true&limit=2"))
        else:
            parts.append(_request(fx, target=b"/v2/", headers=[b"Accept: application/json-home"]))
    owed = len(parts)
    if rng.random() < 0.3:
        owed = rng.randrange(len(parts))
        parts.insert(owed, b"GET /v2/ping HTTP/1.1" + CRLF + b"NoColon" + CRLF + CRLF)
    label = f"{len(parts)} pipelined requests" + (
        f" (request {owed + 1} malformed)" if owed < len(parts) else "")
    return RawCase(label, b"".join(parts), expect=len(parts), owed=owed)


def upgrade(rng: random.Random, fx: Fixture) -> RawCase:
    kind = rng.randrange(4)
    if kind == 0:
        return RawCase("HTTP/2 preface", b"PRI * HTTP/2.0" + CRLF + CRLF + b"SM" + CRLF + CRLF)
    headers = {
        1: [b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABk"],
        2: [b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13",
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
        3: [b"Connection: keep-alive, close, Upgrade", b"Upgrade: \xff"],
    }[kind]
    return RawCase(f"upgrade {headers[1][:30]!r}", _request(fx, target=b"/v2/ping",
                                                            headers=headers))


Generator = Callable[[random.Random, Fixture], RawCase]
GENERATORS: tuple[Generator, ...] = (request_line, version, header_syntax, framing, chunks,
                                     truncated, pipelined, upgrade)
# Status an answer to a raw case may have at 500 or above: an HTTP version the server does not
# speak (``HTTP/2.0`` as text, no version).
ALLOWED_5XX = frozenset({505})


async def send(host: str, port: int, case: RawCase, bound: float) -> RawResult:
    """Send a case on a new connection and read what comes back within ``bound`` seconds."""
    started = time.monotonic()
    answers: list[Answer] = []
    closed = timed_out = False
    writer = None
    try:
        async with asyncio.timeout(bound):
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
            try:
                writer.write(case.data)
                await writer.drain()
                if not case.complete and writer.can_write_eof():
                    writer.write_eof()
            except ConnectionError:
                pass
            while len(answers) < case.expect:
                try:
                    answers.append(await read_answer(reader))
                except NoAnswer:
                    closed = True
                    break
    except TimeoutError:
        timed_out = True
    except OSError:
        closed = True
    finally:
        if writer is not None:
            writer.close()
    return RawResult(answers, closed, timed_out, time.monotonic() - started)
