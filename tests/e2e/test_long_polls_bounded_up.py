"""Long polls held by a gateway process are bounded (``max_waiting``), over HTTP and WebSocket
together: one more is answered 503 with Retry-After and a body naming the setting, and room
made by one that ends is used again. 3,000 HTTP long polls took a gateway from 69 to 215 MiB
(and message_svc, which has its own bound, from 73 to 144 MiB) before."""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.e2e.harness import Stack, sqlite_stack

pytestmark = pytest.mark.e2e

MOST = 2
# Only how long a broken test waits before it fails.
WITHIN = 60.0
FULL = ("This gateway holds 2 long polls at once (max_waiting). Please retry in 5 seconds, or "
        "at another replica.")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with sqlite_stack(tmp_path_factory.mktemp("up-max-waiting"), max_waiting=MOST) as stack:
        yield stack


def held(stack: Stack) -> float:
    text = httpx.get(stack.url + "/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        if family.name == "zaqar_long_polls_waiting":
            return sum(sample.value for sample in family.samples)
    raise AssertionError("no zaqar_long_polls_waiting")


def until_held(stack: Stack, count: int) -> None:
    end = time.monotonic() + WITHIN
    while held(stack) != count:
        assert time.monotonic() < end, held(stack)
        time.sleep(0.02)


def test_long_polls_past_max_waiting_are_answered_503(stack: Stack) -> None:
    project = f"waits-{uuid.uuid4().hex[:8]}"
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    claim = f"{stack.url}/v2/queues/idle/claims?wait=20"
    with concurrent.futures.ThreadPoolExecutor(MOST) as pool, \
            httpx.Client(headers=headers, timeout=WITHIN) as http:
        # Given a long poll over HTTP and one over WebSocket, held
        over_http = pool.submit(http.post, claim, json={})
        with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as ws:
            ws.send(orjson.dumps({"action": "claim_create", "headers": headers,
                                  "body": {"queue_name": "idle", "wait": 20}}).decode())
            until_held(stack, MOST)
            # When one more comes over either port, Then it is answered 503 at once
            refused = http.post(claim, json={})
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "5"
            assert refused.json() == {"title": "Service Unavailable", "description": FULL}
            with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as other:
                other.send(orjson.dumps({"action": "message_list", "headers": headers,
                                         "body": {"queue_name": "idle", "wait": 20}}).decode())
                answer = orjson.loads(other.recv(timeout=WITHIN))
            assert answer["headers"]["status"] == 503, answer
            assert answer["body"]["error"] == FULL
            # And a request that does not wait is served as ever
            assert http.get(f"{stack.url}/v2/queues").status_code in (200, 204)
        # When the WebSocket one goes away, Then its room is used again
        until_held(stack, MOST - 1)
        posted = http.post(f"{stack.url}/v2/queues/idle/messages",
                           json={"messages": [{"body": 1, "ttl": 60}]})
        assert posted.status_code == 201
        assert over_http.result(WITHIN).status_code == 201
        again = http.post(f"{stack.url}/v2/queues/idle/claims?wait=1", json={})
        assert again.status_code == 204, again.text
