"""Message encryption at rest, through real message_svc, queue_svc and notifier_svc over gRPC.

Each store is read directly afterwards: a distinctive marker posted to an encrypted queue must
appear nowhere in it (a plain queue's marker, posted alongside, shows that the raw read would
find it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import bson
import grpc
import orjson
import pytest
import redis.asyncio
from pymongo import AsyncMongoClient
from zaqar_grpc.v2 import messages_pb2, queues_pb2

from services.common import metrics
from services.common.config import Settings
from services.message_svc.encryption import Envelope
from tests.receivers import Receiver
from tests.servers import ServerProcess
from tests.services.test_message_svc import (  # noqa: F401 - shared fixtures
    PROJECT,
    Services,
    message_svc_factory,
    rpc_error,
)
from tests.services.test_notifier_svc import PROJECT as NOTIFY_PROJECT
from tests.services.test_notifier_svc import Stack, stack_factory  # noqa: F401

KEY_A = "a:" + base64.b64encode(os.urandom(32)).decode()
KEY_B = "b:" + base64.b64encode(os.urandom(32)).decode()
SECRET = "secret-marker-7f3a9c"
VISIBLE = "visible-marker-2b8e41"
NO_KEYS = (
    "_enable_encrypt_messages cannot be true: no message encryption key is configured "
    "(ZAQAR_MESSAGE_ENCRYPTION_KEYS)."
)


@pytest.fixture(params=["sqlite", "redis", "mongodb"])
async def message_store(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The message store URI of the test ("" = the default SQLite file in the data folder)."""
    name = uuid.uuid4().hex[:12]
    if request.param == "sqlite":
        yield ""
    elif request.param == "redis":
        server: ServerProcess = request.getfixturevalue("redis_server")
        yield f"redis://127.0.0.1:{server.port}/5?prefix=enc{name}"
    else:
        server = request.getfixturevalue("mongodb_server")
        yield f"mongodb://127.0.0.1:{server.port}/enc{name}"


def files(settings: Settings, pattern: str) -> bytes:
    """The bytes of the data folder's files matching ``pattern`` (a database and its WAL)."""
    return b"".join(p.read_bytes() for p in sorted(Path(settings.data_dir).glob(pattern)))


async def raw_store(settings: Settings, uri: str) -> bytes:
    """Every byte the message store holds, as read around message_svc."""
    if not uri:
        return files(settings, "messages.db*")
    if uri.startswith("redis://"):
        prefix = uri.rpartition("prefix=")[2]
        client = redis.asyncio.Redis.from_url(uri.partition("?")[0])
        found = []
        try:
            async for key in client.scan_iter(match=f"*{prefix}*"):
                kind = (await client.type(key)).decode()
                if kind == "string":
                    found.append(await client.get(key) or b"")
                elif kind == "hash":
                    found += [k + v for k, v in (await client.hgetall(key)).items()]
                elif kind == "zset":
                    found += await client.zrange(key, 0, -1)
                elif kind == "list":
                    found += await client.lrange(key, 0, -1)
                elif kind == "set":
                    found += list(await client.smembers(key))
            assert found, "nothing read from Redis"
        finally:
            await client.aclose()
        return b"".join(found)
    database = uri.rpartition("/")[2]
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        db = mongo[database]
        documents = [
            bson.encode(doc)
            for name in await db.list_collection_names()
            async for doc in db[name].find({})
        ]
    finally:
        await mongo.close()
    return b"".join(documents)


async def encrypted_queue(svc: Services, queue: str, **metadata: Any) -> None:
    await svc.create_queue(queue, _enable_encrypt_messages=True, **metadata)


async def test_bodies_are_encrypted_at_rest_and_read_back_in_plaintext(
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811
    message_store: str,
) -> None:
    # Given an encrypted queue and a plain one, with checksums on
    svc = await message_svc_factory(
        message_store=message_store, message_encryption_keys=KEY_A, message_checksum=True
    )
    await encrypted_queue(svc, "secret")
    # When messages are posted to both
    body = {"marker": SECRET, "n": 1}
    ids = await svc.post(body, {"marker": SECRET, "n": 2}, {"marker": SECRET, "n": 3},
                         queue="secret")
    await svc.post({"marker": VISIBLE}, queue="plain")
    # Then every read path answers the plaintext, with the plaintext's checksum
    listed = await svc.listed("secret")
    assert [orjson.loads(m.body)["n"] for m in listed] == [1, 2, 3]
    assert listed[0].checksum == "MD5:" + hashlib.md5(orjson.dumps(body)).hexdigest()
    got = await svc.messages.GetMessage(messages_pb2.GetMessageRequest(
        project=PROJECT, queue="secret", message_id=ids[0]))
    assert orjson.loads(got.body) == body
    many = await svc.messages.GetMessages(messages_pb2.GetMessagesRequest(
        project=PROJECT, queue="secret", message_ids=ids[:2]))
    assert sorted(orjson.loads(m.body)["n"] for m in many.messages) == [1, 2]
    claim = await svc.claim("secret", limit=1)
    assert [orjson.loads(m.body) for m in claim.messages] == [body]
    again = await svc.messages.GetClaim(messages_pb2.GetClaimRequest(
        project=PROJECT, queue="secret", claim_id=claim.id))
    assert [orjson.loads(m.body) for m in again.messages] == [body]
    popped = await svc.messages.PopMessages(messages_pb2.PopMessagesRequest(
        project=PROJECT, queue="secret", limit=1))
    assert [orjson.loads(m.body)["n"] for m in popped.messages] == [2]
    # And the store holds the plain queue's marker but not the encrypted one's
    raw = await raw_store(svc.settings, message_store)
    assert VISIBLE.encode() in raw
    assert SECRET.encode() not in raw


async def test_rotation_flag_changes_and_dead_letters_keep_messages_readable(
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811
) -> None:
    # Given a message sealed with key a, on a queue that dead-letters after one claim
    svc = await message_svc_factory(message_encryption_keys=KEY_A)
    await encrypted_queue(svc, "q", _max_claim_count=1, _dead_letter_queue="dlq")
    [first] = await svc.post({"marker": SECRET, "n": 1}, queue="q")
    # When the services run again with key b current and a still listed
    rotated = await message_svc_factory(
        data_dir=svc.settings.data_dir, message_encryption_keys=f"{KEY_B},{KEY_A}"
    )
    [second] = await rotated.post({"marker": SECRET, "n": 2}, queue="q")
    # Then both are read, and the new one is sealed with b
    assert [orjson.loads(m.body)["n"] for m in await rotated.listed("q")] == [1, 2]
    kids = {
        row[0]: Envelope(bytes(row[1])).kid
        for row in _rows(rotated.settings, "SELECT id, body FROM messages")
    }
    assert kids == {first: "a", second: "b"}
    # And a message dead-lettered to a queue without the flag is still read there
    claim = await rotated.claim("q", limit=1)
    await rotated.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
        project=PROJECT, queue="q", claim_id=claim.id))
    await rotated.claim("q", limit=2)
    dead = await rotated.listed("dlq", include_claimed=True)
    assert [orjson.loads(m.body)["n"] for m in dead] == [1]
    # And turning the flag off keeps sealed messages readable and stores new ones in clear
    await rotated.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="q", operations=[queues_pb2.PatchOperation(
            op="replace", path="/metadata/_enable_encrypt_messages", value=b"false")]))
    await rotated.post({"marker": VISIBLE}, queue="q")
    listed = await rotated.listed("q", include_claimed=True)
    assert [orjson.loads(m.body)["marker"] for m in listed] == [SECRET, VISIBLE]
    # And without key a, its message is an error naming the key, never a corrupt body
    without_a = await message_svc_factory(
        data_dir=svc.settings.data_dir, message_encryption_keys=KEY_B
    )
    error = await rpc_error(without_a.messages.GetMessage(messages_pb2.GetMessageRequest(
        project=PROJECT, queue="dlq", message_id=first)))
    assert error.code == grpc.StatusCode.DATA_LOSS and error.reason == "MESSAGE_UNREADABLE"
    assert "key 'a', which is not configured" in error.description


def _rows(settings: Settings, query: str) -> list[Any]:
    import sqlite3

    with sqlite3.connect(Path(settings.data_dir) / "messages.db") as db:
        return db.execute(query).fetchall()


async def test_encrypted_queues_need_a_key(
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811
) -> None:
    svc = await message_svc_factory()
    # Creating (or replacing) such a queue is refused
    error = await rpc_error(svc.queues.CreateQueue(queues_pb2.CreateQueueRequest(
        project=PROJECT, queue="q", metadata=b'{"_enable_encrypt_messages": true}')))
    assert (error.code, error.description) == (grpc.StatusCode.INVALID_ARGUMENT, NO_KEYS)
    # and so is a patch turning it on
    await svc.create_queue("q")
    error = await rpc_error(svc.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="q", operations=[queues_pb2.PatchOperation(
            op="add", path="/metadata/_enable_encrypt_messages", value=b"true")])))
    assert (error.code, error.description) == (grpc.StatusCode.INVALID_ARGUMENT, NO_KEYS)
    assert error.title == "Invalid request body"


async def test_subscribers_get_plaintext_and_the_outbox_holds_none(
    stack_factory: Callable[..., Awaitable[Stack]],  # noqa: F811
    receiver: Receiver,
) -> None:
    # Given a webhook on an encrypted queue and one on a plain queue
    stack = await stack_factory(message_encryption_keys=KEY_A)
    await stack.queues.CreateQueue(queues_pb2.CreateQueueRequest(
        project=NOTIFY_PROJECT, queue="q", metadata=b'{"_enable_encrypt_messages": true}'))
    await stack.subscribe(receiver.url("/secret"))
    await stack.subscribe(receiver.url("/plain"), queue="plain")
    # When a message is posted to each
    await stack.post({"marker": SECRET}, ttl=300)
    await stack.post({"marker": VISIBLE}, queue="plain", ttl=300)
    hits = await receiver.wait_for(2)
    # Then the subscriber gets the plaintext, shaped as ever
    [secret] = [h.json() for h in hits if h.path == "/secret"]
    assert secret == {"body": {"marker": SECRET}, "ttl": 300, "Message_Type": "Notification",
                      "queue_name": "q"}
    # And notifier_svc's store (the file and its log) never held it
    raw = files(stack.settings, "notifier.db*")
    assert VISIBLE.encode() in raw
    assert VISIBLE.encode() in raw
    assert SECRET.encode() not in raw


async def test_filter_policies_judge_the_plaintext_of_sealed_messages(
    stack_factory: Callable[..., Awaitable[Stack]],  # noqa: F811
    receiver: Receiver,
) -> None:
    # Given an encrypted queue with two webhooks, each with a filter policy on the body
    stack = await stack_factory(message_encryption_keys=KEY_A)
    await stack.queues.CreateQueue(queues_pb2.CreateQueueRequest(
        project=NOTIFY_PROJECT, queue="q", metadata=b'{"_enable_encrypt_messages": true}'))
    await stack.subscribe(receiver.url("/red"), filter_policy={"colour": ["red"]})
    await stack.subscribe(receiver.url("/blue"), filter_policy={"colour": ["blue"]})
    filtered = metrics.FILTERED_MESSAGES.labels("http")
    before = filtered._value.get()
    # When a red and then a blue message are posted
    await stack.post({"colour": "red", "marker": SECRET}, ttl=300)
    await stack.post({"colour": "blue", "marker": SECRET}, ttl=300)
    # Then each webhook gets only the message its policy matches, in plaintext
    hits = await receiver.wait_for(2)
    got = sorted((h.path, h.json()["body"]["colour"]) for h in hits)
    assert got == [("/blue", "blue"), ("/red", "red")]
    # And the other two (message, webhook) pairs were filtered out, not stored for delivery
    assert filtered._value.get() - before == 2
    # And no plaintext was stored at all
    raw = files(stack.settings, "notifier.db*")
    assert SECRET.encode() not in raw
