"""``GET /v2/health``: the admin's detailed health of every store, Zaqar's document."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from services.common.config import Settings
from services.queue_svc.storage.catalog import PoolRecord
from services.queue_svc.storage.registry import open_queue_store
from tests.gateway.conftest import GatewayFactory, running_services
from tests.servers import free_port, redis_process

ADMIN = {"X-Roles": "admin"}
OPERATIONS = [
    "create_queue", "post_messages", "claim_messages", "list_messages", "delete_messages",
    "delete_claim", "bulk_delete_messages", "delete_queue",
]


def assert_all_succeeded(status: dict[str, dict[str, object]], operations: list[str]) -> None:
    assert list(status) == operations
    for name, outcome in status.items():
        assert list(outcome) == ["succeeded", "seconds", "ref"], name
        assert outcome["succeeded"] is True and outcome["ref"] is None, name
        seconds = outcome["seconds"]
        assert isinstance(seconds, float) and 0 <= seconds < 5, name


async def test_health_times_every_operation(client: httpx.AsyncClient) -> None:
    # When an admin asks for the health of a deployment with pooling
    resp = await client.get("/v2/health", headers=ADMIN)
    # Then every store answers and each of Zaqar's operations was timed and succeeded
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["catalog_reachable"] is True and doc["storage_reachable"] is True
    assert_all_succeeded(doc["operation_status"], OPERATIONS)


async def test_health_checks_each_pool(
    client: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Given a pool
    name = "health-" + uuid.uuid4().hex[:8]
    uri = f"sqlite:///{tmp_path_factory.mktemp('pool') / 'pool.db'}"
    resp = await client.put(
        f"/v2/pools/{name}", content=orjson.dumps({"uri": uri, "weight": 1}), headers=ADMIN
    )
    assert resp.status_code == 201, resp.text
    try:
        # When the health is read
        doc = (await client.get("/v2/health", headers=ADMIN)).json()
        # Then the pool's store is reported under its name, as Zaqar's pooled driver does
        assert doc[name]["storage_reachable"] is True
        assert_all_succeeded(doc[name]["operation_status"], OPERATIONS[1:])
    finally:
        await client.delete(f"/v2/pools/{name}", headers=ADMIN)


async def test_a_pool_with_a_uri_no_store_has_does_not_fail_the_health(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a pool with a NUL in its URI, written to the catalog before such URIs were refused
    async with running_services(make_settings(pooling=True)) as settings:
        store = await open_queue_store(settings.store_uri("queue"))
        try:
            await store.catalog.put_pool(PoolRecord("bad", f"sqlite:///{tmp_path}/a\x00b.db", 1))
        finally:
            await store.close()
        http = await gateway_factory(settings)
        # When the health is read
        resp = await http.get("/v2/health", headers=ADMIN)
        # Then the stores that exist are reported, and the bad entry is logged and left out
        assert resp.status_code == 200, resp.text
        assert resp.json()["storage_reachable"] is True and "bad" not in resp.json()
        assert "health check leaves out pool bad: invalid pool URI" in caplog.text


async def test_health_without_pooling_is_zaqars_single_store_document(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    async with running_services(make_settings()) as settings:
        http = await gateway_factory(settings)
        resp = await http.get("/v2/health", headers=ADMIN)
        assert resp.status_code == 200
        doc = resp.json()
        assert list(doc) == ["storage_reachable", "operation_status"]
        assert_all_succeeded(doc["operation_status"], OPERATIONS)


async def test_health_is_503_when_services_do_not_answer(dead_client: httpx.AsyncClient) -> None:
    resp = await dead_client.get("/v2/health", headers=ADMIN)
    assert resp.status_code == 503
    assert resp.json()["title"] == "Service temporarily unavailable"
    assert resp.json()["description"].startswith("Health status could not be read: ")
    assert "did not answer (UNAVAILABLE)" in resp.json()["description"]


async def test_health_is_503_naming_an_unreachable_store(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    # Given message_svc on a Redis of its own, and a pool on another
    message_redis, pool_redis = redis_process(tmp_path / "r1"), redis_process(tmp_path / "r2")
    message_redis.start()
    pool_redis.start()
    settings = make_settings(
        pooling=True, message_store=f"redis://127.0.0.1:{message_redis.port}/0"
    )
    try:
        async with running_services(settings):
            http = await gateway_factory(settings)
            pool = {"uri": f"redis://127.0.0.1:{pool_redis.port}/0", "weight": 1}
            resp = await http.put("/v2/pools/p1", content=orjson.dumps(pool), headers=ADMIN)
            assert resp.status_code == 201
            assert (await http.get("/v2/health", headers=ADMIN)).status_code == 200
            # When the pool's Redis goes away
            pool_redis.kill()
            resp = await http.get("/v2/health", headers=ADMIN)
            # Then the health is 503, naming the pool's store and why
            assert resp.status_code == 503
            description = resp.json()["description"]
            assert "the store of pool p1 is not reachable" in description
            assert "Redis cannot be reached" in description
            assert "the message store is not reachable" not in description
            # And so is the pool's subscription store (notifier_svc's, on the same server)
            assert "the subscription store of pool p1 is not reachable" in description
            assert "the subscription store is not reachable" not in description
            # And when message_svc's own Redis goes too, both are named
            message_redis.kill()
            description = (await http.get("/v2/health", headers=ADMIN)).json()["description"]
            assert "the message store is not reachable" in description
            assert "the store of pool p1 is not reachable" in description
            # And once they are back, the health is 200 again
            message_redis.start()
            pool_redis.start()
            assert (await http.get("/v2/health", headers=ADMIN)).status_code == 200
    finally:
        message_redis.stop()
        pool_redis.stop()


# /healthz and /readyz: the gateway's liveness and readiness probes ---------------------------


async def test_healthz_answers_without_headers_even_when_nothing_serves(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    # Given a gateway with no service behind it, and a caller without Zaqar headers
    http = await gateway_factory(make_settings(rpc_timeout=1.0), headers={})
    # When the orchestrator asks whether the process is alive
    for method in ("GET", "HEAD"):
        resp = await http.request(method, "/healthz")
        # Then it is, whatever the services behind do
        assert resp.status_code == 200, resp.text
    assert (await http.get("/healthz")).json() == {"alive": True}


async def test_readyz_is_200_once_every_upstream_serves(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    async with running_services(make_settings()) as settings:
        http = await gateway_factory(settings, headers={})
        resp = await http.get("/readyz")
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"ready": True, "upstreams": {
            "zaqar.v2.Queues": True, "zaqar.v2.Messages": True, "zaqar.v2.Subscriptions": True}}
        assert (await http.head("/readyz")).status_code == 200


async def test_readyz_is_503_naming_the_upstreams_that_do_not_serve(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    http = await gateway_factory(make_settings(rpc_timeout=1.0), headers={})
    resp = await http.get("/readyz")
    assert resp.status_code == 503
    assert resp.json() == {
        "title": "Service temporarily unavailable",
        "description": "Not serving: zaqar.v2.Messages, zaqar.v2.Queues, zaqar.v2.Subscriptions.",
    }


async def test_probes_need_no_token_in_keystone_mode(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory
) -> None:
    # Given a gateway in keystone mode (its Keystone unreachable) and a caller with no token
    settings = make_settings(
        auth_strategy="keystone", keystone_url=f"http://127.0.0.1:{free_port()}/v3",
        keystone_username="zaqar", keystone_password="secret", rpc_timeout=1.0,
    )
    http = await gateway_factory(settings, headers={})
    # Then liveness answers without Keystone, readiness answers (not ready), Zaqar's API is 401
    assert (await http.get("/healthz")).status_code == 200
    assert (await http.get("/readyz")).status_code == 503
    assert (await http.get("/v2/ping")).status_code == 401
