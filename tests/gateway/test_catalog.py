"""``/v2/pools`` and ``/v2/flavors``: the admin catalog, its status codes and Zaqar's bodies.

Pools are global, so every test names its pools with a prefix of its own and deletes them;
flavors belong to a project, so every test uses a project of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from services.common.config import Settings
from services.message_svc.storage.registry import open_store
from tests.gateway.conftest import GatewayFactory, error_body, new_queue
from tests.servers import free_port

ADMIN = {"X-Roles": "admin"}
NOT_AUTHORIZED = error_body("Not authorized", "You are not authorized to complete this action.")


@dataclass
class Catalog:
    """A test's view of the shared catalog: its own project, pool names and store files."""

    http: httpx.AsyncClient
    folder: Path
    prefix: str = field(default_factory=lambda: "t" + uuid.uuid4().hex[:10] + "-")
    project: str = field(default_factory=lambda: "p-" + uuid.uuid4().hex[:12])

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    def uri(self, suffix: str) -> str:
        return f"sqlite:///{self.folder / (self.prefix + suffix)}.db"

    def headers(self, admin: bool = True) -> dict[str, str]:
        return {"X-Project-ID": self.project, **(ADMIN if admin else {})}

    async def put_pool(self, suffix: str, weight: int = 100, **body: object) -> httpx.Response:
        doc = {"uri": self.uri(suffix), "weight": weight, **body}
        return await self.http.put(
            f"/v2/pools/{self.name(suffix)}", content=orjson.dumps(doc), headers=self.headers()
        )

    async def put_flavor(self, name: str, pools: list[str]) -> httpx.Response:
        doc = {"pool_list": [self.name(p) for p in pools]}
        return await self.http.put(
            f"/v2/flavors/{name}", content=orjson.dumps(doc), headers=self.headers()
        )


@pytest.fixture
async def catalog(
    client: httpx.AsyncClient, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Catalog]:
    view = Catalog(client, tmp_path_factory.mktemp("pools"))
    yield view
    flavors = await client.get("/v2/flavors?limit=20", headers=view.headers())
    for flavor in flavors.json().get("flavors", []):
        await client.delete(flavor["href"], headers=view.headers())
    pools = await client.get(
        f"/v2/pools?limit=20&marker={view.prefix}", headers=view.headers()
    )
    for pool in pools.json().get("pools", []):
        if pool["name"].startswith(view.prefix):
            await client.delete(pool["href"], headers=view.headers())


# Pools ----------------------------------------------------------------------------------------


async def test_pool_lifecycle(catalog: Catalog) -> None:
    http, name = catalog.http, catalog.name("a")
    # When a pool is registered on a store that answers
    resp = await catalog.put_pool("a", weight=7, options={"k": [1, 2]})
    # Then it is 201 with its location
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/v2/pools/{name}"
    # And reads back, with its options when detailed
    resp = await http.get(f"/v2/pools/{name}", headers=catalog.headers())
    assert resp.status_code == 200
    assert resp.json() == {
        "name": name, "uri": catalog.uri("a"), "weight": 7, "flavor": None,
        "href": f"/v2/pools/{name}",
    }
    resp = await http.get(f"/v2/pools/{name}?detailed=true", headers=catalog.headers())
    assert resp.json()["options"] == {"k": [1, 2]}
    # When it is patched, the answer is the pool
    resp = await http.patch(
        f"/v2/pools/{name}", content=b'{"weight": 9, "flavor": "gold"}', headers=catalog.headers()
    )
    assert resp.status_code == 200
    assert resp.json()["weight"] == 9 and resp.json()["flavor"] == "gold"
    # Replacing it is 201 too (Zaqar's answer)
    assert (await catalog.put_pool("a", weight=1)).status_code == 201
    # And deleting it is 204, then 404 to read, and 204 again to delete
    resp = await http.delete(f"/v2/pools/{name}", headers=catalog.headers())
    assert resp.status_code == 204 and resp.headers["content-length"] == "0"
    resp = await http.get(f"/v2/pools/{name}", headers=catalog.headers())
    assert resp.status_code == 404
    assert resp.json() == error_body("Not found", f"Pool {name} does not exist")
    assert (await http.delete(f"/v2/pools/{name}", headers=catalog.headers())).status_code == 204


async def test_pool_listing_pages(catalog: Catalog) -> None:
    for suffix in ("c", "a", "b"):
        assert (await catalog.put_pool(suffix)).status_code == 201
    # When listed two at a time from the test's prefix
    resp = await catalog.http.get(
        f"/v2/pools?limit=2&marker={catalog.prefix}", headers=catalog.headers()
    )
    doc = resp.json()
    assert [p["name"] for p in doc["pools"]] == [catalog.name("a"), catalog.name("b")]
    assert "options" not in doc["pools"][0]
    # Then the next link carries the listing's parameters and the last name
    (link,) = doc["links"]
    assert link["rel"] == "next"
    assert link["href"] == f"/v2/pools?limit=2&marker={catalog.name('b')}"
    resp = await catalog.http.get(link["href"] + "&detailed=true", headers=catalog.headers())
    doc = resp.json()
    assert doc["pools"][0]["name"] == catalog.name("c") and doc["pools"][0]["options"] == {}
    # An empty page has no next link
    resp = await catalog.http.get("/v2/pools?marker=~~~~", headers=catalog.headers())
    assert resp.json() == {"pools": [], "links": []}


@pytest.mark.parametrize(
    ("body", "description"),
    [
        ({"weight": 1}, "`uri` and `weight` are required."),
        ({"uri": "sqlite:////tmp/x.db"}, "`uri` and `weight` are required."),
        ({"uri": 5, "weight": 1}, 'The value of the "uri" field must be a str.'),
        ({"uri": "sqlite:////tmp/x.db", "weight": -1}, "weight must be an integer from 0 to "
         "4294967295."),
        ({"uri": "sqlite:////tmp/x.db", "weight": 2**32}, "weight must be an integer from 0 "
         "to 4294967295."),
        ({"uri": "sqlite:////tmp/x.db", "weight": True}, "weight must be an integer from 0 "
         "to 4294967295."),
        ({"uri": "sqlite:////tmp/x.db", "weight": 1, "options": []},
         'The value of the "options" field must be an object.'),
        ({"uri": "sqlite:////tmp/x.db", "weight": 1, "colour": "red"}, "Unknown fields: colour."),
        ([], "Request body must be a JSON object."),
    ],
)
async def test_pool_body_errors_are_400(
    catalog: Catalog, body: object, description: str
) -> None:
    resp = await catalog.http.put(
        f"/v2/pools/{catalog.name('x')}", content=orjson.dumps(body), headers=catalog.headers()
    )
    assert resp.status_code == 400
    assert resp.json() == error_body("Invalid request body", description)


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("http://127.0.0.1/x", "must start with one of sqlite://, redis://, redis+cluster://, "
                              "rediss://, rediss+cluster://, redis+sentinel://, "
                              "rediss+sentinel://, mongodb://"),
        ("sqlite:///relative.db", "expected an absolute path"),
        ("sqlite:///:memory:", "expected an absolute path"),
        ("redis://127.0.0.1:{port}/0", "cannot connect to redis://127.0.0.1:{port}/0: Redis "
         "cannot be reached"),
        ("redis://h:1/0?colour=red", "unknown option 'colour'"),
        ("sqlite:///{folder}/a-file/pool.db", "{folder}/a-file/pool.db cannot be created: "
         "{folder}/a-file is not a writable folder"),
        ("sqlite:///{folder}/a-file", "{folder}/a-file cannot be opened as a SQLite database"),
        ("sqlite:///{folder}/a\x00b.db", "control character '\\x00' at position"),
        ("sqlite:///{folder}/pool.db\n", "control character '\\n' at position"),
        ("redis://127.0.0.1\x00:{port}/0", "control character '\\x00' at position 17"),
        ("mongodb://127.0.0.1:{port}/d\x7fb", "control character '\\x7f' at position"),
    ],
)
async def test_pool_uri_must_be_ours_and_reachable(
    catalog: Catalog, uri: str, fragment: str
) -> None:
    await refused_pool_uri(catalog, uri, fragment)


# queue_svc's probe waits for a MongoDB server for half the call's deadline (5 s): on two
# stacks only, not on every store's (the probe is the same whatever the queues' store is).
@pytest.mark.parametrize("client", ["asgi", "up-sqlite"], indirect=True)
async def test_pool_uri_on_a_mongodb_that_does_not_answer(catalog: Catalog) -> None:
    await refused_pool_uri(catalog, "mongodb://127.0.0.1:{port}/db",
                           "cannot connect to mongodb://127.0.0.1:{port}/db")


async def refused_pool_uri(catalog: Catalog, uri: str, fragment: str) -> None:
    # Given a store URI that is not one of ours, or whose store does not answer
    port, folder = free_port(), catalog.folder
    (folder / "a-file").write_text("not a database, not a folder")
    doc = {"uri": uri.format(port=port, folder=folder), "weight": 1}
    # When a pool is registered on it, or moved to it
    for method, name in (("PUT", catalog.name("x")), ("PATCH", catalog.name("y"))):
        if method == "PATCH":
            assert (await catalog.put_pool("y")).status_code == 201
        resp = await catalog.http.request(
            method, f"/v2/pools/{name}", content=orjson.dumps(doc), headers=catalog.headers()
        )
        # Then it is refused with 400, saying why
        assert resp.status_code == 400, resp.text
        assert resp.json()["title"] == "Invalid request body"
        assert fragment.format(port=port, folder=folder) in resp.json()["description"]
    assert (await catalog.http.get(
        f"/v2/pools/{catalog.name('x')}", headers=catalog.headers()
    )).status_code == 404


async def test_pool_on_a_reachable_redis(
    catalog: Catalog, request: pytest.FixtureRequest
) -> None:
    redis = request.getfixturevalue("redis_server")
    uri = f"redis://127.0.0.1:{redis.port}/9?prefix={catalog.prefix}"
    resp = await catalog.http.put(
        f"/v2/pools/{catalog.name('r')}", content=orjson.dumps({"uri": uri, "weight": 1}),
        headers=catalog.headers(),
    )
    assert resp.status_code == 201, resp.text


async def test_two_pools_on_one_store_conflict(catalog: Catalog) -> None:
    assert (await catalog.put_pool("a")).status_code == 201
    resp = await catalog.http.put(
        f"/v2/pools/{catalog.name('b')}",
        content=orjson.dumps({"uri": catalog.uri("a"), "weight": 1}), headers=catalog.headers(),
    )
    assert resp.status_code == 409
    assert resp.json() == error_body(
        "Resource conflict", f"Pool {catalog.name('a')} already uses the store {catalog.uri('a')}."
    )


async def test_patch_pool_errors(catalog: Catalog) -> None:
    name = catalog.name("a")
    resp = await catalog.http.patch(
        f"/v2/pools/{name}", content=b'{"weight": 1}', headers=catalog.headers()
    )
    assert resp.status_code == 404
    assert resp.json() == error_body("Not found", f"Pool {name} does not exist")
    assert (await catalog.put_pool("a")).status_code == 201
    resp = await catalog.http.patch(
        f"/v2/pools/{name}", content=b'{"name": "b"}', headers=catalog.headers()
    )
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid request body",
        "One of `uri`, `weight`, `flavor`, or `options` needs to be specified",
    )


@pytest.mark.parametrize("name", ["bad%20name", "a" * 65, "storage_reachable"])
async def test_pool_name_is_checked(catalog: Catalog, name: str) -> None:
    resp = await catalog.http.put(
        f"/v2/pools/{name}", content=orjson.dumps({"uri": catalog.uri("a"), "weight": 1}),
        headers=catalog.headers(),
    )
    assert resp.status_code == 400
    assert "pool name is not valid" in resp.json()["description"]


# Flavors --------------------------------------------------------------------------------------


async def test_flavor_lifecycle(catalog: Catalog) -> None:
    http = catalog.http
    for suffix in ("a", "b"):
        assert (await catalog.put_pool(suffix)).status_code == 201
    # When an admin defines a flavor of one pool
    resp = await catalog.put_flavor("gold", ["a"])
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v2/flavors/gold"
    # Then any caller of the project reads it, with its pools and capabilities
    resp = await http.get("/v2/flavors/gold", headers=catalog.headers(admin=False))
    assert resp.status_code == 200
    assert resp.json() == {
        "name": "gold", "pool_list": [catalog.name("a")],
        "capabilities": ["FIFO", "CLAIMS", "DURABILITY", "AOD"], "href": "/v2/flavors/gold",
    }
    # And the pool says it belongs to it
    pool = await http.get(f"/v2/pools/{catalog.name('a')}", headers=catalog.headers())
    assert pool.json()["flavor"] == "gold"
    # When the flavor is patched to the other pool, the answer is the flavor
    resp = await http.patch(
        "/v2/flavors/gold", content=orjson.dumps({"pool_list": [catalog.name("b")]}),
        headers=catalog.headers(),
    )
    assert resp.status_code == 200
    assert resp.json()["pool_list"] == [catalog.name("b")]
    # Listing shows it (capabilities when detailed)
    resp = await http.get("/v2/flavors", headers=catalog.headers(admin=False))
    assert resp.json() == {
        "flavors": [{"name": "gold", "pool_list": [catalog.name("b")], "href": "/v2/flavors/gold"}],
        "links": [{"rel": "next", "href": "/v2/flavors?marker=gold"}],
    }
    resp = await http.get("/v2/flavors?detailed=true", headers=catalog.headers(admin=False))
    assert resp.json()["flavors"][0]["capabilities"] == ["FIFO", "CLAIMS", "DURABILITY", "AOD"]
    # Another project does not see it
    resp = await http.get("/v2/flavors/gold", headers={"X-Project-ID": "p-" + uuid.uuid4().hex})
    assert resp.status_code == 404
    # And deleting it is 204, then 404
    assert (await http.delete("/v2/flavors/gold", headers=catalog.headers())).status_code == 204
    resp = await http.get("/v2/flavors/gold", headers=catalog.headers())
    assert resp.status_code == 404
    assert resp.json() == error_body("Not found", "Flavor gold does not exist")
    assert (await http.delete("/v2/flavors/gold", headers=catalog.headers())).status_code == 204


async def test_last_pool_of_a_flavor_cannot_be_deleted(catalog: Catalog) -> None:
    assert (await catalog.put_pool("a")).status_code == 201
    assert (await catalog.put_flavor("gold", ["a"])).status_code == 201
    resp = await catalog.http.delete(f"/v2/pools/{catalog.name('a')}", headers=catalog.headers())
    assert resp.status_code == 403
    assert resp.json() == error_body(
        "Unable to delete", "This pool is used by flavors gold; It cannot be deleted."
    )


@pytest.mark.parametrize(
    ("method", "body", "title", "description"),
    [
        ("PUT", {"pool_list": []}, "Unable to create",
         "Flavor gold could not be created: pool_list names no pool."),
        ("PUT", {"pool_list": ["ghost"]}, "Unable to create",
         "Flavor gold could not be created, error:Pool ghost does not exist"),
        ("PUT", {"pool_group": "old"}, "Invalid request body",
         "`pool_list` needs to be specified: the names of the flavor's pools."),
        ("PUT", {"pool_list": "a"}, "Invalid request body",
         'The value of the "pool_list" field must be a list of pool names.'),
        ("PUT", {"pool_list": ["a"], "extra": 1}, "Invalid request body", "Unknown fields: extra."),
        ("PATCH", {"pool_list": []}, "Unable to create",
         "Flavor gold could not be updated: pool_list names no pool."),
    ],
)
async def test_flavor_body_errors_are_400(
    catalog: Catalog, method: str, body: object, title: str, description: str
) -> None:
    resp = await catalog.http.request(
        method, "/v2/flavors/gold", content=orjson.dumps(body), headers=catalog.headers()
    )
    assert resp.status_code == 400
    assert resp.json() == error_body(title, description)


async def test_patch_absent_flavor_is_404(catalog: Catalog) -> None:
    assert (await catalog.put_pool("a")).status_code == 201
    resp = await catalog.http.patch(
        "/v2/flavors/gold", content=orjson.dumps({"pool_list": [catalog.name("a")]}),
        headers=catalog.headers(),
    )
    assert resp.status_code == 404
    assert resp.json() == error_body("Not found", "Flavor gold does not exist")


async def test_queue_flavor_must_exist(catalog: Catalog) -> None:
    headers = catalog.headers(admin=False)
    # Given a project without flavors, a queue asking for one is refused
    resp = await catalog.http.put(
        f"/v2/queues/{new_queue()}", content=b'{"_flavor": "gold"}', headers=headers
    )
    assert resp.status_code == 400
    assert resp.json() == error_body(
        "Invalid API request",
        f"Flavor gold does not exist for project {catalog.project}: a queue's _flavor must "
        "name one of the project's flavors (GET /v2/flavors).",
    )
    # Once the flavor exists, the queue is created and shows it
    assert (await catalog.put_pool("a")).status_code == 201
    assert (await catalog.put_flavor("gold", ["a"])).status_code == 201
    queue = new_queue()
    resp = await catalog.http.put(f"/v2/queues/{queue}", content=b'{"_flavor": "gold"}',
                                  headers=headers)
    assert resp.status_code == 201
    resp = await catalog.http.get(f"/v2/queues/{queue}", headers=headers)
    assert resp.json()["_flavor"] == "gold"
    await catalog.http.delete(f"/v2/queues/{queue}", headers=headers)


async def test_a_queue_of_a_flavor_keeps_its_messages_in_its_pool(catalog: Catalog) -> None:
    # Given a pool carrying a flavor no other test uses (no other queue lands on it)
    flavor = catalog.name("gold")
    assert (await catalog.put_pool("a", flavor=flavor)).status_code == 201
    assert (await catalog.put_flavor(flavor, ["a"])).status_code == 201
    headers = {**catalog.headers(admin=False), "Client-ID": str(uuid.uuid4())}
    queue = new_queue()

    # When a queue of that flavor gets messages over HTTP
    body = orjson.dumps({"_flavor": flavor})
    resp = await catalog.http.put(f"/v2/queues/{queue}", content=body, headers=headers)
    assert resp.status_code == 201
    posted = await catalog.http.post(
        f"/v2/queues/{queue}/messages", headers=headers,
        content=orjson.dumps({"messages": [{"body": i, "ttl": 300} for i in range(3)]}),
    )
    assert posted.status_code == 201
    claimed = await catalog.http.post(
        f"/v2/queues/{queue}/claims?limit=2", content=b'{"ttl": 60, "grace": 60}',
        headers=headers,
    )
    assert claimed.status_code == 201 and len(claimed.json()["messages"]) == 2

    # Then they are in the pool's store, and the pool cannot go while the queue is there
    store = await open_store(catalog.uri("a"))
    try:
        assert (await store.stats(catalog.project, queue)).total == 3
    finally:
        await store.close()
    resp = await catalog.http.delete(f"/v2/pools/{catalog.name('a')}", headers=catalog.headers())
    assert resp.status_code == 409
    assert "holds 1 queue(s)" in resp.json()["description"]
    resp = await catalog.http.delete(f"/v2/queues/{queue}", headers=headers)
    assert resp.status_code == 204
    store = await open_store(catalog.uri("a"))
    try:
        assert (await store.stats(catalog.project, queue)).total == 0
    finally:
        await store.close()


# Admin policy and pooling ---------------------------------------------------------------------

ADMIN_ONLY = [
    ("GET", "/v2/pools", None),
    ("GET", "/v2/pools/p", None),
    ("PUT", "/v2/pools/p", {"uri": "sqlite:////tmp/p.db", "weight": 1}),
    ("PATCH", "/v2/pools/p", {"weight": 1}),
    ("DELETE", "/v2/pools/p", None),
    ("PUT", "/v2/flavors/f", {"pool_list": ["p"]}),
    ("PATCH", "/v2/flavors/f", {"pool_list": ["p"]}),
    ("DELETE", "/v2/flavors/f", None),
    ("GET", "/v2/health", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
@pytest.mark.parametrize("roles", [None, "member, reader", "administrator"])
async def test_admin_calls_need_the_admin_role(
    down_client: httpx.AsyncClient, method: str, path: str, body: object, roles: str | None
) -> None:
    headers = {} if roles is None else {"X-Roles": roles}
    content = None if body is None else orjson.dumps(body)
    resp = await down_client.request(method, path, content=content, headers=headers)
    assert resp.status_code == 403
    assert resp.json() == NOT_AUTHORIZED


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v2/pools"), ("GET", "/v2/pools/p"), ("PUT", "/v2/pools/p"),
     ("PATCH", "/v2/pools/p"), ("DELETE", "/v2/pools/p"), ("GET", "/v2/flavors"),
     ("GET", "/v2/flavors/f"), ("PUT", "/v2/flavors/f"), ("PATCH", "/v2/flavors/f"),
     ("DELETE", "/v2/flavors/f")],
)
async def test_catalog_is_not_found_without_pooling(
    make_settings: Callable[..., Settings], gateway_factory: GatewayFactory,
    method: str, path: str,
) -> None:
    http = await gateway_factory(make_settings(rpc_timeout=2.0))
    resp = await http.request(method, path, headers=ADMIN, content=b"{}")
    assert resp.status_code == 404
    assert resp.json() == {"title": "404 Not Found"}


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("POST", "/v2/pools", "GET"), ("POST", "/v2/pools/p", "DELETE, GET, PATCH, PUT"),
     ("DELETE", "/v2/flavors", "GET"), ("POST", "/v2/flavors/f", "DELETE, GET, PATCH, PUT")],
)
async def test_wrong_method_is_405(
    down_client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    resp = await down_client.request(method, path, headers=ADMIN)
    assert resp.status_code == 405
    assert {m.strip() for m in resp.headers["allow"].split(",")} - {"OPTIONS"} == set(
        allowed.split(", ")
    )
