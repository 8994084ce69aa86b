"""Subscription filter policies end to end: ``zaqar-grpc up`` (the session's SQLite stack),
subscriptions and messages over HTTP, real webhook receivers, notifier_svc's own metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.e2e.harness import Stack
from tests.receivers import Receiver
from tests.stacks import up_stack

pytestmark = pytest.mark.e2e

ORDERS = {"kind": ["order"], "total": [{"numeric": [">=", 100]}]}
EUROPE = {"$or": [{"region": [{"prefix": "eu-"}]}, {"customer": {"vip": [True]}}]}


@pytest.fixture
def stack(request: pytest.FixtureRequest) -> Stack:
    return up_stack(request, "sqlite")


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project}


async def filtered(stack: Stack) -> float:
    """notifier_svc's count of messages kept from ``http`` subscribers, from its metrics port."""
    url = f"http://{stack.settings.host}:{stack.settings.notifier_metrics_port}/metrics"
    async with httpx.AsyncClient() as http:
        answer = await http.get(url)
    assert answer.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "zaqar_notifier_filtered_messages_total"
        and sample.labels == {"scheme": "http"}
    )


def bodies(receiver: Receiver) -> list[Any]:
    return sorted((hit.json()["body"] for hit in receiver.hits), key=orjson.dumps)


async def test_each_subscriber_gets_only_what_its_policy_matches(
    stack: Stack, project: str, receiver: Receiver, receiver_factory: Any
) -> None:
    europe = await receiver_factory()
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        # Given two webhooks on one queue, each with its filter policy
        for hook, policy in ((receiver, ORDERS), (europe, EUROPE)):
            created = await http.post("/v2/queues/shop/subscriptions", json={
                "subscriber": hook.url(), "options": {"filter_policy": policy}})
            assert created.status_code == 201, created.text
        before = await filtered(stack)
        # When messages are posted, some for one of them, some for none, the last for both
        posted = [
            {"kind": "order", "total": 150, "region": "us-1"},
            {"kind": "order", "total": 50, "region": "eu-1"},
            {"kind": "refund", "total": 500, "customer": {"vip": True}},
            {"kind": "order", "total": 20, "region": "us-2"},
            "plain text",
            {"kind": "order", "total": 100, "region": "eu-9"},
        ]
        for body in posted:
            reply = await http.post("/v2/queues/shop/messages",
                                    json={"messages": [{"body": body, "ttl": 300}]})
            assert reply.status_code == 201
    # Then each receiver gets the messages its policy matches
    await receiver.wait_for(2)
    await europe.wait_for(3)
    # And the other 7 (message, subscriber) pairs were filtered out: every pair is accounted
    # for, so nothing else is on its way
    deadline = time.monotonic() + 10
    while await filtered(stack) - before < 7:
        assert time.monotonic() < deadline, "the filtered messages were not counted"
        await asyncio.sleep(0.05)
    assert await filtered(stack) - before == 7
    assert bodies(receiver) == sorted([posted[0], posted[5]], key=orjson.dumps)
    assert bodies(europe) == sorted([posted[1], posted[2], posted[5]], key=orjson.dumps)


async def test_a_bad_policy_is_a_400_naming_its_path_over_http_and_websocket(
    stack: Stack, project: str
) -> None:
    policy = {"kind": ["order"], "price": [{"numeric": ["<", 10, ">", 0]}]}
    description = (
        'options.filter_policy.price[0]: numeric needs ["=", n], one comparison such as '
        '[">", n], or a range such as [">", 0, "<=", 150] (lower bound first, then upper).'
    )
    error = {"title": "Invalid API request", "description": description}
    hook = "http://127.0.0.1:9/hook"
    async with httpx.AsyncClient(base_url=stack.url, headers=headers(project)) as http:
        created = await http.post("/v2/queues/shop/subscriptions", json={
            "subscriber": hook, "options": {"filter_policy": policy}})
        assert (created.status_code, created.json()) == (400, error)
        good = await http.post("/v2/queues/shop/subscriptions", json={
            "subscriber": hook, "options": {"filter_policy": {"kind": ["order"]}}})
        assert good.status_code == 201
        patched = await http.patch(
            f"/v2/queues/shop/subscriptions/{good.json()['subscription_id']}",
            json={"options": {"filter_policy": policy}})
        assert (patched.status_code, patched.json()) == (400, error)
    async with connect(f"ws://{stack.settings.host}:{stack.settings.ws_port}") as ws:
        await ws.send(orjson.dumps({
            "action": "subscription_create", "headers": headers(project),
            "body": {"queue_name": "shop", "subscriber": "http://127.0.0.1:9/other",
                     "options": {"filter_policy": policy}},
        }).decode())
        answer = orjson.loads(await ws.recv())
    # (Zaqar's WebSocket error body names the description "error")
    assert (answer["headers"]["status"], answer["body"]) == (
        400, {"title": "Invalid API request", "error": description}
    )
