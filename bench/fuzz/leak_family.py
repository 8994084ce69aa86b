"""Family "leak": project A's data against look-alike callers, over HTTP and WebSocket.

Every :data:`SCENARIO_STEPS` leak cases a new project A creates a queue whose metadata, message
bodies and subscription hold a secret marker, four messages, a live claim on two, a
subscription and (with pooling) a flavor. Each case is one request of a caller B to A's queue
name and A's ids: read, list, claim, renew, confirm, delete, purge, post. B is another project
or a look-alike of A's id (case, surrounding white space, unicode look-alikes, A + "x", a
prefix of A, glob and SQL wildcards), or A itself on a look-alike queue name.

A leak is an answer to B that holds the marker or an id of A's that B did not send, a 2xx
answer reading or changing one of A's resources by its id, or any change to A's data: after a
step that writes, the resource it aimed at is read back as A; at the end of a scenario the
whole of A's data is compared with what it was after set-up.

Over HTTP a header value's leading and trailing spaces and tabs are not part of it (RFC 9110
§5.5), so look-alikes made of those are sent over WebSocket only (where they are distinct).
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bench.fuzz.fixture import ADMIN, SetupFailed, build
from bench.fuzz.wire import Answer, Connection, call

SCENARIO_STEPS = 100
JSON_PATCH = "application/openstack-messaging-v2.0-json-patch"
Q = "/v2/queues/{q}"


@dataclass(frozen=True)
class Caller:
    label: str
    project: str
    # Queue name B uses: None = A's own.
    queue: str | None = None
    http: bool = True


def lookalikes(project: str, queue: str) -> list[Caller]:
    """Callers B for A's project id (lower-case ASCII with digits and '-') and queue."""
    p = project
    cyr = p.replace("e", "\u0435", 1) if "e" in p else p.replace("a", "\u0430", 1)
    callers = [
        Caller("another project", "fzother-" + uuid.uuid4().hex[:10]),
        Caller("A upper-case", p.upper()),
        Caller("A first letter upper-case", p[0].upper() + p[1:]),
        Caller("A + 'x'", p + "x"),
        Caller("A minus its last character", p[:-1]),
        Caller("half of A", p[: len(p) // 2]),
        Caller("A with a Cyrillic look-alike letter", cyr),
        Caller("A with a full-width first letter", chr(ord(p[0]) + 0xFEE0) + p[1:]),
        Caller("A + zero-width space", p + "\u200b"),
        Caller("A + no-break space", p + "\u00a0"),
        Caller("A + combining accent", p + "\u0301"),
        Caller("A's prefix + '*'", p[:-3] + "*"),
        Caller("A with '?' for its last character", p[:-1] + "?"),
        Caller("A's prefix + '%'", p[:-3] + "%"),
        Caller("A with '_' for its last character", p[:-1] + "_"),
        Caller("A's prefix + '.*'", p[:-3] + ".*"),
        Caller("A with a bracket class", p[:-1] + "[0-9a-z]"),
        Caller("leading space + A", " " + p, http=False),
        Caller("A + trailing space", p + " ", http=False),
        Caller("A + tab", p + "\t", http=False),
        Caller("A + NUL", p + "\x00", http=False),
        Caller("A, queue with '_' for a character", p, queue[:-1] + "_"),
        Caller("A, queue with '.' for a character", p, queue[:-1] + "."),
        Caller("A, queue name minus its last character", p, queue[:-1]),
        Caller("A, queue name + 'x'", p, queue + "x"),
        Caller("A, queue name upper-case", p, queue.upper()),
    ]
    return callers


@dataclass(frozen=True)
class Op:
    name: str
    http: tuple[str, str, Any] | None  # method, path template, JSON body
    ws: tuple[str, dict[str, Any]] | None = None  # action, body template
    by_id: bool = False  # a 2xx answer reads or changes one of A's resources by id
    touches: str = ""  # A's resource to read back after the step
    admin: bool = False
    content_type: str = "application/json"
    pooling: bool = False

    @property
    def on_queue(self) -> bool:
        """Whether the op names a queue (project-wide ops are not tried by A itself)."""
        return "{q}" in (self.http[1] if self.http else "") or "queue_name" in (
            self.ws[1] if self.ws else {})


OPS: tuple[Op, ...] = (
    Op("list queues", ("GET", "/v2/queues?detailed=true&with_count=true&limit=20", None),
       ("queue_list", {"detailed": True, "with_count": True, "limit": 20})),
    Op("list queues by name", ("GET", "/v2/queues?detailed=true&name={qpart}", None),
       ("queue_list", {"detailed": True, "name": "{qpart}"})),
    Op("get queue", ("GET", Q, None), ("queue_get", {"queue_name": "{q}"})),
    Op("queue stats", ("GET", Q + "/stats", None), ("queue_get_stats", {"queue_name": "{q}"})),
    Op("list messages", ("GET", Q + "/messages?include_claimed=true&echo=true&limit=20", None),
       ("message_list", {"queue_name": "{q}", "include_claimed": True, "echo": True})),
    Op("get messages by ids", ("GET", Q + "/messages?ids={mids}", None),
       ("message_get_many", {"queue_name": "{q}", "message_ids": ["{mid}", "{cmid}"]})),
    Op("get message", ("GET", Q + "/messages/{mid}", None),
       ("message_get", {"queue_name": "{q}", "message_id": "{mid}"}), by_id=True),
    Op("get claimed message", ("GET", Q + "/messages/{cmid}", None),
       ("message_get", {"queue_name": "{q}", "message_id": "{cmid}"}), by_id=True),
    Op("claim", ("POST", Q + "/claims?limit=20", {"ttl": 60, "grace": 60}),
       ("claim_create", {"queue_name": "{q}", "limit": 20}), touches="queue"),
    Op("get claim", ("GET", Q + "/claims/{cid}", None),
       ("claim_get", {"queue_name": "{q}", "claim_id": "{cid}"}), by_id=True),
    Op("renew claim", ("PATCH", Q + "/claims/{cid}", {"ttl": 61, "grace": 60}),
       ("claim_update", {"queue_name": "{q}", "claim_id": "{cid}", "ttl": 61}), by_id=True,
       touches="claim"),
    Op("release claim", ("DELETE", Q + "/claims/{cid}", None),
       ("claim_delete", {"queue_name": "{q}", "claim_id": "{cid}"}), touches="claim"),
    Op("delete message", ("DELETE", Q + "/messages/{mid}", None),
       ("message_delete", {"queue_name": "{q}", "message_id": "{mid}"}), touches="messages"),
    Op("delete claimed message with its claim", ("DELETE", Q + "/messages/{cmid}?claim_id={cid}",
                                                 None),
       ("message_delete", {"queue_name": "{q}", "message_id": "{cmid}", "claim_id": "{cid}"}),
       touches="messages"),
    Op("delete messages by ids", ("DELETE", Q + "/messages?ids={mids}", None),
       ("message_delete_many", {"queue_name": "{q}", "message_ids": ["{mid}", "{cmid}"]}),
       touches="messages"),
    Op("delete claimed messages by claim", ("DELETE", Q + "/messages?ids={cmid}&claim_ids={cid}",
                                            None),
       ("message_delete_many", {"queue_name": "{q}", "claim_ids": ["{cid}"]}),
       touches="messages"),
    Op("pop", ("DELETE", Q + "/messages?pop=20", None),
       ("message_delete_many", {"queue_name": "{q}", "pop": 20}), touches="messages"),
    Op("list subscriptions", ("GET", Q + "/subscriptions?limit=20", None),
       ("subscription_list", {"queue_name": "{q}", "limit": 20})),
    Op("get subscription", ("GET", Q + "/subscriptions/{sid}", None),
       ("subscription_get", {"queue_name": "{q}", "subscription_id": "{sid}"}), by_id=True),
    Op("update subscription", ("PATCH", Q + "/subscriptions/{sid}", {"ttl": 7200}), None,
       by_id=True, touches="subscription"),
    Op("confirm subscription", ("PUT", Q + "/subscriptions/{sid}/confirm", {"confirmed": False}),
       None, by_id=True, touches="subscription"),
    Op("delete subscription", ("DELETE", Q + "/subscriptions/{sid}", None),
       ("subscription_delete", {"queue_name": "{q}", "subscription_id": "{sid}"}),
       touches="subscription"),
    Op("update queue", ("PATCH", Q, [{"op": "replace", "path": "/metadata/description",
                                       "value": "b"}]), None, touches="queue",
       content_type=JSON_PATCH),
    Op("create queue", ("PUT", Q, {"description": "b"}),
       ("queue_create", {"queue_name": "{q}", "metadata": {"description": "b"}}),
       touches="queue"),
    Op("post", ("POST", Q + "/messages", {"messages": [{"body": {"b": 1}, "ttl": 60}]}),
       ("message_post", {"queue_name": "{q}", "messages": [{"body": {"b": 1}, "ttl": 60}]}),
       touches="queue"),
    Op("purge", ("POST", Q + "/purge", {}), ("queue_purge", {"queue_name": "{q}",
                                                           "resource_types": []}),
       touches="queue"),
    Op("delete queue", ("DELETE", Q, None), ("queue_delete", {"queue_name": "{q}"}),
       touches="queue"),
    Op("list flavors", ("GET", "/v2/flavors?detailed=true", None), pooling=True),
    Op("get flavor", ("GET", "/v2/flavors/{flavor}", None), by_id=True, pooling=True),
    Op("delete flavor", ("DELETE", "/v2/flavors/{flavor}", None), touches="flavor",
       admin=True, pooling=True),
)


@dataclass
class Secret:
    """What project A made, and its data as read back after set-up."""

    project: str
    client_id: str
    queue: str
    marker: str
    message_ids: list[str]
    claimed_ids: list[str]
    claim_id: str
    subscription_id: str
    flavor: str
    pool: str = ""
    snapshot: dict[str, Any] = field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [*self.message_ids, *self.claimed_ids, self.claim_id, self.subscription_id]

    def fill(self, value: Any, queue: str) -> Any:
        if isinstance(value, str):
            return value.format(
                q=queue, qpart=self.queue[:10], mid=self.message_ids[0],
                cmid=self.claimed_ids[0], mids=",".join(self.message_ids[:2] + self.claimed_ids),
                cid=self.claim_id, sid=self.subscription_id, flavor=self.flavor,
            )
        if isinstance(value, list):
            return [self.fill(v, queue) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v, queue) for k, v in value.items()}
        return value


async def create_secret(conn: Connection, rng: random.Random, sink: str,
                        pool_dir: str) -> Secret:
    """Project A's data; with ``pool_dir`` also a pool of A's own (pools are shared by every
    project, and a pool is in one flavor at most) and a flavor of A's on it."""
    tag = "".join(rng.choice("abcdef0123456789") for _ in range(10))
    project = f"fzleak-{tag}"
    marker = "MARK" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(16))
    pool = f"fzl-{tag}" if pool_dir else ""
    fx = await build(conn, project=project, queue=f"leak-{tag}", sink_url=f"{sink}/{marker}",
                     body={"secret": marker}, messages=4, pool=pool,
                     pool_uri=f"sqlite:///{pool_dir}/{pool}.db" if pool else "",
                     metadata={"description": marker, "_max_claim_count": 100})
    secret = Secret(project, fx.client_id, fx.queue, marker, fx.message_ids, fx.claimed_ids,
                    fx.claim_id, fx.subscription_id, fx.flavor, pool)
    secret.snapshot = await snapshot(conn, secret)
    status, what = unanswered(secret.snapshot)
    if what:
        raise SetupFailed("A reading its data back", Answer(status, body="; ".join(what).encode()))
    return secret


async def remove_secret(conn: Connection, s: Secret) -> None:
    """A deletes its queue, flavor and pool (the store keeps only what later cases use)."""
    h = {"Client-ID": s.client_id, "X-Project-ID": s.project, **ADMIN}
    await call(conn, "DELETE", f"/v2/queues/{s.queue}", h)
    if s.flavor:
        await call(conn, "DELETE", f"/v2/flavors/{s.flavor}", h)
    if s.pool:
        await call(conn, "DELETE", f"/v2/pools/{s.pool}", h)


async def snapshot(conn: Connection, s: Secret, parts: str = "") -> dict[str, Any]:
    """A's data as A reads it (``parts``: the one part to read; all when empty)."""
    h = {"Client-ID": s.client_id, "X-Project-ID": s.project}
    q = f"/v2/queues/{s.queue}"
    doc: dict[str, Any] = {}

    async def get(path: str, headers: dict[str, str] = h) -> tuple[int | None, Any]:
        answer = await call(conn, "GET", path, headers)
        try:
            return answer.status, answer.json()
        except ValueError:
            return answer.status, answer.body[:200]

    if parts in ("", "queue"):
        doc["queue"] = await get(q)
        status, stats = await get(q + "/stats")
        if isinstance(stats, dict) and "messages" in stats:
            counts = stats["messages"]
            stats = {k: counts.get(k) for k in ("claimed", "free", "total")}
        doc["stats"] = (status, stats)
    if parts in ("", "queue", "messages"):
        status, listed = await get(q + "/messages?include_claimed=true&echo=true&limit=20")
        if isinstance(listed, dict):
            listed = sorted((m["id"], json.dumps(m["body"], sort_keys=True))
                            for m in listed.get("messages", []))
        doc["messages"] = (status, listed)
    if parts in ("", "claim"):
        status, claim = await get(f"{q}/claims/{s.claim_id}")
        if isinstance(claim, dict):
            claim = (claim.get("ttl"), sorted(m["id"] for m in claim.get("messages", [])))
        doc["claim"] = (status, claim)
    if parts in ("", "subscription"):
        status, sub = await get(f"{q}/subscriptions/{s.subscription_id}")
        if isinstance(sub, dict):
            sub.pop("age", None)
        doc["subscription"] = (status, sub)
    if s.flavor and parts in ("", "flavor"):
        doc["flavor"] = await get(f"/v2/flavors/{s.flavor}")
    return doc


def unanswered(doc: dict[str, Any]) -> tuple[int | None, list[str]]:
    """A status of 500 or more (or None: no answer) among the reads of a snapshot, and what."""
    bad = [(status, f"{key}: {status} {str(value)[:300]}") for key, (status, value) in doc.items()
           if status is None or status >= 500]
    return (bad[0][0] if bad else 0), [text for _, text in bad]


def changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [f"{key}: {before[key]!r} -> {after[key]!r}"[:600]
            for key in after if before.get(key) != after[key]]


def leaked(s: Secret, sent: bytes, answer: bytes) -> list[str]:
    """What of A's the answer shows that the request did not hold."""
    found = []
    if s.marker.encode() in answer:
        found.append("A's secret marker")
    found += [f"A's id {i}" for i in s.ids if i.encode() in answer and i.encode() not in sent]
    return found


def http_request(s: Secret, op: Op, caller: Caller) -> tuple[str, str, dict[str, str], Any]:
    assert op.http is not None
    method, template, doc = op.http
    queue = quote(caller.queue or s.queue, safe="")
    path = s.fill(template, queue)
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": caller.project}
    if op.admin:
        headers.update(ADMIN)
    return method, path, headers, s.fill(doc, caller.queue or s.queue)


def ws_request(s: Secret, op: Op, caller: Caller) -> dict[str, Any]:
    assert op.ws is not None
    action, body = op.ws
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": caller.project}
    return {"action": action, "headers": headers, "body": s.fill(body, caller.queue or s.queue)}


def http_step_answer(answer: Answer) -> bytes:
    heads = "".join(f"{k}: {v}\n" for k, v in answer.headers.items()).encode()
    return heads + answer.body


def steps(seed: int, round_: int, pooling: bool) -> list[tuple[int, str, int]]:
    """(caller index, transport, op index) of every combination, in a seeded order."""
    callers = lookalikes("fzleak-0123456789", "leak-0123456789")
    found = []
    for ci, caller in enumerate(callers):
        for oi, op in enumerate(OPS):
            if (op.pooling and not pooling) or (caller.queue is not None and not op.on_queue):
                continue
            if op.http is not None and caller.http:
                found.append((ci, "http", oi))
            if op.ws is not None:
                found.append((ci, "ws", oi))
    random.Random(f"{seed}:leak:{round_}").shuffle(found)
    return found
