"""The bounded httptools protocol: an endless request head is cut off at HEAD_BYTES_MAX with 431,
without buffering it; heads under the bound, bodies and keep-alive work as before; a request
line of an HTTP version other than 1.0 and 1.1 is answered 505."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import uvicorn

from services.api_gateway.app import create_app
from services.api_gateway.http_protocol import HEAD_BYTES_MAX, BoundedHttpToolsProtocol
from services.common.config import Settings
from tests.e2e.harness import Stack
from tests.gateway.conftest import CLIENT_ID
from tests.stacks import up_stack

QUICK = 10.0
TENANT = f"Client-ID: {CLIENT_ID}\r\nX-Project-ID: p\r\n".encode()


@pytest.fixture
async def port(make_settings: Callable[..., Settings]) -> AsyncIterator[int]:
    """The gateway app (nothing behind it) on uvicorn with the bounded protocol."""
    settings = make_settings(rpc_timeout=2.0)
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=settings.http_port,
        http=BoundedHttpToolsProtocol,
        ws="none",
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    yield settings.http_port
    server.should_exit = True
    await task


async def exchange(port: int, *chunks: bytes) -> tuple[bytes, float]:
    """Send ``chunks`` (stopping when the server closes), then read the answer(s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass
    try:
        answer = await asyncio.wait_for(reader.read(1 << 20), QUICK)
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    return answer, time.monotonic() - started


async def test_endless_header_is_cut_off_with_431(port: int) -> None:
    head = b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n" + TENANT + b"X-Big: "
    # 16 MiB of one header value, never finished: the server stops reading it
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        writer.write(head)
        for _ in range(256):
            writer.write(b"a" * 65536)
            await asyncio.wait_for(writer.drain(), QUICK)
            await asyncio.sleep(0.005)
    writer.close()
    assert time.monotonic() - started < QUICK


async def test_header_past_the_bound_is_answered_431(port: int) -> None:
    head = b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n" + TENANT + b"X-Big: "
    answer, took = await exchange(port, head + b"a" * HEAD_BYTES_MAX)
    assert answer.startswith(b"HTTP/1.1 431 ")
    assert b'"title":"Request header fields too large"' in answer
    assert took < QUICK


async def test_many_headers_past_the_bound_are_cut_off(port: int) -> None:
    # Several reads' worth of header lines: cut off before the head completes (the 431 may be
    # lost to a connection reset, as the client is still sending), never passed to the app.
    lines = b"".join(b"X-H%d: v\r\n" % i for i in range(HEAD_BYTES_MAX // 2))
    answer, _ = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")


async def test_heads_under_the_bound_reach_the_app(port: int) -> None:
    big = b"X-Big: " + b"a" * (HEAD_BYTES_MAX // 2) + b"\r\n"
    answer, _ = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n" + big + b"\r\n")
    # The app's own header limit answers, with a Zaqar error body
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Request header fields too large" in answer


async def test_bodies_and_keep_alive_are_not_counted(port: int) -> None:
    body = b'{"x":"' + b"x" * (HEAD_BYTES_MAX + 1000) + b'"}'
    post = (
        b"POST /v2/queues/q/messages HTTP/1.1\r\nHost: x\r\n"
        + TENANT
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    versions = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answer, _ = await exchange(port, post, versions)
    # A body over the head bound in the first read reaches the app; the next request on the
    # connection is served
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"No messages were found in the request body." in answer
    assert b"HTTP/1.1 300 " in answer


@pytest.mark.parametrize(
    "request_line",
    [b"GET / HTTP/2.0", b"GET /v2/queues HTTP/2.0", b"GET /", b"POST /v2/queues/q/messages"],
)
async def test_unsupported_http_versions_are_505(port: int, request_line: bytes) -> None:
    # HTTP/2.0 spelled as text, and a request line without a version (read as HTTP/0.9).
    answer, took = await exchange(port, request_line + b"\r\nHost: x\r\n" + TENANT + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 505 "), answer
    assert b"connection: close" in head
    assert orjson.loads(body)["title"] == "HTTP version not supported"
    assert took < QUICK


async def test_http_1_0_is_served(port: int) -> None:
    answer, _ = await exchange(port, b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 300 ")


async def test_zaqar_grpc_up_serves_http_with_the_bounded_protocol(
    request: pytest.FixtureRequest,
) -> None:
    stack: Stack = up_stack(request, "sqlite")
    head = b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n" + TENANT
    # Under the bound: the app's answer; past it: 431 (or a reset while still sending)
    served, _ = await exchange(stack.settings.http_port, head + b"Connection: close\r\n\r\n")
    assert served.startswith(b"HTTP/1.1 200 ")
    cut, took = await exchange(stack.settings.http_port, head + b"X-Big: " + b"a" * (1 << 20))
    assert cut == b"" or cut.startswith(b"HTTP/1.1 431 ")
    assert took < QUICK

