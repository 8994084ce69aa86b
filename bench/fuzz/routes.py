"""The gateway's routes, read from its router, and a valid request for each route and method.

The table comes from ``falcon.inspect.inspect_routes(create_app(settings))``, so a route added
to the app is fuzzed without a change here: a route (or method) with no entry in
:data:`VALID` gets a generic request (its fields filled by name from the fixture, a ``{}``
body for methods that take one) and is listed in the report as generic.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from bench.fuzz.fixture import Fixture

JSON_PATCH = "application/openstack-messaging-v2.0-json-patch"
Q = "/v2/queues/{queue_name}"
# A topic's routes name it {queue_name} too; the fixture has a topic of its queue's name.
T = "/v2/topics/{queue_name}"
# Routes whose valid requests carry X-Roles: admin.
ADMIN_ROUTES = frozenset({"/v2/health", "/v2/pools", "/v2/pools/{pool_name}",
                          "/v2/flavors/{flavor_name}"})
# What a 2xx answer to a route spoils of a fixture (``Fixture.stale``).
SPOILS: dict[str, str] = {
    f"DELETE {Q}": "queue",
    f"POST {Q}/purge": "queue",
    f"POST {Q}/redrive": "queue",
    f"DELETE {Q}/messages": "queue",
    f"DELETE {Q}/claims/{{claim_id}}": "queue",
    f"DELETE {Q}/subscriptions/{{subscription_id}}": "queue",
    f"DELETE {T}": "queue",
    "PUT /v2/pools/{pool_name}": "catalog",
    "PATCH /v2/pools/{pool_name}": "catalog",
    "DELETE /v2/pools/{pool_name}": "catalog",
    "PUT /v2/flavors/{flavor_name}": "catalog",
    "PATCH /v2/flavors/{flavor_name}": "catalog",
    "DELETE /v2/flavors/{flavor_name}": "catalog",
}


def spoiled(method: str, template: str, status: int | None) -> str | None:
    """The part of a fixture a request spoilt (a claim answered 204: nothing left to claim)."""
    if status == 204 and method == "POST" and template == f"{Q}/claims":
        return "queue"
    if status is not None and 200 <= status < 300:
        return SPOILS.get(f"{method} {template}")
    return None


@dataclass(frozen=True)
class Route:
    template: str
    method: str

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"


def route_table(settings: Any) -> list[Route]:
    """(template, method) of every responder the app's router has (not Falcon's own)."""
    import falcon.inspect

    from services.api_gateway.app import create_app

    routes = falcon.inspect.inspect_routes(create_app(settings))
    return [Route(r.path, m.method) for r in routes for m in r.methods if not m.internal]


@dataclass
class Draft:
    """A request being built: every part is kept apart until :meth:`render`."""

    method: str
    segments: list[str]
    query: list[tuple[str, str | None]] = field(default_factory=list)
    headers: list[tuple[str | bytes, str | bytes]] = field(default_factory=list)
    doc: Any = None
    has_doc: bool = False
    body: bytes | None = None
    content_type: str | None = "application/json"
    fields: dict[str, int] = field(default_factory=dict)
    # Serialise ``doc`` with every non-ASCII character as a ``\\u`` escape.
    ascii: bool = False

    @property
    def target(self) -> str:
        path = "/" + "/".join(self.segments)
        if not self.query:
            return path
        parts = [k if v is None else f"{k}={v}" for k, v in self.query]
        return path + "?" + "&".join(parts)

    def header(self, name: str) -> str | bytes | None:
        for key, value in self.headers:
            if isinstance(key, str) and key.lower() == name.lower():
                return value
        return None

    def drop_header(self, name: str) -> None:
        self.headers = [(k, v) for k, v in self.headers
                        if not (isinstance(k, str) and k.lower() == name.lower())]

    def set_header(self, name: str, value: str | bytes) -> None:
        self.drop_header(name)
        self.headers.append((name, value))


@dataclass(frozen=True)
class Spec:
    """A valid request: query pairs, JSON body (``...`` = none) and extra headers."""

    query: tuple[tuple[str, str], ...] = ()
    doc: Any = ...
    content_type: str = "application/json"


def _q(**params: Any) -> tuple[tuple[str, str], ...]:
    return tuple((k, str(v).lower() if isinstance(v, bool) else str(v))
                 for k, v in params.items())


def _ids(fx: Fixture, rng: random.Random) -> str:
    ids = fx.message_ids + fx.claimed_ids
    return ",".join(rng.sample(ids, k=min(len(ids), rng.randint(1, 3)))) or "x"


Builder = Callable[[Fixture, random.Random], Spec]


# A long poll of a second: what the path's mutations meet must be refused before the wait's
# first look-up, as without one. (Never longer: a wait past the run's timeout is a hang.)
LONG_POLL = ("wait", "1")


def _long_poll(rng: random.Random) -> tuple[tuple[str, str], ...]:
    return (LONG_POLL,) if rng.random() < 0.2 else ()


def _messages_get(fx: Fixture, rng: random.Random) -> Spec:
    if rng.random() < 0.4:
        return Spec(_q(ids=_ids(fx, rng)))
    return Spec(_q(limit=rng.randint(1, 20), echo=True, include_claimed=rng.random() < 0.5)
                + _long_poll(rng))


def _claim(fx: Fixture, rng: random.Random) -> Spec:
    return Spec(_q(limit=2) + _long_poll(rng), doc={"ttl": 60, "grace": 60})


def _messages_delete(fx: Fixture, rng: random.Random) -> Spec:
    kind = rng.randrange(3)
    if kind == 0:
        return Spec(_q(pop=rng.randint(1, 3)))
    if kind == 1 and fx.claimed_ids:
        return Spec(_q(ids=",".join(fx.claimed_ids), claim_ids=fx.claim_id))
    return Spec(_q(ids=_ids(fx, rng)))


def _message_delete(fx: Fixture, rng: random.Random) -> Spec:
    return Spec(_q(claim_id=fx.claim_id)) if rng.random() < 0.5 else Spec()


def _post_messages(fx: Fixture, rng: random.Random) -> Spec:
    messages: list[dict[str, Any]] = [
        {"body": {"fz": i, "t": "x" * rng.randint(0, 20)}, "ttl": rng.randint(60, 3600)}
        for i in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        messages[0]["delay"] = rng.randint(0, 900)
    return Spec(doc={"messages": messages})


RETRY_POLICY = {"retries_with_no_delay": 3, "minimum_delay_retries": 3, "minimum_delay": 5,
                "maximum_delay": 30, "maximum_delay_retries": 3,
                "retry_backoff_function": "linear", "ignore_subscription_override": False}
# Reserved queue metadata (contract section 3), each with a valid value.
RESERVED = {"_max_messages_post_size": 262144, "_default_message_ttl": 3600,
            "_default_message_delay": 0, "_dead_letter_queue": "fz-dlq",
            "_dead_letter_queue_messages_ttl": 3600, "_max_claim_count": 100,
            "_enable_encrypt_messages": False, "_retry_policy": RETRY_POLICY}


def queue_metadata(fx: Fixture, rng: random.Random) -> Spec:
    doc: dict[str, Any] = {"description": "fz"}
    for key in rng.sample(sorted(RESERVED), k=rng.randint(0, 3)):
        doc[key] = RESERVED[key]
    if fx.flavor and rng.random() < 0.2:
        doc["_flavor"] = fx.flavor
    return Spec(doc=doc)


def _queue_patch(fx: Fixture, rng: random.Random) -> Spec:
    key = rng.choice(["fz", *sorted(RESERVED)])
    op = rng.choice(("add", "replace", "remove")) if key == "fz" else "add"
    change: dict[str, Any] = {"op": op, "path": f"/metadata/{key}"}
    if op != "remove":
        change["value"] = RESERVED.get(key, rng.randint(0, 9))
    return Spec(doc=[change], content_type=JSON_PATCH)


# Reserved metadata a topic takes (the other queue keys are refused with 400).
TOPIC_RESERVED = {key: RESERVED[key] for key in
                  ("_max_messages_post_size", "_default_message_ttl", "_retry_policy")}


def topic_metadata(fx: Fixture, rng: random.Random) -> Spec:
    doc: dict[str, Any] = {"description": "fz"}
    for key in rng.sample(sorted(TOPIC_RESERVED), k=rng.randint(0, 2)):
        doc[key] = TOPIC_RESERVED[key]
    return Spec(doc=doc)


def _topic_patch(fx: Fixture, rng: random.Random) -> Spec:
    key = rng.choice(["fz", *sorted(TOPIC_RESERVED)])
    op = rng.choice(("add", "replace", "remove")) if key == "fz" else "add"
    change: dict[str, Any] = {"op": op, "path": f"/metadata/{key}"}
    if op != "remove":
        change["value"] = TOPIC_RESERVED.get(key, rng.randint(0, 9))
    return Spec(doc=[change], content_type=JSON_PATCH)


def subscription(fx: Fixture, rng: random.Random) -> Spec:
    options: dict[str, Any] = {"fz": True}
    if rng.random() < 0.4:
        options["_retry_policy"] = dict(RETRY_POLICY)
    if rng.random() < 0.3:
        options["post_data"] = {"m": "$zaqar_message$"}
        options["post_headers"] = {"X-Fz": "1"}
    return Spec(doc={"subscriber": f"{fx.sink}/{fx.project}/{rng.randrange(4)}", "ttl": 3600,
                     "options": options})


def _share(fx: Fixture, rng: random.Random) -> Spec:
    doc: dict[str, Any] = {"paths": ["messages"], "methods": ["GET"]}
    if rng.random() < 0.6:
        doc["expires"] = "2099-01-01T00:00:00"
    return Spec(doc=doc)


VALID: dict[str, Builder] = {
    "GET /": lambda fx, rng: Spec(),
    "GET /v2/": lambda fx, rng: Spec(),
    "GET /healthz": lambda fx, rng: Spec(),
    "HEAD /healthz": lambda fx, rng: Spec(),
    "GET /readyz": lambda fx, rng: Spec(),
    "HEAD /readyz": lambda fx, rng: Spec(),
    "GET /metrics": lambda fx, rng: Spec(),
    "GET /v2/ping": lambda fx, rng: Spec(),
    "HEAD /v2/ping": lambda fx, rng: Spec(),
    "GET /v2/health": lambda fx, rng: Spec(),
    "GET /v2/pools": lambda fx, rng: Spec(_q(limit=5, detailed=True)),
    "GET /v2/pools/{pool_name}": lambda fx, rng: Spec(_q(detailed=True)),
    "PUT /v2/pools/{pool_name}": lambda fx, rng: Spec(
        doc={"uri": fx.pool_uri, "weight": 10, "options": {"fz": 1}}),
    "PATCH /v2/pools/{pool_name}": lambda fx, rng: Spec(doc={"weight": rng.randint(1, 99)}),
    "DELETE /v2/pools/{pool_name}": lambda fx, rng: Spec(),
    "GET /v2/flavors": lambda fx, rng: Spec(_q(limit=5, detailed=True)),
    "GET /v2/flavors/{flavor_name}": lambda fx, rng: Spec(),
    "PUT /v2/flavors/{flavor_name}": lambda fx, rng: Spec(doc={"pool_list": [fx.pool]}),
    "PATCH /v2/flavors/{flavor_name}": lambda fx, rng: Spec(doc={"pool_list": [fx.pool]}),
    "DELETE /v2/flavors/{flavor_name}": lambda fx, rng: Spec(),
    "GET /v2/queues": lambda fx, rng: Spec(
        _q(limit=5, detailed=True, with_count=True, name="fz")),
    f"PUT {Q}": queue_metadata,
    f"GET {Q}": lambda fx, rng: Spec(),
    f"PATCH {Q}": _queue_patch,
    f"DELETE {Q}": lambda fx, rng: Spec(),
    f"GET {Q}/stats": lambda fx, rng: Spec(),
    f"POST {Q}/purge": lambda fx, rng: Spec(doc={"resource_types": ["messages"]}),
    f"POST {Q}/share": _share,
    # The fixture's queue is nobody's dead-letter queue: refused (400) unless a mutation
    # finds a destination; either way the shape is the API's.
    f"POST {Q}/redrive": lambda fx, rng: Spec(doc={"max_per_second": rng.randint(1, 1000)}),
    f"GET {Q}/redrive": lambda fx, rng: Spec(),
    f"DELETE {Q}/redrive": lambda fx, rng: Spec(),
    f"POST {Q}/messages": _post_messages,
    f"GET {Q}/messages": _messages_get,
    f"DELETE {Q}/messages": _messages_delete,
    f"GET {Q}/messages/{{message_id}}": lambda fx, rng: Spec(),
    f"DELETE {Q}/messages/{{message_id}}": _message_delete,
    f"POST {Q}/claims": _claim,
    f"GET {Q}/claims/{{claim_id}}": lambda fx, rng: Spec(),
    f"PATCH {Q}/claims/{{claim_id}}": lambda fx, rng: Spec(doc={"ttl": 120, "grace": 60}),
    f"DELETE {Q}/claims/{{claim_id}}": lambda fx, rng: Spec(),
    f"POST {Q}/subscriptions": subscription,
    f"GET {Q}/subscriptions": lambda fx, rng: Spec(_q(limit=5)),
    f"GET {Q}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(),
    f"PATCH {Q}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(
        doc={"ttl": 7200, "options": subscription(fx, rng).doc["options"]}),
    f"DELETE {Q}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(),
    f"PUT {Q}/subscriptions/{{subscription_id}}/confirm": lambda fx, rng: Spec(
        doc={"confirmed": True}),
    "GET /v2/topics": lambda fx, rng: Spec(
        _q(limit=5, detailed=True, with_count=True, name="fz")),
    f"PUT {T}": topic_metadata,
    f"GET {T}": lambda fx, rng: Spec(),
    f"PATCH {T}": _topic_patch,
    f"DELETE {T}": lambda fx, rng: Spec(),
    f"GET {T}/stats": lambda fx, rng: Spec(),
    f"POST {T}/purge": lambda fx, rng: Spec(
        doc={"resource_types": rng.sample(["messages", "subscriptions"], k=rng.randint(1, 2))}),
    f"POST {T}/messages": _post_messages,
    f"POST {T}/subscriptions": subscription,
    f"GET {T}/subscriptions": lambda fx, rng: Spec(_q(limit=5)),
    f"GET {T}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(),
    f"PATCH {T}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(
        doc={"ttl": 7200, "options": subscription(fx, rng).doc["options"]}),
    f"DELETE {T}/subscriptions/{{subscription_id}}": lambda fx, rng: Spec(),
    f"PUT {T}/subscriptions/{{subscription_id}}/confirm": lambda fx, rng: Spec(
        doc={"confirmed": True}),
}


def valid_draft(route: Route, fx: Fixture, rng: random.Random) -> tuple[Draft, bool]:
    """A valid request for ``route`` from ``fx``; the flag says whether :data:`VALID` knew
    the route (False: a generic request)."""
    builder = VALID.get(route.key)
    spec = builder(fx, rng) if builder is not None else (
        Spec(doc={}) if route.method in ("POST", "PUT", "PATCH") else Spec())
    segments = route.template.split("/")[1:]
    fields: dict[str, int] = {}
    for i, segment in enumerate(segments):
        match = re.fullmatch(r"\{(\w+)\}", segment)
        if match:
            fields[match.group(1)] = i
            segments[i] = quote(fx.field(match.group(1), rng.randrange(8)), safe="")
    headers: list[tuple[str | bytes, str | bytes]] = []
    if route.template != "/":
        headers += list(fx.headers.items())
    if route.template in ADMIN_ROUTES:
        headers.append(("X-Roles", "admin"))
    doc = spec.doc
    draft = Draft(
        method=route.method,
        segments=segments,
        query=[(k, quote(v, safe=",")) for k, v in spec.query],
        headers=headers,
        doc=None if doc is ... else doc,
        has_doc=doc is not ...,
        content_type=spec.content_type,
        fields=fields,
    )
    return draft, builder is not None
