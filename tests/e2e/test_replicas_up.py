"""``zaqar-grpc up --replicas 2``: two processes of every service, balanced as on Kubernetes.

Each gateway replica has its own HTTP port; the gRPC services are reached through one target
listing both replicas, and no replica knows of its peers. What one replica does, the other
sees at once; a replica killed with SIGKILL costs only the requests it was serving, and ``up``
starts a new one in its place.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from services.common.config import Settings
from tests.e2e.harness import Stack, running, start_stack
from tests.stacks import REDIS_CLUSTER

pytestmark = pytest.mark.e2e

REPLICAS = 2
# Seconds the stack may take to start 8 processes on a busy 2-core machine.
START_TIMEOUT = 240
# The services' grace when stopped: long, so that a replica that waits it out is told from
# one that stops once its calls are done.
SHUTDOWN_GRACE = 60.0


@dataclass
class Replicated:
    stack: Stack
    gateways: list[str]
    websockets: list[str]

    def pids(self) -> dict[str, int]:
        """label (``message.1``) -> pid of the newest process of that replica."""
        return self.stack.child_pids()


def gateway_urls(stack: Stack) -> list[str]:
    line = next(line for line in stack.output if line.startswith("zaqar-grpc is up"))
    return [url.removesuffix("/v2/") for url in re.findall(r"http://\S+/v2/", line)]


def websocket_urls(stack: Stack) -> list[str]:
    """ws:// of each gateway replica, in replica order, from the lines ``up`` prints."""
    found = {}
    for line in stack.output:
        label, _, rest = line.strip().partition(":")
        if label.startswith("gateway.") and "(pid " in rest:
            found[int(label.split(".")[1])] = re.findall(r"ws://\S+", rest)[0]
    return [found[i] for i in sorted(found)]


@pytest.fixture(scope="module", params=["sqlite", "redis", REDIS_CLUSTER])
def replicated(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicated]:
    """One stack per store for the module (each test uses projects of its own; the test that
    kills replicas runs last and waits for their replacements)."""
    data = tmp_path_factory.mktemp(f"replicas-{request.param}")
    overrides: dict[str, Any] = {
        "data_dir": str(data), "gc_interval": 0.5, "shutdown_grace": SHUTDOWN_GRACE,
        # 0: up picks a free port for every replica
        "queue_port": 0, "message_port": 0, "notifier_port": 0, "http_port": 0, "ws_port": 0,
        "queue_metrics_port": 0, "message_metrics_port": 0, "notifier_metrics_port": 0,
    }
    if request.param == "redis":
        port = request.getfixturevalue("redis_server").port
        overrides.update(queue_store=f"redis://127.0.0.1:{port}/7",
                         message_store=f"redis://127.0.0.1:{port}/8",
                         notifier_store=f"redis://127.0.0.1:{port}/9")
    elif request.param == REDIS_CLUSTER:
        overrides.update(request.getfixturevalue("redis_cluster").stack_uris("replicas"))
    stack = start_stack(Settings.load(environ={}, overrides=overrides),
                        ["--replicas", str(REPLICAS)], timeout=START_TIMEOUT)
    try:
        yield Replicated(stack, gateway_urls(stack), websocket_urls(stack))
    finally:
        assert stack.stop() == 0, "up did not stop cleanly:\n" + "".join(stack.output)


def client(base_url: str, project: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, timeout=30, headers={
        "Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
        "Content-Type": "application/json",
    })


def post(http: httpx.Client, queue: str, body: Any, **fields: Any) -> str:
    reply = http.post(f"/v2/queues/{queue}/messages",
                      json={"messages": [{"body": body, **fields}]})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["resources"][0].rsplit("/", 1)[1])


def test_every_replica_is_listed_with_its_address_and_pid(replicated: Replicated) -> None:
    pids = replicated.pids()
    labels = {f"{s}.{i}" for s in ("queue", "message", "notifier", "gateway")
              for i in range(REPLICAS)}
    assert set(pids) == labels
    assert len(set(pids.values())) == len(labels)
    assert len(set(replicated.gateways)) == REPLICAS


def test_post_through_one_gateway_claim_through_the_other(replicated: Replicated) -> None:
    project = f"rep-{uuid.uuid4().hex[:8]}"
    first, second = (client(url, project) for url in replicated.gateways)
    with first, second:
        posted = {post(first, "jobs", {"n": n}) for n in range(20)}
        claimed: set[str] = set()
        while True:
            reply = second.post("/v2/queues/jobs/claims", json={"ttl": 60, "grace": 60},
                                params={"limit": 7})
            if reply.status_code == 204:
                break
            assert reply.status_code == 201, reply.text
            for message in reply.json()["messages"]:
                claim_id = message["href"].rsplit("claim_id=", 1)[1]
                assert message["id"] not in claimed
                claimed.add(message["id"])
                gone = first.delete(f"/v2/queues/jobs/messages/{message['id']}",
                                    params={"claim_id": claim_id})
                assert gone.status_code == 204, gone.text
        assert claimed == posted
        stats = second.get("/v2/queues/jobs/stats").json()["messages"]
        assert stats["total"] == 0


def test_a_metadata_change_through_one_gateway_applies_at_once_through_the_other(
    replicated: Replicated,
) -> None:
    project = f"rep-{uuid.uuid4().hex[:8]}"
    first, second = (client(url, project) for url in replicated.gateways)
    patch_headers = {"Content-Type": "application/openstack-messaging-v2.0-json-patch"}
    with first, second:
        assert first.put("/v2/queues/q", json={"_default_message_ttl": 300}).status_code == 201
        for ttl in (600, 900, 1200):
            # Both message_svc replicas have the queue cached (posts alternate between them)
            for _ in range(2 * REPLICAS):
                message_id = post(second, "q", {"ttl": "default"})
            # When the default TTL changes through the first gateway
            reply = first.patch("/v2/queues/q", headers=patch_headers, json=[
                {"op": "replace", "path": "/metadata/_default_message_ttl", "value": ttl}])
            assert reply.status_code == 200, reply.text
            # Then every post through the second one, on either replica, gets it at once
            for _ in range(2 * REPLICAS):
                message_id = post(second, "q", {"ttl": "default"})
                got = second.get(f"/v2/queues/q/messages/{message_id}")
                assert got.json()["ttl"] == ttl


async def test_a_websocket_subscriber_on_one_gateway_gets_posts_through_the_other(
    replicated: Replicated,
) -> None:
    project = f"rep-{uuid.uuid4().hex[:8]}"
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}
    first_ws, second_ws = replicated.websockets
    async with connect(second_ws) as listener, connect(first_ws) as producer:
        # Given a socket on the second gateway that subscribed itself to a queue
        await listener.send(orjson.dumps({"action": "subscription_create", "headers": headers,
                                          "body": {"queue_name": "feed", "ttl": 600}}).decode())
        answer = orjson.loads(await asyncio.wait_for(listener.recv(), 30))
        assert answer["headers"]["status"] == 201, answer
        # When messages are posted through the first gateway (each post may reach either
        # replica of message_svc, and be handed to either replica of notifier_svc)
        for n in range(6):
            await producer.send(orjson.dumps({
                "action": "message_post", "headers": headers,
                "body": {"queue_name": "feed", "messages": [{"body": {"n": n}, "ttl": 300}]},
            }).decode())
            posted = orjson.loads(await asyncio.wait_for(producer.recv(), 30))
            assert posted["headers"]["status"] == 201, posted
        # Then every one is pushed to the subscriber, once
        bodies = []
        while len(bodies) < 6:
            pushed = orjson.loads(await asyncio.wait_for(listener.recv(), 30))
            assert pushed["Message_Type"] == "Notification", pushed
            assert pushed["queue_name"] == "feed"
            bodies.append(pushed["body"]["n"])
        assert sorted(bodies) == list(range(6))


def test_a_message_replica_stopped_under_load_fails_no_request_and_ends_before_its_grace(
    replicated: Replicated,
) -> None:
    """SIGTERM to a message_svc replica, as Kubernetes sends in a rolling update: it tells the
    gateways' streams to move (``draining``), so no request fails, and it exits once what it
    was sent is answered, not when its grace runs out. Both replicas are stopped in turn: by
    the second, every gateway's stream is on it (the first one's moved there)."""
    project = f"drain-{uuid.uuid4().hex[:8]}"
    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def produce(url: str) -> None:
        with client(url, project) as http:
            while not stop.is_set():
                reply = http.post("/v2/queues/drain/messages", json={"messages": [{"body": 1}]})
                if reply.status_code == 201:
                    acknowledged.append(reply.json()["resources"][0])
                else:
                    failures.append(f"{reply.status_code} {reply.text}")

    producers = [threading.Thread(target=produce, args=(url,))
                 for url in replicated.gateways for _ in range(2)]
    for thread in producers:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 50, "posts before the stop")
        for label in ("message.0", "message.1"):
            _stop_one_under_load(replicated, label, acknowledged)
    finally:
        stop.set()
        for thread in producers:
            thread.join(60)
    # And no request failed
    assert failures == []
    # And up said once that each had exited (and started one new process for each)
    output = "".join(replicated.stack.output)
    for label in ("message.0", "message.1"):
        assert output.count(f"{label} exited with status 0") == 1, output
    assert "Traceback" not in output, output


def _stop_one_under_load(replicated: Replicated, label: str, acknowledged: list[str]) -> None:
    # When the replica is told to stop while the gateways post
    pid = replicated.pids()[label]
    os.kill(pid, signal.SIGTERM)
    # Then it exits well before its grace
    wait_for(lambda: not running(pid), f"{label} to exit", timeout=SHUTDOWN_GRACE / 2)
    # And the posts go on, to the other replica, then to both
    count = len(acknowledged)
    wait_for(lambda: len(acknowledged) >= count + 100, f"posts after {label} stopped")
    wait_for(lambda: replicated.pids().get(label) != pid, f"a new {label}", timeout=120)
    count = len(acknowledged)
    wait_for(lambda: len(acknowledged) >= count + 100, f"posts with the new {label}")


def test_a_killed_replica_of_each_service_loses_nothing_and_is_replaced(
    replicated: Replicated,
) -> None:
    project = f"rep-{uuid.uuid4().hex[:8]}"
    before = replicated.pids()
    acknowledged: list[str] = []
    errors: list[tuple[float, str]] = []
    stop = threading.Event()

    def produce(url: str) -> None:
        # A client that retries a failed post on the other gateway, as a load balancer in
        # front of the gateways would; like one, it stops sending to a gateway that refuses
        # connections (it goes to the end of the list), so a dead gateway costs one attempt.
        urls = [url, *(u for u in replicated.gateways if u != url)]
        clients = [client(u, project) for u in urls]
        n = 0
        try:
            while not stop.is_set():
                n += 1
                for http in list(clients):
                    try:
                        reply = http.post("/v2/queues/load/messages",
                                          json={"messages": [{"body": {"n": n}}]})
                    except httpx.TransportError as exc:
                        errors.append((time.monotonic(), f"{http.base_url}: {exc!r}"))
                        clients.remove(http)
                        clients.append(http)
                        continue
                    if reply.status_code == 201:
                        acknowledged.append(reply.json()["resources"][0].rsplit("/", 1)[1])
                        break
                    errors.append((time.monotonic(), f"{reply.status_code} {reply.text}"))
        finally:
            for http in clients:
                http.close()

    producers = [threading.Thread(target=produce, args=(url,)) for url in replicated.gateways]
    for thread in producers:
        thread.start()
    try:
        wait_for(lambda: len(acknowledged) >= 50, "posts before the kills")
        # When one replica of every service is killed
        for label in ("message.0", "queue.0", "notifier.0", "gateway.0"):
            os.kill(before[label], signal.SIGKILL)
        killed_at = time.monotonic()
        count_at_kill = len(acknowledged)
        # Then posts keep being acknowledged (retried on the other gateway where needed)
        wait_for(lambda: len(acknowledged) >= count_at_kill + 100, "posts after the kills")
        # And up starts a new process in place of each killed one
        wait_for(lambda: all(replicated.pids().get(label) != before[label]
                             for label in ("message.0", "queue.0", "notifier.0", "gateway.0")),
                 "replacement processes", timeout=120)
    finally:
        stop.set()
        for thread in producers:
            thread.join(60)
    # Nothing acknowledged was lost: every message is there to be read, once
    with client(replicated.gateways[1], project) as http:
        seen: list[str] = []
        marker = None
        while True:
            params: dict[str, Any] = {"limit": 20, "echo": "true", "include_claimed": "true"}
            if marker:
                params["marker"] = marker
            page = http.get("/v2/queues/load/messages", params=params)
            if page.status_code == 204 or not page.json()["messages"]:
                break
            seen += [m["id"] for m in page.json()["messages"]]
            marker = page.json()["links"][0]["href"].split("marker=", 1)[1].split("&", 1)[0]
    assert len(seen) == len(set(seen))
    assert set(acknowledged) <= set(seen), sorted(set(acknowledged) - set(seen))[:5]
    late = [what for at, what in errors if at > killed_at + 2.0]
    print(f"{len(errors)} errors, {len(late)} more than 2 s after the kills; "
          f"{len(acknowledged)} acknowledged")
    assert not late, late[:5]


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout:g} s"
        time.sleep(0.05)
