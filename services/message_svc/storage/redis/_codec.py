"""Key names of the Redis message store and the decoding of script replies."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from services.message_svc.storage.base import StoredMessage

# What a script returns for a message: id, seq, body, ttl, created, expires, visible_at,
# client_id, claim id ('' = none), claim expiry, claim count, FIFO group, fair-queue group
# (each None = none; see scripts/lib.lua).
Row = Sequence[Any]

_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "{": "%7B", "}": "%7D"})


def queue_tag(project: str, queue: str) -> str:
    """``<project>/<queue>``, escaped so that different queues never share a tag.

    Neither part may then contain ``/``, ``{`` or ``}``: the tag is the whole hash tag of the
    queue's keys, and splits back into exactly one project and queue.
    """
    return f"{project.translate(_ESCAPES)}/{queue.translate(_ESCAPES)}"


@functools.lru_cache(maxsize=4096)
def queue_prefix(prefix: str, project: str, queue: str) -> tuple[str, str]:
    """(tag, key prefix ``<prefix>:{<tag>}:``) of a queue."""
    tag = queue_tag(project, queue)
    return tag, f"{prefix}:{{{tag}}}:"


def prefix_of_tag(prefix: str, tag: str) -> str:
    return f"{prefix}:{{{tag}}}:"


def expected_version(version: int | None) -> str:
    """The script argument of an expected queue version ('' = no check)."""
    return "" if version is None else str(version)


def stale_version(reply: Any) -> int | None:
    """The queue's current version when a script refused for a stale one (its reply is
    ``{'stale', version}``), else ``None``."""
    if isinstance(reply, list) and len(reply) == 2 and reply[0] == b"stale":
        return int(reply[1])
    return None


def timestamp(value: float) -> str:
    """A time as the exact decimal text scripts store and compare (never rounded)."""
    return repr(float(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_message(row: Row, now: float, claim_id: str | None = None) -> StoredMessage:
    """The message of a script row; ``claim_id`` overrides the stored one (pop)."""
    if claim_id is None:
        held_by = _text(row[8])
        if held_by and float(row[9]) > now:
            claim_id = held_by
    return StoredMessage(
        id=_text(row[0]),
        seq=int(row[1]),
        body=bytes(row[2]),
        ttl=int(row[3]),
        created=float(row[4]),
        expires=float(row[5]),
        visible_at=float(row[6]),
        client_id=_text(row[7]),
        claim_id=claim_id,
        claim_count=int(row[10]),
        group_id=_group(row),
    )


def _group(row: Row) -> str | None:
    """A message's group: the FIFO one, else the fair-queue one."""
    for at in (11, 12):
        if len(row) > at and row[at] is not None:
            return _text(row[at])
    return None
