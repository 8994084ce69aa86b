"""The queue store on a Redis Cluster (``redis+cluster://``).

The same store and scripts as on one server (``queues.py``). Each script touches both keys of a
project, which must then hash to one slot: here they carry the project as their hash tag,
``<prefix>:q:{<project>/}`` and ``<prefix>:n:{<project>/}`` (``{``, ``}`` and ``%`` of the
project escaped, so that the tag is the whole project and never empty). Listing a project's
queues reads those two keys, so it stays one script in one slot; the price is that all the
queues of one project live on one shard. The pool catalog is one key, so it needs nothing.
Topics (``<prefix>:t:`` and ``<prefix>:tn:``) are tagged the same way.
"""

from __future__ import annotations

from services.queue_svc.storage.redis._connection import parse
from services.queue_svc.storage.redis.queues import RedisQueueStore

_ESCAPES = str.maketrans({"%": "%25", "{": "%7B", "}": "%7D"})


class RedisClusterQueueStore(RedisQueueStore):
    """:class:`RedisQueueStore` on a Redis Cluster (see the module's docstring)."""

    @classmethod
    def from_uri(cls, uri: str) -> RedisClusterQueueStore:
        return cls(parse(uri, cluster=True))

    def _tag(self, project: str) -> str:
        return "{" + project.translate(_ESCAPES) + "/}"

    def _key(self, kind: str, project: str) -> str:
        return f"{self.options.prefix}:{kind}:{self._tag(project)}"
