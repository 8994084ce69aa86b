"""python-zaqarclient, unmodified, drives queues, messages and claims against ``up``."""

from __future__ import annotations

import uuid

import pytest
from zaqarclient.queues.v2 import client as zaqar
from zaqarclient.transport import errors as zaqar_errors

from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e


def make_client(stack: Stack, project: str) -> zaqar.Client:
    conf = {"auth_opts": {"backend": "noauth", "options": {
        "client_uuid": str(uuid.uuid4()), "os_project_id": project}}}
    return zaqar.Client(stack.url, version=2, conf=conf)


def test_queue_lifecycle(stack: Stack, project: str) -> None:
    cli = make_client(stack, project)
    # Given a queue created with metadata
    q = cli.queue("orders", force_create=True)
    q.metadata(new_meta={"description": "orders", "_default_message_ttl": 120})
    # Then it is listed, and its metadata comes back with the reserved defaults
    listed, _ = cli.queues()
    assert [x.name for x in listed] == ["orders"]
    meta = cli.queue("orders").metadata(force_reload=True)
    assert meta["description"] == "orders"
    assert meta["_default_message_ttl"] == 120
    assert meta["_max_messages_post_size"] == 262144
    # When it is deleted, it is gone
    q.delete()
    listed, count = cli.queues(with_count=True)
    assert (list(listed), count) == ([], 0)


def test_post_list_get_delete(stack: Stack, project: str) -> None:
    cli = make_client(stack, project)
    q = cli.queue("work")
    # Given three posted messages with JSON bodies of several types
    q.post([{"body": {"n": 1}, "ttl": 300}, {"body": "two"}, {"body": [3]}])
    # When listed with echo, they come back in order with their bodies and ttls
    msgs = list(q.messages(echo=True))
    assert [m.body for m in msgs] == [{"n": 1}, "two", [3]]
    assert [m.ttl for m in msgs] == [300, 3600, 3600]
    # And each can be fetched by id, singly and as a set
    one = q.message(msgs[0].id)
    assert one.body == {"n": 1}
    assert {m.id for m in q.messages(*[m.id for m in msgs])} == {m.id for m in msgs}
    # When one is deleted, it is no longer there
    msgs[0].delete()
    with pytest.raises(zaqar_errors.ResourceNotFound):
        q.message(msgs[0].id)
    # And stats count the other two as free
    stats = q.stats["messages"]
    assert (stats["claimed"], stats["free"], stats["total"]) == (0, 2, 2)


def test_claim_renew_release_and_delete_with_claim(stack: Stack, project: str) -> None:
    cli = make_client(stack, project)
    q = cli.queue("jobs")
    q.post([{"body": {"job": i}} for i in range(4)])
    # Given a claim of two messages
    claim = q.claim(ttl=120, grace=60, limit=2)
    claimed = list(claim)
    assert [m.body for m in claimed] == [{"job": 0}, {"job": 1}]
    assert all(m.claim_id == claim.id for m in claimed)
    # When renewed, its ttl changes
    claim.update(ttl=240)
    assert q.claim(id=claim.id).ttl == 240
    # And a second claim gets the next messages, never the claimed ones
    other = q.claim(ttl=60, grace=60, limit=5)
    assert [m.body for m in other] == [{"job": 2}, {"job": 3}]
    # When a claimed message is deleted with its claim, it is gone
    claimed[0].delete()
    assert q.stats["messages"]["total"] == 3
    # When the first claim is released, its remaining message is claimable again
    claim.delete()
    again = q.claim(ttl=60, grace=60, limit=5)
    assert [m.body for m in again] == [{"job": 1}]


def test_pop_and_bulk_delete(stack: Stack, project: str) -> None:
    cli = make_client(stack, project)
    q = cli.queue("popq")
    q.post([{"body": i} for i in range(5)])
    popped = q.pop(count=2)
    assert [m.body for m in popped] == [0, 1]
    rest = list(q.messages(echo=True))
    assert [m.body for m in rest] == [2, 3, 4]
    q.delete_messages(*[m.id for m in rest])
    assert list(q.messages(echo=True)) == []


def test_health_and_ping(stack: Stack, project: str) -> None:
    cli = make_client(stack, project)
    assert cli.ping() is True
