"""The gateway's bounds on HTTP connections, through a real ``up`` (``http_protocol.py``):
past ``http_max_connections`` a new connection is answered 503 with Retry-After, and room
made is used again; a request not sent whole within ``http_request_timeout`` of its
connection's opening or previous answer is answered 408 (a silent connection just closed),
while a request received whole is answered however long it takes. Before these bounds, one
client holding 20,000 silent connections took the gateway out of service."""

from __future__ import annotations

import base64
import os
import select
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from services.common.config import Settings
from tests.e2e.harness import Stack, sqlite_stack, start_stack
from tests.servers import service_ports

pytestmark = pytest.mark.e2e

MOST = 3  # connections
TIMEOUT = 2.0  # seconds to send a request
# Waits for what must happen: far above TIMEOUT, so that a loaded machine is not a failure.
QUICK = 30.0
# How long a request must stay unanswered before we count it as held by the server.
HELD = 0.4
PROJECT = "bounds-" + uuid.uuid4().hex[:8]
TENANT = f"Client-ID: {uuid.uuid4()}\r\nX-Project-ID: {PROJECT}\r\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with sqlite_stack(tmp_path_factory.mktemp("up-http-bounds"), http_max_connections=MOST,
                      http_request_timeout=TIMEOUT) as stack:
        yield stack


def connect(stack: Stack) -> socket.socket:
    raw = socket.create_connection((stack.settings.host, stack.settings.http_port))
    raw.settimeout(QUICK)
    return raw


def read_all(raw: socket.socket) -> bytes:
    """Everything the server sends until it closes."""
    chunks = []
    while chunk := raw.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def read_answer(raw: socket.socket) -> bytes:
    """One answer on a kept-alive connection: its head and its Content-Length of body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = raw.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = raw.recv(65536)
        assert chunk, data
        body += chunk
    assert len(body) == length, "more than one answer"
    return head + b"\r\n\r\n" + body


def request(method: str, path: str, body: bytes = b"", close: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", TENANT.rstrip(),
             "Content-Type: application/json", f"Content-Length: {len(body)}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def hold(stack: Stack, queue: str) -> socket.socket:
    """A connection holding a long poll on the empty ``queue``: admitted, and waiting. (The
    room of a connection closed just before may take a moment to be seen free.)"""
    deadline = time.monotonic() + QUICK
    while True:
        holder = connect(stack)
        holder.sendall(request("POST", f"/v2/queues/{queue}/claims?wait=20", b"{}"))
        holder.settimeout(HELD)
        try:
            answer = holder.recv(65536)
        except TimeoutError:
            return holder
        holder.close()
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        assert time.monotonic() < deadline, "no room for a connection"


def head_and_json(answer: bytes) -> tuple[list[str], dict[str, str]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode().split("\r\n"), orjson.loads(body)


def assert_503(answer: bytes, description: str) -> None:
    """A 503 with Retry-After, the connection closed, and a Zaqar error body."""
    head, body = head_and_json(answer)
    assert head[0] == "HTTP/1.1 503 Service Unavailable", answer
    assert "retry-after: 5" in head and "connection: close" in head
    assert body == {"title": "Service Unavailable", "description": description}


def served(stack: Stack) -> bool:
    with connect(stack) as raw:
        raw.sendall(request("GET", "/v2/queues"))
        return read_all(raw).startswith(b"HTTP/1.1 200 ")


@pytest.fixture
def queue(stack: Stack) -> str:
    name = "q" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=stack.url, timeout=QUICK, headers={
        "Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT,
    }) as client:
        assert client.put(f"/v2/queues/{name}").status_code == 201
    return name


def test_a_connection_past_the_limit_is_answered_503_and_room_made_is_used(
    stack: Stack, queue: str,
) -> None:
    # Given MOST connections each holding a long poll on an empty queue
    holders = []
    try:
        for _ in range(MOST):
            holders.append(hold(stack, queue))
        # When one more connects and sends its request at once
        with connect(stack) as extra:
            extra.sendall(request("GET", "/v2/queues"))
            answer = read_all(extra)
        # Then it gets 503 with Retry-After and a Zaqar error body naming the setting (the
        # request sent before the answer does not turn it into a reset)
        assert_503(answer, f"This gateway holds its {MOST} HTTP connections "
                           "(http_max_connections). Please retry in 5 seconds, or at another "
                           "replica.")
        # And once a holder goes, its room is used again
        holders.pop().close()
        deadline = time.monotonic() + QUICK
        while not served(stack):
            assert time.monotonic() < deadline, "the room of a closed connection stays taken"
    finally:
        for holder in holders:
            holder.close()
    metrics = httpx.get(stack.url + "/metrics", timeout=QUICK).text
    assert "zaqar_http_connections_refused_total " in metrics
    assert "zaqar_http_connections_refused_total 0.0" not in metrics
    assert any("(http_max_connections)" in line and "refused" in line for line in stack.output)


@pytest.mark.parametrize("sent", [
    pytest.param(b"GET /v2/queues HTTP/1.1\r\nHost: x\r\n", id="head"),
    pytest.param(request("POST", "/v2/queues/slow/messages", b'{"messages": []}')[:-4],
                 id="body"),
])
def test_a_request_not_sent_whole_in_time_is_answered_408(stack: Stack, sent: bytes) -> None:
    with connect(stack) as raw:
        began = time.monotonic()
        raw.sendall(sent)
        answer = read_all(raw)
        took = time.monotonic() - began
    head, body = head_and_json(answer)
    assert head[0] == "HTTP/1.1 408 Request Timeout", answer
    assert "connection: close" in head
    assert body == {"title": "Request Timeout", "description": (
        f"The request was not received whole within {TIMEOUT:g} seconds (http_request_timeout).")}
    assert took >= TIMEOUT - 0.1


def test_a_body_cut_off_is_logged_and_counted_as_408(stack: Stack) -> None:
    """The app sees only that the client went away; its access log and metrics say what the
    client was answered."""
    with connect(stack) as raw:
        raw.sendall(request("POST", "/v2/queues/cut/messages", b'{"messages": []}')[:-4])
        assert read_all(raw).startswith(b"HTTP/1.1 408 ")
    deadline = time.monotonic() + QUICK
    while not any("POST /v2/queues/cut/messages 408 " in line for line in stack.output):
        assert time.monotonic() < deadline, "".join(stack.output[-20:])
        time.sleep(0.05)
    assert not any("POST /v2/queues/cut/messages 400 " in line for line in stack.output)
    metrics = httpx.get(stack.url + "/metrics", timeout=QUICK).text
    assert ('zaqar_http_requests_total{method="POST",'
            'route="/v2/queues/{queue_name}/messages",status="408"}') in metrics


def test_a_silent_connection_is_closed_without_an_answer(stack: Stack) -> None:
    with connect(stack) as raw:
        began = time.monotonic()
        assert read_all(raw) == b""
        assert time.monotonic() - began >= TIMEOUT - 0.1


def test_the_time_starts_again_after_each_answer(stack: Stack) -> None:
    with connect(stack) as raw:
        # A first request on a kept-alive connection, sent a while after it opened, answered
        time.sleep(TIMEOUT / 4)
        raw.sendall(request("GET", "/v2/queues", close=False))
        first = read_answer(raw)
        answered = time.monotonic()
        assert first.startswith(b"HTTP/1.1 200 "), first
        # then half of a second: it has its own time from that answer (not what was left of
        # the first's), and is answered 408 when it runs out
        raw.sendall(b"GET /v2/queues HTTP/1.1\r\n")
        assert read_all(raw).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - answered >= TIMEOUT - 0.1


def test_a_request_received_whole_is_answered_however_long_it_takes(
    stack: Stack, queue: str,
) -> None:
    wait = 2 * TIMEOUT
    with connect(stack) as raw:
        began = time.monotonic()
        raw.sendall(request("POST", f"/v2/queues/{queue}/claims?wait={wait:g}", b"{}"))
        answer = read_all(raw)
        took = time.monotonic() - began
    assert answer.startswith(b"HTTP/1.1 204 "), answer  # nothing to claim, after the wait
    assert took >= wait - 0.1


def test_under_a_low_open_files_limit_both_connection_limits_are_fitted(
    tmp_path: Path,
) -> None:
    """Before, 2,000 WebSocket connections held open on a gateway allowed 2,000 files left it
    answering no HTTP request at all. Now both limits (10,000 each by default) are fitted under
    the open-files limit, said in the log, and the HTTP one holds."""
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), **service_ports(),
    })
    stack = start_stack(settings, open_files=1500)
    try:
        # 1500 files: room for 750 connections, shared in proportion
        said = [line for line in stack.output if "open-files limit" in line]
        assert any(
            "lowered http_max_connections from 10000 to 375 and ws_max_connections from 10000 "
            "to 375 to fit this process's open-files limit of 1500 (ulimit -n)" in line
            for line in said), said
        held = []
        try:
            while len(held) < 375:
                held.append(connect(stack))
            with connect(stack) as extra:
                extra.sendall(request("GET", "/v2/queues"))
                answer = read_all(extra)
            assert answer.startswith(b"HTTP/1.1 503 "), answer
            assert b"holds its 375 HTTP connections" in answer
        finally:
            for raw in held:
                raw.close()
        # and the gateway serves once they are gone
        deadline = time.monotonic() + QUICK
        while not served(stack):
            assert time.monotonic() < deadline
    finally:
        assert stack.stop() == 0, "".join(stack.output)


RECEIVING = 300_000  # bytes of requests being received, per gateway process


@pytest.fixture(scope="module")
def receiving_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with sqlite_stack(tmp_path_factory.mktemp("up-http-receiving"),
                      http_max_receiving_bytes=RECEIVING) as stack:
        yield stack


def big_post(queue: str, size: int) -> bytes:
    body = b'{"messages": [{"ttl": 300, "body": "' + b"a" * size + b'"}]}'
    return request("POST", f"/v2/queues/{queue}/messages", body)


def test_requests_being_received_are_bounded_in_bytes(receiving_stack: Stack) -> None:
    """Two posts of 200 and 150 KB, each short of its last bytes: both do not fit in the
    process's 300 KB, either alone does. Whichever the gateway reads second is answered 503
    and closed; the other is served once its last bytes come."""
    stack = receiving_stack
    posts = [big_post("big", 200_000), big_post("big", 150_000)]
    sockets = [connect(stack), connect(stack)]
    try:
        for raw, post in zip(sockets, posts, strict=True):
            raw.sendall(post[:-10])
        # One of them is answered at once, before it has sent its last bytes
        ready, _, _ = select.select(sockets, [], [], QUICK)
        assert len(ready) >= 1, "neither request was cut off"
        cut = ready[0]
        answer = read_all(cut)
        assert_503(answer, f"This gateway is receiving {RECEIVING} bytes of requests at once "
                           "(http_max_receiving_bytes). Please retry in 5 seconds, or at "
                           "another replica.")
        # and the other is served whole
        kept = sockets[1 - sockets.index(cut)]
        kept.sendall(posts[sockets.index(kept)][-10:])
        served_post = read_all(kept)
        assert served_post.startswith(b"HTTP/1.1 201 "), served_post
    finally:
        for raw in sockets:
            raw.close()
    # Its bytes given back, the process takes such a request again
    with connect(stack) as raw:
        raw.sendall(posts[0])
        assert read_all(raw).startswith(b"HTTP/1.1 201 ")
    metrics = httpx.get(stack.url + "/metrics", timeout=QUICK).text
    assert "zaqar_http_requests_cut_off_total 1.0" in metrics


def ws_open(stack: Stack) -> socket.socket:
    """A WebSocket connection made by hand, so that a frame can be sent in parts."""
    raw = socket.create_connection((stack.settings.host, stack.settings.ws_port))
    raw.settimeout(QUICK)
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = raw.recv(4096)
        assert chunk, answer
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 101 "), answer
    return raw


def ws_frame(payload: bytes) -> bytes:
    """A masked text frame (with a mask of zeros, so the payload goes as it is)."""
    return bytes([0x81, 0x80 | 127]) + struct.pack(">Q", len(payload)) + b"\0\0\0\0" + payload


def ws_first_frame(raw: socket.socket) -> tuple[int, bytes]:
    """The opcode and payload of the first frame the server sends."""
    data = b""
    while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F if data[1] & 0x7F < 126 else 0):
        chunk = raw.recv(65536)
        assert chunk, data
        data += chunk
    length = data[1] & 0x7F
    start = 2
    if length == 126:
        length, start = struct.unpack(">H", data[2:4])[0], 4
    elif length == 127:
        length, start = struct.unpack(">Q", data[2:10])[0], 10
    while len(data) < start + length:
        data += raw.recv(65536)
    return data[0] & 0x0F, data[start:start + length]


def test_websocket_frames_being_received_count_with_http_requests(
    receiving_stack: Stack,
) -> None:
    """A frame of 200 KB short of its last bytes on the WebSocket port and a post of 150 KB
    short of its own on the HTTP port do not fit together in the process's 300 KB: whichever
    the gateway reads second is cut off (503 over HTTP, close code 1013 over WebSocket), and
    the other goes on."""
    stack = receiving_stack
    frame = ws_frame(orjson.dumps({"action": "queue_list", "headers": {
        "Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT,
    }, "body": {"padding": "a" * 200_000}}))
    post = big_post("big", 150_000)
    ws, http = ws_open(stack), connect(stack)
    try:
        ws.sendall(frame[:-10])
        http.sendall(post[:-10])
        ready, _, _ = select.select([ws, http], [], [], QUICK)
        assert ready, "neither was cut off"
        if ready[0] is http:
            assert read_all(http).startswith(b"HTTP/1.1 503 ")
            ws.sendall(frame[-10:])
            opcode, _ = ws_first_frame(ws)
            assert opcode == 0x1  # an answer (a text frame), not a close
        else:
            opcode, payload = ws_first_frame(ws)
            assert opcode == 0x8, payload  # a close frame
            assert struct.unpack(">H", payload[:2])[0] == 1013
            assert payload[2:] == b"the gateway is receiving too much at once; try again later"
            http.sendall(post[-10:])
            assert read_all(http).startswith(b"HTTP/1.1 201 ")
    finally:
        ws.close()
        http.close()
    # Everything given back once both are gone: a frame and a post of the same sizes fit
    deadline = time.monotonic() + QUICK
    while True:
        ws, http = ws_open(stack), connect(stack)
        try:
            ws.sendall(frame)
            http.sendall(post)
            answered = read_all(http)
            opcode, _ = ws_first_frame(ws)
        finally:
            ws.close()
            http.close()
        if answered.startswith(b"HTTP/1.1 201 ") and opcode == 0x1:
            break
        assert time.monotonic() < deadline, (answered[:80], opcode)


def receiving_bytes(stack: Stack) -> float:
    metrics = httpx.get(stack.url + "/metrics", timeout=QUICK).text
    return float(next(line.split()[1] for line in metrics.splitlines()
                      if line.startswith("zaqar_receiving_bytes ")))


def test_while_the_process_is_full_small_requests_pass(receiving_stack: Stack) -> None:
    """Requests received whole in one read hold nothing: with 290 of the 300 KB held by posts
    not yet whole, a listing is served, and only a request that grows past the bound while
    not whole is cut off."""
    stack = receiving_stack
    holders = [connect(stack), connect(stack)]
    try:
        for raw, size in zip(holders, (200_000, 90_000), strict=True):
            raw.sendall(big_post("big", size)[:-10])
        # Once the gateway holds them (read from its gauge, itself a small request served)
        deadline = time.monotonic() + QUICK
        while receiving_bytes(stack) < 290_000:
            assert time.monotonic() < deadline, receiving_bytes(stack)
            time.sleep(0.02)
        assert served(stack)
        with connect(stack) as grower:
            grower.sendall(big_post("big", 20_000)[:-10])
            answer = read_all(grower)
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        # The holders were left alone: each is served once whole
        for raw, size in zip(holders, (200_000, 90_000), strict=True):
            raw.sendall(big_post("big", size)[-10:])
            assert read_all(raw).startswith(b"HTTP/1.1 201 ")
    finally:
        for raw in holders:
            raw.close()


EARLY_HEAD = (b"POST /v2/queues/early/messages HTTP/1.1\r\nHost: x\r\nClient-ID: bad\r\n"
              b"X-Project-ID: p\r\nContent-Type: application/json\r\n")


def test_a_request_answered_before_its_body_is_whole_ends_its_connection(stack: Stack) -> None:
    """The app refuses a post from its head (a Client-ID that is not a UUID) before its body
    has come. Left open, the connection would read the client's next request as the rest of
    that body and never answer it: it is closed once the answer is out, and the answer says
    so, or a client that read it before the end came would send its next request there."""
    with connect(stack) as raw:
        raw.sendall(EARLY_HEAD + b"Content-Length: 1000\r\n\r\n{\"messages\"")
        answer = read_all(raw)  # the answer, then the end of the connection
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1
    head = answer.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert b"connection: close" in head, answer


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_the_early_answer_survives_the_rest_of_its_body(stack: Stack, framing: str) -> None:
    """A client that sends its whole body before reading (as most do) still gets the answer
    made before the body came, and then a clean end of the connection, not a reset: the rest
    of the body is read and dropped while the gateway closes."""
    body = b"x" * 200_000
    if framing == "chunked":
        head = EARLY_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        rest = b"".join(b"%x\r\n%s\r\n" % (8192, body[i:i + 8192])
                        for i in range(0, len(body), 8192)) + b"0\r\n\r\n"
    else:
        head = EARLY_HEAD + b"Content-Length: %d\r\n\r\n" % len(body)
        rest = body
    with connect(stack) as raw:
        raw.sendall(head + rest[:100])
        # The answer is out before most of the body is sent ...
        readable, _, _ = select.select([raw], [], [], QUICK)
        assert readable
        raw.sendall(rest[100:])  # ... and the whole body follows it, unread by the app
        answer = read_all(raw)  # a reset would raise here
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert answer.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in answer.partition(b"\r\n\r\n")[0].lower()


def ws_claim(padding: int, wait: int = 20) -> str:
    return orjson.dumps({"action": "claim_create", "headers": {
        "Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT,
    }, "body": {"queue_name": "never", "wait": wait, "padding": "a" * padding}}).decode()


def test_websocket_requests_count_until_they_are_answered(receiving_stack: Stack) -> None:
    """A WebSocket request counts, twice its size (the request, then its answer, which echoes
    it), until its answer is sent: past the process's 300 KB, a connection that holds more
    than 64 KiB and sends more is closed with 1013, while a small request on another one
    passes. Before, only frames not yet whole counted: a client could keep 8 waiting requests
    and 4 more read ahead, of up to 1 MiB each, on every connection."""
    stack = receiving_stack
    url = f"ws://{stack.settings.host}:{stack.settings.ws_port}"
    with ws_connect(url) as holder, ws_connect(url) as other:
        # Given one connection keeping four claims of 40 KB waiting
        for _ in range(4):
            holder.send(ws_claim(40_000))
        deadline = time.monotonic() + QUICK
        while receiving_bytes(stack) < RECEIVING:
            assert time.monotonic() < deadline, receiving_bytes(stack)
            time.sleep(0.02)
        # When another connection sends a small request, Then it is answered
        other.send(orjson.dumps({"action": "queue_list", "headers": {
            "Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT}, "body": {}}).decode())
        assert orjson.loads(other.recv(timeout=QUICK))["headers"]["status"] == 200
        # When the holder sends anything more, Then it is closed with 1013
        holder.send(ws_claim(10))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                holder.recv(timeout=QUICK)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
    # And what it held is given back once it is gone
    deadline = time.monotonic() + QUICK
    while receiving_bytes(stack) > 0:
        assert time.monotonic() < deadline, receiving_bytes(stack)
        time.sleep(0.02)


def test_a_waiting_request_over_its_size_is_refused_in_turn(stack: Stack) -> None:
    """With the connection's 8 waiting places taken, a claim that asks to wait but is over its
    action's frame size is refused at once, not held for a place (nor for its wait); and the
    server does not take up permessage-deflate, which the client offers."""
    url = f"ws://{stack.settings.host}:{stack.settings.ws_port}"
    with ws_connect(url) as ws:
        assert ws.protocol.extensions == []
        for _ in range(8):
            ws.send(ws_claim(10))
        ws.send(ws_claim(100_000))
        answer = orjson.loads(ws.recv(timeout=QUICK))
    assert answer["headers"]["status"] == 400, answer["headers"]
    assert answer["request"]["action"] == "claim_create"
    assert "frame" in answer["body"]["error"].lower() or "bytes" in answer["body"]["error"]
