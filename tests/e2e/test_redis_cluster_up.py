"""``zaqar-grpc up`` with every store on a Redis Cluster (``redis+cluster://``), through real
HTTP and WebSocket: what a user does with queues, messages, claims, subscriptions and shared
URLs; then a master killed (SIGKILL) under load, with and without ``wait=1``, and what became
of every message acknowledged with a 201 (docs/redis-cluster.md, "What an acknowledged write is
guaranteed to be").
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.e2e.traffic import PROJECT, QUEUE, Traffic, all_message_ids, headers, message_id
from tests.gateway._ws import Ws
from tests.receivers import Receiver
from tests.servers import (
    RedisClusterProcesses,
    start_redis_cluster,
)
from tests.stacks import REDIS_CLUSTER, SIGNED_URL_SECRET, up_stack
from tests.waiting import until

pytestmark = pytest.mark.e2e

log = logging.getLogger(__name__)


@pytest.fixture
def cluster_stack(request: pytest.FixtureRequest) -> Stack:
    """``zaqar-grpc up`` on the session's Redis Cluster, shared by the session."""
    return up_stack(request, REDIS_CLUSTER)


async def test_a_user_flow_on_a_redis_cluster(
    cluster_stack: Stack, receiver: Receiver
) -> None:
    project = f"rc-{uuid.uuid4().hex[:10]}"
    ws_url = f"ws://{cluster_stack.settings.host}:{cluster_stack.settings.ws_port}"
    async with httpx.AsyncClient(base_url=cluster_stack.url, headers=headers(project),
                                 timeout=30) as http, connect(ws_url) as socket:
        # Given a queue with metadata
        r = await http.put("/v2/queues/orders", json={"description": "orders", "tier": 2})
        assert r.status_code == 201, r.text
        meta = (await http.get("/v2/queues/orders")).json()
        assert (meta["description"], meta["tier"]) == ("orders", 2)
        # And a webhook and a WebSocket subscribed to it
        r = await http.post("/v2/queues/orders/subscriptions",
                            json={"subscriber": receiver.url(), "ttl": 600})
        assert r.status_code == 201, r.text
        listener = Ws(socket, project)
        status, _ = await listener.call("subscription_create",
                                        {"queue_name": "orders", "ttl": 600})
        assert status == 201

        # When a batch is posted
        r = await http.post("/v2/queues/orders/messages", json={"messages": [
            {"body": {"n": n}, "ttl": 300} for n in range(5)
        ]})
        assert r.status_code == 201, r.text
        ids = [message_id(href) for href in r.json()["resources"]]
        assert len(ids) == 5

        # Then the webhook and the socket each get every message
        hits = await receiver.wait_for(5, within=20)
        assert sorted(hit.json()["body"]["n"] for hit in hits) == list(range(5))
        pushed = [await asyncio.wait_for(socket.recv(), 20) for _ in range(5)]
        assert all(b'"Notification"' in (p if isinstance(p, bytes) else p.encode())
                   for p in pushed)
        # And the messages are listed in order and read by id, singly and as a set
        listed = (await http.get("/v2/queues/orders/messages", params={"echo": "true"})).json()
        assert [m["id"] for m in listed["messages"]] == ids
        one = (await http.get(f"/v2/queues/orders/messages/{ids[0]}")).json()
        assert one["body"] == {"n": 0}
        some = await http.get("/v2/queues/orders/messages", params={"ids": ",".join(ids[:3])})
        assert {m["id"] for m in some.json()["messages"]} == set(ids[:3])

        # When two are claimed, the claim renewed, one deleted with the claim id, the claim
        # released
        r = await http.post("/v2/queues/orders/claims?limit=2", json={"ttl": 60, "grace": 60})
        assert r.status_code == 201, r.text
        claim = r.headers["location"]
        claimed = r.json()["messages"]
        assert [m["id"] for m in claimed] == ids[:2]
        assert (await http.patch(claim, json={"ttl": 120, "grace": 60})).status_code == 204
        assert (await http.get(claim)).json()["ttl"] == 120
        assert (await http.delete(claimed[0]["href"])).status_code == 204
        stats = (await http.get("/v2/queues/orders/stats")).json()["messages"]
        assert (stats["claimed"], stats["free"], stats["total"]) == (1, 3, 4)
        assert (await http.delete(claim)).status_code == 204
        # Then the released message is claimable again, before the others
        r = await http.post("/v2/queues/orders/claims?limit=1", json={"ttl": 60, "grace": 60})
        assert [m["id"] for m in r.json()["messages"]] == [ids[1]]
        stats = (await http.get("/v2/queues/orders/stats")).json()["messages"]
        assert (stats["claimed"], stats["free"], stats["total"]) == (1, 3, 4)

        # And the queue is listed with its metadata
        r = await http.put("/v2/queues/other", json={})
        listing = (await http.get("/v2/queues", params={"detailed": "true"})).json()
        assert [(q["name"], q.get("metadata", {}).get("tier")) for q in listing["queues"]] == [
            ("orders", 2), ("other", None)
        ]

        # And a pre-signed URL lets its holder post and list messages, and nothing else
        r = await http.post("/v2/queues/orders/share",
                            json={"methods": ["GET", "POST"], "paths": ["messages"]})
        assert r.status_code == 200, r.text
        share = r.json()
        signed = {"URL-Signature": share["signature"], "URL-Methods": "GET,POST",
                  "URL-Paths": ",".join(share["paths"]), "URL-Expires": share["expires"],
                  "X-Project-ID": project, "Client-ID": str(uuid.uuid4())}
        async with httpx.AsyncClient(base_url=cluster_stack.url, timeout=30) as holder:
            r = await holder.post("/v2/queues/orders/messages", headers=signed,
                                  json={"messages": [{"body": "shared"}]})
            assert r.status_code == 201, r.text
            r = await holder.get("/v2/queues/orders/messages", headers=signed,
                                 params={"echo": "true"})
            assert r.json()["messages"][-1]["body"] == "shared"
            # (a path not signed is not found, as in Zaqar)
            r = await holder.get("/v2/queues/orders/stats", headers=signed)
            assert r.status_code == 404
        assert cluster_stack.settings.signed_url_secret == SIGNED_URL_SECRET

        # When the queue is deleted, it is gone with its messages and subscriptions
        assert (await http.delete("/v2/queues/orders")).status_code == 204
        assert (await http.get("/v2/queues/orders/stats")).json()["messages"]["total"] == 0
        subs = (await http.get("/v2/queues/orders/subscriptions")).json()
        assert subs["subscriptions"] == []
        listing = (await http.get("/v2/queues")).json()
        assert [q["name"] for q in listing["queues"]] == ["other"]


# A master killed under load ----------------------------------------------------------------

@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterProcesses]:
    """A cluster of the test's own, which it kills a master of."""
    with start_redis_cluster(tmp_path / "cluster") as cluster:
        yield cluster


@pytest.mark.timeout(240)
async def test_a_master_killed_under_load(
    own_cluster: RedisClusterProcesses, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given two stacks on one cluster, busy with the same queue name (so the same slot), one
    # whose stores wait for a replica to confirm every write (wait=1) and one that does not
    stacks: dict[str, Stack] = {}
    try:
        settings = {}
        for name, options in [("wait=1", "&wait=1"), ("no wait", "")]:
            uris = own_cluster.stack_uris(name[0], options)
            settings[name] = make_settings(data_dir=str(tmp_path / name), **uris)
        results = await asyncio.gather(*(asyncio.to_thread(start_stack, s)
                                         for s in settings.values()), return_exceptions=True)
        for name, stack in zip(settings, results, strict=True):
            if isinstance(stack, Stack):
                stacks[name] = stack
        for failed in results:
            if isinstance(failed, BaseException):
                raise failed
        clients = {name: httpx.AsyncClient(base_url=stack.url, headers=headers(PROJECT),
                                           timeout=60) for name, stack in stacks.items()}
        traffic = {name: Traffic(name, http) for name, http in clients.items()}
        for load in traffic.values():
            assert (await load.http.put(f"/v2/queues/{QUEUE}", json={})).status_code == 201
            load.start()
        try:
            started = time.monotonic()
            await until(lambda: all(len(t.acked) >= 40 and t.deleted for t in traffic.values()),
                        60, lambda: f"the load runs: {traffic}")

            # When the master of the queue's slot is killed, as in a crash
            master = await asyncio.to_thread(own_cluster.master_of,
                                             f"zm:{{{PROJECT}/{QUEUE}}}:")
            acked_before = {name: len(t.acked) for name, t in traffic.items()}
            master.kill()
            killed_at = time.monotonic()
            log.info("load running after %.1f s", killed_at - started)
            # Then its replica takes over
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            took_over = time.monotonic() - killed_at
            acked_by_new_master = {name: len(t.acked) for name, t in traffic.items()}
            # And, once the killed node is back as the new master's replica, both stacks serve
            await asyncio.to_thread(master.start)
            restarted = time.monotonic() - killed_at
            await asyncio.to_thread(own_cluster.wait_healthy, 60)
            rejoined = time.monotonic() - killed_at
            for load in traffic.values():
                load.streak = 0
            await until(lambda: all(t.streak >= 20 for t in traffic.values()), 60,
                        lambda: f"both stacks recover: {traffic}")
            log.info("recovered %.1f s after the kill", time.monotonic() - killed_at)
        finally:
            for load in traffic.values():
                await load.stop()

        for name, load in traffic.items():
            stored = set(await all_message_ids(load.http, QUEUE))
            missing = [m for m in load.acked if m not in load.deleted and m not in stored]
            first_after = next(answered for sent, answered in load.posted
                               if sent > killed_at) - killed_at
            unexpected = {s: n for s, n in load.statuses.items()
                          if s.split()[1] not in {"201", "204", "503"}}
            log.info(
                "%s: %d messages acknowledged (%d before the kill), %d deleted by the consumer, "
                "%d lost; answers %s; replica in charge %.1f s after the kill, killed node "
                "restarted at %.1f s and seen as replica at %.1f s, first post sent after the "
                "kill answered 201 %.1f s after it", name, len(load.acked), acked_before[name],
                len(load.deleted), len(missing), dict(sorted(load.statuses.items())), took_over,
                restarted, rejoined, first_after,
            )
            # Then every answer was a success or a 503
            assert unexpected == {}, (name, load.statuses)
            if name == "wait=1":
                # And with wait=1 no acknowledged message is lost: each was deleted by the
                # consumer or is still in the queue
                assert missing == [], (name, len(missing), len(load.acked))
            else:
                # Without wait, those acknowledged by the new master are all there; some
                # acknowledged by the old one just before the kill may be lost (asynchronous
                # replication)
                assert set(missing) <= set(load.acked[:acked_by_new_master[name]])
    finally:
        for stack in stacks.values():
            assert stack.stop() == 0, "".join(stack.output[-40:])
        for http in locals().get("clients", {}).values():
            await http.aclose()
