"""Long polling (``wait``) on claim create and message listing, over HTTP and WebSocket,
through ``zaqar-grpc up`` on each store."""

from __future__ import annotations

import concurrent.futures
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.sync.client import connect

from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e

# How long a waiter must stay unanswered before we count it as held by the server.
HELD = 0.4


@pytest.fixture
def client(stack: Stack, project: str) -> Iterator[httpx.Client]:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
        yield http


@pytest.fixture
def pool() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def other(client: httpx.Client) -> httpx.Client:
    """Another client (its own Client-ID) of the same project."""
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": client.headers["X-Project-ID"]}
    return httpx.Client(base_url=str(client.base_url), headers=headers, timeout=30)


def claim(client: httpx.Client, queue: str, wait: int) -> tuple[httpx.Response, float]:
    answer = client.post(f"/v2/queues/{queue}/claims?wait={wait}&limit=1", json={})
    return answer, time.monotonic()


def held(future: concurrent.futures.Future[Any]) -> bool:
    """Whether the request is still unanswered after HELD seconds."""
    try:
        future.result(timeout=HELD)
    except concurrent.futures.TimeoutError:
        return True
    return False


def post(client: httpx.Client, queue: str, body: Any, **fields: Any) -> float:
    answer = client.post(f"/v2/queues/{queue}/messages",
                         json={"messages": [{"body": body, "ttl": 300, **fields}]})
    assert answer.status_code == 201, answer.text
    return time.monotonic()


def test_a_waiting_claim_is_answered_at_once_after_a_post(
    client: httpx.Client, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    # Given a claim waiting up to 10 s on an empty queue
    client.put("/v2/queues/lp")
    waiter = pool.submit(claim, client, "lp", 10)
    assert held(waiter)
    # When another client posts
    with other(client) as producer:
        posted = post(producer, "lp", {"n": 1})
    # Then the claim gets the message well before its deadline
    answer, answered = waiter.result(timeout=15)
    assert answer.status_code == 201, answer.text
    assert [m["body"] for m in answer.json()["messages"]] == [{"n": 1}]
    assert answered - posted < 5


def test_a_waiting_claim_with_nothing_is_answered_204_at_its_deadline(
    client: httpx.Client,
) -> None:
    client.put("/v2/queues/lp")
    started = time.monotonic()
    answer, answered = claim(client, "lp", 1)
    assert answer.status_code == 204
    assert answer.content == b""
    assert answered - started >= 1


def test_waiters_are_served_first_come_first_served(
    client: httpx.Client, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    # Given three claims waiting, one after the other
    client.put("/v2/queues/lp")
    waiters = []
    for _ in range(3):
        waiters.append(pool.submit(claim, client, "lp", 10))
        assert held(waiters[-1])
    with other(client) as producer:
        for n, waiter in enumerate(waiters):
            # When one message is posted
            post(producer, "lp", {"n": n})
            # Then the oldest waiter left gets it
            answer, _ = waiter.result(timeout=15)
            assert answer.status_code == 201, answer.text
            assert answer.json()["messages"][0]["body"] == {"n": n}


def test_a_client_that_disconnects_claims_nothing(stack: Stack, client: httpx.Client) -> None:
    # Given a claim waiting on an empty queue, over a raw connection
    client.put("/v2/queues/lp")
    request = (
        "POST /v2/queues/lp/claims?wait=10 HTTP/1.1\r\n"
        f"Host: {stack.settings.host}\r\nContent-Length: 0\r\n"
        f"Client-ID: {uuid.uuid4()}\r\nX-Project-ID: {client.headers['X-Project-ID']}\r\n\r\n"
    )
    with socket.create_connection((stack.settings.host, stack.settings.http_port)) as raw:
        raw.sendall(request.encode())
        raw.settimeout(HELD)
        with pytest.raises(TimeoutError):
            raw.recv(1)
    # When its client has gone and a message is posted
    with other(client) as producer:
        post(producer, "lp", {"n": 1})
    # Then another claim gets the message (at once, or once a claim made in flight by the
    # departed waiter is released)
    answer, _ = claim(client, "lp", 5)
    assert answer.status_code == 201, answer.text
    assert answer.json()["messages"][0]["body"] == {"n": 1}
    assert answer.json()["messages"][0]["age"] <= 5


def test_a_delayed_message_wakes_the_waiter_at_its_time(client: httpx.Client) -> None:
    # Given a delayed queue and a message posted with a 1 s delay
    assert client.put("/v2/queues/lpd", json={"_default_message_delay": 1}).status_code == 201
    with other(client) as producer:
        # (Timed from before the post is sent: the delay runs from when the server took it,
        # which may be any time until its answer arrives.)
        sent = time.monotonic()
        post(producer, "lpd", {"n": 1}, delay=1)
    # When a claim waits up to 10 s
    answer, answered = claim(client, "lpd", 10)
    # Then it gets the message once the delay is over, before the deadline
    assert answer.status_code == 201, answer.text
    assert 1 <= answered - sent < 9.5


def test_a_waiting_listing_answers_after_a_post(
    client: httpx.Client, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    client.put("/v2/queues/lp")

    def listing() -> tuple[httpx.Response, float]:
        return client.get("/v2/queues/lp/messages?wait=10"), time.monotonic()

    waiter = pool.submit(listing)
    assert held(waiter)
    with other(client) as producer:
        posted = post(producer, "lp", {"n": 1})
    answer, answered = waiter.result(timeout=15)
    assert answer.status_code == 200, answer.text
    assert [m["body"] for m in answer.json()["messages"]] == [{"n": 1}]
    assert answered - posted < 5
    # And with nothing new, the usual empty page at the deadline
    marker = answer.json()["links"][0]["href"].split("marker=")[1].split("&")[0]
    empty = client.get(f"/v2/queues/lp/messages?wait=1&marker={marker}")
    assert empty.status_code == 200
    assert empty.json() == {"messages": [], "links": []}


@pytest.mark.parametrize("value", ["21", "-1", "abc", "1.5"])
def test_a_bad_wait_is_400_with_zaqars_body(client: httpx.Client, value: str) -> None:
    for answer in (
        client.post(f"/v2/queues/lp/claims?wait={value}", json={}),
        client.get(f"/v2/queues/lp/messages?wait={value}"),
    ):
        assert answer.status_code == 400, answer.text
        assert set(answer.json()) == {"title", "description"}


def test_over_websocket(
    stack: Stack, client: httpx.Client, pool: concurrent.futures.ThreadPoolExecutor
) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": client.headers["X-Project-ID"]}
    client.put("/v2/queues/lp")

    def ask(body: dict[str, Any], action: str = "claim_create") -> tuple[dict[str, Any], float]:
        with connect(f"ws://127.0.0.1:{stack.settings.ws_port}") as ws:
            frame = {"action": action, "headers": headers, "body": body}
            ws.send(orjson.dumps(frame).decode())
            return orjson.loads(ws.recv(timeout=30)), time.monotonic()

    # A waiting claim_create is answered once a message is posted
    waiter = pool.submit(ask, {"queue_name": "lp", "wait": 10, "limit": 1})
    assert held(waiter)
    with other(client) as producer:
        posted = post(producer, "lp", {"n": 1})
    answer, answered = waiter.result(timeout=15)
    assert answer["headers"]["status"] == 201, answer
    assert answer["body"]["messages"][0]["body"] == {"n": 1}
    assert answered - posted < 5
    # With nothing to claim, 204 at the deadline
    answer, _ = ask({"queue_name": "lp", "wait": 1})
    assert answer["headers"]["status"] == 204, answer
    # A bad value is 400
    answer, _ = ask({"queue_name": "lp", "wait": 21}, "message_list")
    assert answer["headers"]["status"] == 400, answer
