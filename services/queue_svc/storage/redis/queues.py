"""Queues in Redis, each project's in two keys, every change one Lua script.

Key layout (``zq`` is the URI's ``prefix`` option)::

    zq:q:<project>   hash        queue name -> metadata as JSON text (orjson, key order kept),
                                 and queue name + "/pool" -> the pool the queue is placed on
                                 (absent: message_svc's own store; "/" is in no queue name)
    zq:n:<project>   sorted set  queue names, all with score 0, so ZRANGEBYLEX orders by name
    zq:t:<project>   hash        topic name -> metadata (topics: ``RedisTopicStore``)
    zq:tn:<project>  sorted set  topic names, as zq:n:

Both keys of a project change together inside one script (``*.lua`` next to this module),
which Redis runs atomically. Metadata updates are a compare-and-set loop: read, patch in
Python (with the caller's check), then store only if the metadata is still what was read.
On a Redis Cluster the two keys of a project share a hash tag (``cluster.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import orjson
import redis.asyncio
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from services.common import redis_store
from services.common.errors import QueueNotFound, Unavailable
from services.common.redis_store import (
    RedisClusterClient,
    check_tls_files,
    open_with_scripts,
)
from services.common.store_edge import contended
from services.queue_svc.storage.base import (
    MetadataCheck,
    MetadataPatch,
    QueuePage,
    QueueRecord,
    RecordKind,
    apply_patches,
    over_quota,
)
from services.queue_svc.storage.redis import catalog
from services.queue_svc.storage.redis._connection import (
    STORE,
    RedisOptions,
    connect,
    edge,
    parse,
)

SCRIPTS = (
    "create_queue", "ensure_queue", "update_queue", "delete_queue", "list_queues",
    catalog.SCRIPT,
)
# Names one list script call may examine: long enough for a page, short enough that Redis,
# which runs one script at a time, is never held up for long by a sparse name filter.
SCAN_BUDGET = 2000
# Queues fetched per script call when metadata filters are applied here, after the read.
FILTER_BATCH = 200
# Compare-and-set attempts of one update before giving up; each failed attempt means another
# update of the same queue succeeded, so this only bounds a pathological pile-up.
MAX_UPDATE_ATTEMPTS = 100
_INT64 = range(-(2**63), 2**63)
# The hash field of a queue's pool is the queue's name with this suffix.
POOL_SUFFIX = "/pool"


def _script_text(name: str) -> str:
    return resources.files(__name__.rpartition(".")[0]).joinpath(f"{name}.lua").read_text("utf-8")


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _dump(metadata: Mapping[str, Any]) -> str:
    return orjson.dumps(metadata).decode()


def _load(text: str | bytes) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads(text)
    return value


def _number(value: int | float) -> int | float:
    # As SQLite does: an integer beyond 64 bits compares as the nearest double.
    return value if not isinstance(value, int) or value in _INT64 else float(value)


def _equal(stored: Any, wanted: Any) -> bool:
    """The contract's filter equality (see :meth:`QueueStore.list`)."""
    if wanted is None or isinstance(wanted, bool) or isinstance(stored, bool):
        return type(stored) is type(wanted) and stored == wanted
    if isinstance(wanted, int | float):
        return isinstance(stored, int | float) and _number(stored) == _number(wanted)
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    if isinstance(stored, str | int | float) or stored is None:
        return False
    return orjson.dumps(stored) == orjson.dumps(wanted)


def _matches(metadata: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    return all(key in metadata and _equal(metadata[key], value) for key, value in filters.items())


class RedisQueueStore:
    """:class:`services.queue_svc.storage.base.QueueStore` on a Redis server."""

    # The kinds of key of the records (the metadata hash, the sorted set of names).
    _KINDS = ("q", "n")
    _RECORDS: RecordKind = "queues"

    def __init__(self, options: RedisOptions) -> None:
        self.options = options
        self._client: redis.asyncio.Redis | RedisClusterClient | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self.catalog = catalog.RedisCatalogStore(options, self._redis, self._run)
        self.topics: RedisQueueStore = RedisTopicStore(self)

    @classmethod
    def from_uri(cls, uri: str) -> RedisQueueStore:
        return cls(parse(uri))

    @property
    def address(self) -> str:
        return self.options.address

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        if self._client is None:
            raise Unavailable("The queue store is closed.")
        return self._client

    async def open(self) -> None:
        await check_tls_files(self.options)
        texts = {name: _script_text(name) for name in SCRIPTS}
        client = connect(self.options)
        self._scripts = await open_with_scripts(client, texts, "queue store", self.address)
        if isinstance(client, RedisClusterClient):
            client.idempotent_scripts.add(self._scripts["list_queues"].sha)
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    def _key(self, kind: str, project: str) -> str:
        return f"{self.options.prefix}:{kind}:{project}"

    def _metadata_key(self, project: str) -> str:
        return self._key(self._KINDS[0], project)

    def _names_key(self, project: str) -> str:
        return self._key(self._KINDS[1], project)

    def _keys(self, project: str) -> list[str]:
        """The KEYS of every script: the metadata hash, then the sorted set of names."""
        return [self._metadata_key(project), self._names_key(project)]

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if self.options.wait and script != "list_queues":
            return await self._run_and_wait(self._scripts[script], keys, args)
        return await self._scripts[script](keys=keys, args=args, client=self._redis())

    async def _run_and_wait(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that writes, then wait for the URI's replicas to confirm it."""
        call = redis_store.Call(("EVALSHA", script.sha, len(keys), *keys, *args), keys[0])
        for attempt in range(2):
            (reply,) = await redis_store.run(
                self._redis(), [call], self.options.wait, self.options.wait_timeout
            )
            if isinstance(reply, NoScriptError) and not attempt:
                await self._redis().script_load(script.script)  # a restarted server
                continue
            if isinstance(reply, Exception):
                raise reply
            return reply

    @edge("create the queue")
    async def create(
        self, project: str, name: str, metadata: Mapping[str, Any], pool: str | None = None,
        *, quota: int = 0,
    ) -> bool:
        created = await self._run(
            "create_queue", self._keys(project), [name, _dump(metadata), pool or "", quota]
        )
        if created == -1:
            raise over_quota(self._RECORDS, project, quota)
        return bool(created)

    @edge("create the queue")
    async def ensure(
        self, project: str, name: str, pool: str | None = None, *, quota: int = 0
    ) -> QueueRecord:
        found = await self._run("ensure_queue", self._keys(project), [name, pool or "", quota])
        if found == -1:
            raise over_quota(self._RECORDS, project, quota)
        text, placed = found
        return QueueRecord(project, name, _load(text), placed or None)

    @edge("read the queue")
    async def get(self, project: str, name: str) -> QueueRecord | None:
        text, pool = await self._redis().hmget(
            self._metadata_key(project), [name, name + POOL_SUFFIX]
        )
        return None if text is None else QueueRecord(project, name, _load(text), _text(pool))

    @edge("read the queue")
    async def exists(self, project: str, name: str) -> bool:
        return bool(await self._redis().hexists(self._metadata_key(project), name))

    @edge("update the queue")
    async def update_metadata(
        self,
        project: str,
        name: str,
        patches: Sequence[MetadataPatch],
        check: MetadataCheck | None = None,
    ) -> QueueRecord:
        metadata_key = self._metadata_key(project)
        for _ in range(MAX_UPDATE_ATTEMPTS):
            text = await self._redis().hget(metadata_key, name)
            if text is None:
                raise QueueNotFound(queue=name, project=project)
            metadata = apply_patches(_load(text), patches)
            if check is not None:
                check(metadata)
            outcome = await self._run("update_queue", [metadata_key], [name, text, _dump(metadata)])
            if outcome == 1:
                pool = await self._redis().hget(metadata_key, name + POOL_SUFFIX)
                return QueueRecord(project, name, metadata, _text(pool))
            if outcome == -1:
                raise QueueNotFound(queue=name, project=project)
        raise contended(STORE, "update the queue")

    @edge("count the queues of the pool")
    async def count_on_pool(self, pool: str) -> int:
        # No index spans projects (on a cluster, each project's keys sit on their own
        # shard): every project's hash is scanned. Run only when a pool is deleted or moved.
        client, count = self._redis(), 0
        pattern = _glob_escape(self.options.prefix) + ":q:*"
        async for key in client.scan_iter(match=pattern, count=1000):
            async for _, placed in client.hscan_iter(key, match="*" + POOL_SUFFIX, count=1000):
                count += placed == pool
        return count

    @edge("delete the queue")
    async def delete(self, project: str, name: str) -> bool:
        return bool(await self._run("delete_queue", self._keys(project), [name]))

    async def _stretch(
        self, project: str, after: str, want: int, name_contains: str, with_metadata: bool
    ) -> tuple[str, list[tuple[str, str]]]:
        """One list script call: where to resume ('' at the end) and the (name, metadata)
        pairs it found (metadata '' when not asked for)."""
        reply: list[str] = await self._run(
            "list_queues",
            self._keys(project),
            [after, want, name_contains, int(with_metadata), SCAN_BUDGET],
        )
        resume, found = reply[0], reply[1:]
        if with_metadata:
            return resume, list(zip(found[::2], found[1::2], strict=True))
        return resume, [(found_name, "") for found_name in found]

    async def _count(
        self, project: str, name_contains: str, filters: Mapping[str, Any]
    ) -> int:
        if not name_contains and not filters:
            return int(await self._redis().zcard(self._names_key(project)))
        count, after = 0, ""
        while True:
            after, found = await self._stretch(
                project, after, SCAN_BUDGET, name_contains, bool(filters)
            )
            count += sum(1 for _, text in found if not filters or _matches(_load(text), filters))
            if not after:
                return count

    @edge("list the queues")
    async def list(
        self,
        project: str,
        *,
        limit: int,
        marker: str = "",
        name_contains: str = "",
        metadata_filters: Mapping[str, Any] | None = None,
        with_count: bool = False,
    ) -> QueuePage:
        filters = metadata_filters or {}
        count = await self._count(project, name_contains, filters) if with_count else None
        queues: list[QueueRecord] = []
        after = marker
        while len(queues) < limit:
            want = max(limit - len(queues), FILTER_BATCH) if filters else limit - len(queues)
            after, found = await self._stretch(project, after, want, name_contains, True)
            for found_name, text in found:
                metadata = _load(text)
                if _matches(metadata, filters) and len(queues) < limit:
                    queues.append(QueueRecord(project, found_name, metadata))
            if not after:
                break
        return QueuePage(queues=queues, count=count)


class RedisTopicStore(RedisQueueStore):
    """:class:`services.queue_svc.storage.base.TopicStore`: the queue records' code and
    scripts under keys of their own (``t``, ``tn``), over the queue store's connection."""

    _KINDS = ("t", "tn")
    _RECORDS: RecordKind = "topics"

    def __init__(self, owner: RedisQueueStore) -> None:
        self.options = owner.options
        self._owner = owner

    def _redis(self) -> redis.asyncio.Redis | RedisClusterClient:
        return self._owner._redis()

    def _key(self, kind: str, project: str) -> str:
        return self._owner._key(kind, project)

    async def _run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        return await self._owner._run(script, keys, args)
