"""Queues placed on pools through ``zaqar-grpc up`` and real HTTP: pools on a SQLite file, a
redis-server and a MongoDB database registered over ``/v2/pools``, a flavor per pool, queues of
each flavor; where their messages are is read from the raw stores (SQL, Redis keys, MongoDB
documents), not through the services, and so is where their subscriptions are (each pool's
notifier store). Then the Redis pool's server is killed and started again (AOF with fsync on
every write): its queue answers 503, messages and subscriptions, while the others work, and
afterwards it works again with every acknowledged message and its subscription.

tests/services/test_pool_placement.py covers placement rules with in-process services; this
module is about the same through the processes an operator runs.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pymongo import MongoClient

from services.common.config import Settings
from tests.e2e.harness import start_stack
from tests.servers import ServerProcess, redis_process

pytestmark = pytest.mark.e2e

PROJECT = "pooled"
ADMIN = {"X-Roles": "admin"}
QUEUES = {"lite": "on-lite", "red": "on-red", "mongo": "on-mongo"}  # flavor -> queue


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[ServerProcess]:
    server = redis_process(tmp_path / "redis-pool", durable=True)
    server.start()
    yield server
    server.stop()


def sqlite_ids(path: str, queue: str) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id FROM messages WHERE project = ? AND queue = ?",
                          (PROJECT, queue)).fetchall()
    return {row[0] for row in rows}


def redis_ids(port: int, queue: str) -> set[str]:
    client = redis.Redis(port=port)
    try:
        base = f"zm:{{{PROJECT}/{queue}}}:m:"
        return {key.decode().removeprefix(base) for key in client.scan_iter(match=base + "*")}
    finally:
        client.close()


def mongodb_ids(port: int, database: str, queue: str) -> set[str]:
    client: MongoClient[dict[str, Any]] = MongoClient(port=port, serverSelectionTimeoutMS=5000)
    try:
        return {doc["_id"] for doc in client[database]["messages"].find(
            {"p": PROJECT, "q": queue}, {"_id": 1})}
    finally:
        client.close()


def sqlite_subscribed(path: str) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT DISTINCT queue FROM subscriptions WHERE project = ?",
                          (PROJECT,)).fetchall()
    return {row[0] for row in rows}


def redis_subscribed(port: int, prefix: str) -> set[str]:
    client = redis.Redis(port=port, decode_responses=True)
    try:
        records = [client.hgetall(key) for key in client.scan_iter(match=f"{prefix}:s:*")]
        return {r["queue"] for r in records if r.get("project") == PROJECT}
    finally:
        client.close()


def mongodb_subscribed(port: int, database: str) -> set[str]:
    client: MongoClient[dict[str, Any]] = MongoClient(port=port, serverSelectionTimeoutMS=5000)
    try:
        return {doc["q"] for doc in client[database]["subscriptions"].find({"p": PROJECT})}
    finally:
        client.close()


def post(http: httpx.Client, queue: str, count: int) -> httpx.Response:
    return http.post(f"/v2/queues/{queue}/messages", json={"messages": [
        {"body": {"n": n}, "ttl": 600} for n in range(count)
    ]})


def ids_of(r: httpx.Response) -> set[str]:
    assert r.status_code == 201, r.text
    return {href.rsplit("/", 1)[1] for href in r.json()["resources"]}


def listed(http: httpx.Client, queue: str) -> set[str]:
    r = http.get(f"/v2/queues/{queue}/messages",
                 params={"echo": "true", "include_claimed": "true", "limit": "20"})
    assert r.status_code == 200, r.text
    return {m["id"] for m in r.json()["messages"]}


def test_queues_on_sqlite_redis_and_mongodb_pools(
    tmp_path: Path, make_settings: Callable[..., Settings], durable_redis: ServerProcess,
    mongodb_server: ServerProcess,
) -> None:
    database = f"pool_{uuid.uuid4().hex[:10]}"
    lite = tmp_path / "pool-lite.db"
    uris = {
        "lite": f"sqlite:///{lite}",
        "red": f"redis://127.0.0.1:{durable_redis.port}/0",
        "mongo": f"mongodb://127.0.0.1:{mongodb_server.port}/{database}",
    }
    settings = make_settings(pooling=True, rpc_timeout=5.0)
    own = settings.store_uri("message").removeprefix("sqlite:///")
    stack = start_stack(settings)
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": PROJECT}
    try:
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
            # Given a pool on each store, each in a flavor of its own, registered over HTTP
            for flavor, uri in uris.items():
                r = http.put(f"/v2/pools/pool-{flavor}", headers=ADMIN,
                             json={"uri": uri, "weight": 100, "flavor": flavor})
                assert r.status_code == 201, r.text
                r = http.put(f"/v2/flavors/{flavor}", headers=ADMIN,
                             json={"pool_list": [f"pool-{flavor}"]})
                assert r.status_code == 201, r.text
            # And a queue of each flavor, and one without (message_svc's own store)
            for flavor, queue in QUEUES.items():
                r = http.put(f"/v2/queues/{queue}", json={"_flavor": flavor})
                assert r.status_code == 201, r.text

            # When messages are posted to each and two of each claimed
            acked = {queue: ids_of(post(http, queue, 3)) for queue in [*QUEUES.values(), "own"]}
            for queue in acked:
                r = http.post(f"/v2/queues/{queue}/claims?limit=2", json={"ttl": 300, "grace": 60})
                assert r.status_code == 201 and len(r.json()["messages"]) == 2, r.text
                stats = http.get(f"/v2/queues/{queue}/stats").json()["messages"]
                assert (stats["claimed"], stats["free"]) == (2, 1)

            # Then each queue's messages are in its pool's store, and in no other store
            found: dict[str, Callable[[str], set[str]]] = {
                "lite": lambda q: sqlite_ids(str(lite), q),
                "red": lambda q: redis_ids(durable_redis.port, q),
                "mongo": lambda q: mongodb_ids(mongodb_server.port, database, q),
                "own": lambda q: sqlite_ids(own, q),
            }
            for queue, ids in acked.items():
                where = {store: read(queue) for store, read in found.items()}
                home = next((f for f, q in QUEUES.items() if q == queue), "own")
                assert where == {store: ids if store == home else set() for store in found}, (
                    queue, where)

            # When each queue gets a subscription
            for queue in acked:
                r = http.post(f"/v2/queues/{queue}/subscriptions",
                              json={"subscriber": "http://127.0.0.1:9/hook", "ttl": 3600})
                assert r.status_code == 201, r.text
            # Then each is in the notifier store of its queue's pool (beside the pool's
            # messages, under keys, a file or a database of its own), and in no other store
            subscribed: dict[str, Callable[[], set[str]]] = {
                "lite": lambda: sqlite_subscribed(str(tmp_path / "pool-lite-notifier.db")),
                "red": lambda: redis_subscribed(durable_redis.port, "zm-notifier"),
                "mongo": lambda: mongodb_subscribed(mongodb_server.port, database + "-notifier"),
                "own": lambda: sqlite_subscribed(
                    settings.store_uri("notifier").removeprefix("sqlite:///")
                ),
            }
            assert {store: read() for store, read in subscribed.items()} == {
                **{flavor: {queue} for flavor, queue in QUEUES.items()}, "own": {"own"}
            }

            # When the Redis pool's server dies (SIGKILL)
            durable_redis.kill()
            # Then its queue answers 503, quickly, for reads and writes
            for method, path, body in [
                ("POST", "/v2/queues/on-red/messages", {"messages": [{"body": 1}]}),
                ("GET", "/v2/queues/on-red/messages", None),
                ("POST", "/v2/queues/on-red/claims", {"ttl": 60, "grace": 60}),
                ("GET", "/v2/queues/on-red/stats", None),
            ]:
                started = time.monotonic()
                r = http.request(method, path, json=body)
                assert r.status_code == 503, (method, path, r.status_code, r.text)
                assert time.monotonic() - started < 8
            r = http.get("/v2/queues/on-red/subscriptions")
            assert r.status_code == 503, r.text
            # And the queues of the other pools and of the own store keep working
            for queue in ["on-lite", "on-mongo", "own"]:
                acked[queue] |= ids_of(post(http, queue, 2))
                assert listed(http, queue) == acked[queue]
                r = http.get(f"/v2/queues/{queue}/subscriptions")
                assert r.status_code == 200 and len(r.json()["subscriptions"]) == 1, r.text
            # And the detailed health answers 503 naming the pool that is down (as Zaqar,
            # whose health is unreadable when a store is)
            r = http.get("/v2/health", headers=ADMIN)
            assert r.status_code == 503, r.text
            assert "pool pool-red" in r.json()["description"], r.text
            assert "pool-lite" not in r.json()["description"], r.text

            # When it is started again on the same data
            durable_redis.start()
            # Then its queue works again, without a restart of any service
            deadline = time.monotonic() + 30
            while (r := post(http, "on-red", 1)).status_code != 201:
                assert r.status_code == 503, r.text
                assert time.monotonic() < deadline, r.text
                time.sleep(0.2)
            acked["on-red"] |= ids_of(r)
            # And no acknowledged message of any queue is lost
            for queue, ids in acked.items():
                assert listed(http, queue) == ids, queue
            assert redis_ids(durable_redis.port, "on-red") == acked["on-red"]
            # And its subscription too
            r = http.get("/v2/queues/on-red/subscriptions")
            assert r.status_code == 200 and len(r.json()["subscriptions"]) == 1, r.text
    finally:
        assert stack.stop() == 0, "".join(stack.output[-40:])
