"""The MongoDB stores given replica-set URIs, on a real server.

SecantusDB answers ``hello`` as the one member (the primary) of a replica set, so a URI naming
that set is a real replica-set connection: the driver discovers the set, selects servers by
read preference and sends the write concern with every write. There is no secondary, which
tells exactly which reads follow the URI's ``readPreference=secondary``: those fail to find a
server, while claims, deletes by claim, versions and listings, forced to the primary, work.
(Failover and replication lag need a real multi-member set, which these tests do not have.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from services.common.errors import Unavailable
from services.message_svc.storage.base import DeleteOutcome, NewMessage, StaleQueue
from services.message_svc.storage.mongodb import MongoMessageStore
from services.notifier_svc.storage.mongodb import MongoNotifierStore
from services.queue_svc.storage.base import MetadataPatch
from services.queue_svc.storage.mongodb import MongoQueueStore
from tests.servers import MONGODB_REPLICA_SET, ServerProcess

SECONDARY = f"replicaSet={MONGODB_REPLICA_SET}&readPreference=secondary" \
    "&serverSelectionTimeoutMS=300"
MAJORITY = f"replicaSet={MONGODB_REPLICA_SET}&w=majority&wTimeoutMS=2000" \
    "&readConcernLevel=majority&readPreference=primaryPreferred"


def given(uri: str, query: str) -> str:
    """The store URI of the fixture (a fresh database) with ``query`` for its options."""
    return f"{uri.partition('?')[0]}?{query}"


@pytest.fixture
async def opened() -> AsyncIterator[Callable[[Any], Any]]:
    """Opens a store built by ``from_uri``; closed afterwards."""
    stores: list[Any] = []

    async def open_(store: Any) -> Any:
        await store.open()
        stores.append(store)
        return store

    yield open_
    for store in stores:
        await store.close()


async def test_the_server_is_the_primary_of_a_one_member_replica_set(
    mongodb_server: ServerProcess,
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(port=mongodb_server.port)
    try:
        hello = await client.admin.command("hello")
    finally:
        await client.close()
    assert hello["setName"] == MONGODB_REPLICA_SET
    assert hello["isWritablePrimary"] is True and hello["hosts"] == [hello["me"]]


async def test_the_message_store_works_with_majority_concerns(
    mongodb_uri: str, opened: Any
) -> None:
    # Given a message store whose URI names the set, with majority writes and reads
    store = await opened(MongoMessageStore.from_uri(given(mongodb_uri, MAJORITY)))
    # When messages go through a whole life: versioned post, claim, delete by claim
    version = await store.bump_queue_version("p", "q")
    ids = await store.post("p", "q", "c", [NewMessage(b'{"n":1}', 60),
                                            NewMessage(b'{"n":2}', 60)], version=version)
    result = await store.claim("p", "q", limit=1, ttl=30, grace=30, version=version)
    assert result.claim is not None
    assert await store.delete("p", "q", ids[0], result.claim.id) is DeleteOutcome.DELETED
    # Then every read sees the writes acknowledged before it
    assert [m.id for m in await store.list_messages("p", "q", limit=10)] == [ids[1]]
    stats = await store.stats("p", "q")
    assert (stats.total, stats.claimed) == (1, 0)
    assert await store.queue_version("p", "q") == version


async def test_a_write_concern_the_server_cannot_satisfy_is_refused(mongodb_uri: str) -> None:
    # Given a URI asking that three members acknowledge every write, on a set of one
    store = MongoMessageStore.from_uri(given(mongodb_uri, "w=3&wTimeoutMS=500"))
    # Then the server refuses the first write (the indexes), since the URI's write concern
    # reached it unchanged
    with pytest.raises(Unavailable) as caught:
        await store.open()
    assert "MongoDB refused the operation (error 100)" in caught.value.description


async def test_with_read_preference_secondary_claims_and_versions_read_the_primary(
    mongodb_uri: str, opened: Any
) -> None:
    # Given a message store whose URI asks for reads from secondaries, of which there are none
    store = await opened(MongoMessageStore.from_uri(given(mongodb_uri, SECONDARY)))
    # When queue versions are raised and checked, and messages posted and claimed
    version = await store.bump_queue_version("p", "q")
    assert await store.queue_version("p", "q") == version
    ids = await store.post("p", "q", "c", [NewMessage(b"{}", 60) for _ in range(3)],
                           version=version)
    with pytest.raises(StaleQueue):
        await store.post("p", "q", "c", [NewMessage(b"{}", 60)], version=version - 1)
    claimed = await store.claim("p", "q", limit=2, ttl=30, grace=30, version=version)
    # Then all of it read from the primary, as do a claim's reads, renewals and deletes
    assert claimed.claim is not None
    claim_id = claimed.claim.id
    assert [m.id for m in claimed.claim.messages] == list(ids[:2])
    found = await store.get_claim("p", "q", claim_id)
    assert found is not None and len(found.messages) == 2
    assert await store.renew_claim("p", "q", claim_id, ttl=60, grace=30) is True
    assert await store.delete("p", "q", ids[0], None) is DeleteOutcome.CLAIMED
    assert await store.delete("p", "q", ids[0], claim_id) is DeleteOutcome.DELETED
    assert await store.delete_many("p", "q", [ids[1]], [claim_id]) == 1
    assert [m.id for m in await store.list_messages("p", "q", limit=10)] == [ids[2]]
    assert [m.id for m in await store.pop("p", "q", 1)] == [ids[2]]
    await store.release_claim("p", "q", claim_id)
    await store.collect_garbage()
    # And only the reads allowed to lag follow the URI (here: no secondary to read from)
    for lagging in (store.stats("p", "q"), store.get("p", "q", ids[2]),
                    store.get_many("p", "q", [ids[2]])):
        with pytest.raises(Unavailable) as caught:
            await lagging
        assert "MongoDB cannot be reached" in caught.value.description


async def test_with_read_preference_secondary_the_queue_store_reads_the_primary(
    mongodb_uri: str, opened: Any
) -> None:
    store = await opened(MongoQueueStore.from_uri(given(mongodb_uri, SECONDARY)))
    assert await store.create("p", "q", {"a": 1}) is True
    record = await store.update_metadata("p", "q", [MetadataPatch("add", "b", 2)])
    assert dict(record.metadata) == {"a": 1, "b": 2}
    found = await store.get("p", "q")
    assert found is not None and dict(found.metadata) == {"a": 1, "b": 2}
    assert [r.name for r in (await store.list("p", limit=5)).queues] == ["q"]
    assert await store.delete("p", "q") is True


async def test_with_read_preference_secondary_the_notifier_store_reads_the_primary(
    mongodb_uri: str, opened: Any
) -> None:
    store = await opened(MongoNotifierStore.from_uri(given(mongodb_uri, SECONDARY)))
    subscription, created = await store.create("p", "q", "http://h/x", 60, {})
    assert created
    assert [s.id for s in await store.list("p", "q", limit=5)] == [subscription.id]
    assert [s.id for s in await store.subscribers("p", "q")] == [subscription.id]
