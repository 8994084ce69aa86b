"""Keystone auth (contract §1, §6, §7) against a real Keystone (``tests/keystone.py``).

The gateway runs in-process in keystone mode in front of real in-process services; tokens are
real fernet tokens of users on projects ``a`` and ``b``. One test waits for a token to expire
(a short-lived one, from an application credential).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from zaqar_grpc.v2 import queues_pb2, queues_pb2_grpc

from services.api_gateway.app import create_app
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import server as ws_server
from services.api_gateway.websocket.actions import ACTIONS
from services.common import signing
from services.common.config import Settings
from services.common.keystone import KeystoneAuth
from tests.conftest import free_port
from tests.gateway.conftest import CLIENT_ID, lifespan, new_queue, running_services
from tests.keystone import SHORT_TOKEN_SECONDS, SIGNED_URL_SECRET, Keystone

SECRET = SIGNED_URL_SECRET
UNAUTHORIZED = {
    "error": {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
}


@dataclass
class Gateway:
    http: httpx.AsyncClient
    ws_url: str
    settings: Settings


@asynccontextmanager
async def keystone_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """HTTP (in-process ASGI) and WebSocket gateways in keystone mode over running services."""
    auth = KeystoneAuth(settings)
    up = Upstreams(settings, auth=auth)
    app = create_app(settings, up, auth)
    async with lifespan(app):
        sockets = await ws_server.start(settings, up, auth)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers={"Client-ID": CLIENT_ID, "Accept": "application/json"},
        )
        try:
            yield Gateway(http, f"ws://{settings.host}:{ws_server.bound_port(sockets)}", settings)
        finally:
            await http.aclose()
            sockets.close()
            await sockets.wait_closed()
            await up.close()
            await auth.aclose()


@pytest.fixture
async def gateway(keystone_settings: Callable[..., Settings]) -> AsyncIterator[Gateway]:
    async with running_services(keystone_settings(pooling=True)) as settings:
        async with keystone_gateway(settings) as gw:
            yield gw


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"X-Auth-Token": token, **extra}


def signed_for(project: str, path: str, methods: list[str]) -> dict[str, str]:
    """The headers of a pre-signed request to ``path`` (and below) with ``methods``, valid
    for five minutes."""
    url = signing.sign(SECRET, [path], methods, project, datetime.now(UTC) + timedelta(minutes=5))
    return {
        "X-Project-ID": project,
        "URL-Signature": url.signature,
        "URL-Methods": ",".join(url.methods),
        "URL-Paths": ",".join(url.paths),
        "URL-Expires": url.expires,
    }


def assert_unauthorized(resp: httpx.Response, keystone: Keystone) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.json() == UNAUTHORIZED
    assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{keystone.url}"'
    assert resp.headers["x-openstack-request-id"].startswith("req-")


# HTTP ---------------------------------------------------------------------------------------


async def test_tokens_scope_requests_to_their_project(
    gateway: Gateway, keystone: Keystone
) -> None:
    token_a, token_b = await keystone.atoken("user-a"), await keystone.atoken("user-b")
    queue = new_queue()
    # X-Project-ID is ignored: the project is the token's.
    resp = await gateway.http.put(
        f"/v2/queues/{queue}", json={}, headers=auth(token_a, **{"X-Project-ID": "other"})
    )
    assert resp.status_code == 201, resp.text
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": {"n": 1}, "ttl": 300}]},
        headers=auth(token_a),
    )
    assert resp.status_code == 201, resp.text

    listed = await gateway.http.get("/v2/queues", headers=auth(token_a))
    assert [q["name"] for q in listed.json()["queues"]] == [queue]
    # B sees neither the queue nor its messages, even naming A's project.
    spoof = {"X-Project-ID": keystone.users["user-a"].project_id}
    listed = await gateway.http.get("/v2/queues", headers=auth(token_b, **spoof))
    assert listed.status_code == 200
    assert queue not in [q["name"] for q in listed.json()["queues"]]
    stats = await gateway.http.get(f"/v2/queues/{queue}/stats", headers=auth(token_b, **spoof))
    assert stats.json()["messages"]["total"] == 0
    stats = await gateway.http.get(f"/v2/queues/{queue}/stats", headers=auth(token_a))
    assert stats.json()["messages"]["total"] == 1


async def test_the_project_is_the_token_project_id(gateway: Gateway, keystone: Keystone) -> None:
    queue = new_queue()
    member = await keystone.atoken("user-a")
    resp = await gateway.http.put(f"/v2/queues/{queue}", headers=auth(member))
    assert resp.status_code == 201
    # The same queue_svc asked directly, as a service naming A's project id.
    async with grpc.aio.insecure_channel(gateway.settings.target("queue")) as channel:
        listed = await queues_pb2_grpc.QueuesStub(channel).ListQueues(
            queues_pb2.ListQueuesRequest(project=keystone.users["user-a"].project_id),
            metadata=(("x-service-token", await keystone.atoken("zaqar")),),
        )
    assert [q.name for q in listed.queues] == [queue]


@pytest.mark.parametrize("token", [None, "", "garbage", "gAAAAABinvalid-fernet-token"])
async def test_missing_or_invalid_token_is_401(
    gateway: Gateway, keystone: Keystone, token: str | None
) -> None:
    headers = {"X-Project-ID": "p"} if token is None else auth(token, **{"X-Project-ID": "p"})
    for method, path in (("GET", "/v2/queues"), ("PUT", f"/v2/queues/{new_queue()}"),
                         ("GET", "/v2/"), ("GET", "/v2/health")):
        resp = await gateway.http.request(method, path, headers=headers)
        assert_unauthorized(resp, keystone)


async def test_versions_need_no_token(gateway: Gateway) -> None:
    resp = await gateway.http.get("/")
    assert resp.status_code == 300


async def test_revoked_token_is_401(
    keystone_settings: Callable[..., Settings], keystone: Keystone
) -> None:
    # No cache: every request asks Keystone, so a revocation takes effect at once.
    async with running_services(keystone_settings(token_cache_seconds=0)) as settings:
        async with keystone_gateway(settings) as gw:
            token = await keystone.atoken("user-a")
            assert (await gw.http.get("/v2/queues", headers=auth(token))).status_code == 200
            await keystone.arevoke(token)
            assert_unauthorized(await gw.http.get("/v2/queues", headers=auth(token)), keystone)


async def test_admin_role_gates_health(gateway: Gateway, keystone: Keystone) -> None:
    member = await keystone.atoken("user-a")
    resp = await gateway.http.get("/v2/health", headers=auth(member))
    assert resp.status_code == 403
    # A caller's own X-Roles counts for nothing.
    resp = await gateway.http.get("/v2/health", headers=auth(member, **{"X-Roles": "admin"}))
    assert resp.status_code == 403
    resp = await gateway.http.get("/v2/health", headers=auth(await keystone.atoken("admin-a")))
    assert resp.status_code == 200, resp.text
    assert resp.json()["storage_reachable"] is True


async def test_keystone_unreachable_is_503(
    keystone_settings: Callable[..., Settings]
) -> None:
    settings = keystone_settings(keystone_url=f"http://127.0.0.1:{free_port()}/v3")
    async with keystone_gateway(settings) as gw:
        resp = await gw.http.get("/v2/queues", headers=auth("some-token"))
    assert resp.status_code == 503
    assert resp.json() == {
        "title": "Service temporarily unavailable",
        "description": "The identity service cannot be reached. Please try again later.",
    }


async def test_signed_requests_skip_keystone(gateway: Gateway, keystone: Keystone) -> None:
    project = keystone.users["user-a"].project_id
    queue = new_queue()
    token = await keystone.atoken("user-a")
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": 1, "ttl": 300}]},
        headers=auth(token),
    )
    assert resp.status_code == 201
    signed = signed_for(project, f"/v2/queues/{queue}/messages", ["GET"])
    resp = await gateway.http.get(
        f"/v2/queues/{queue}/messages", params={"echo": "true"}, headers=signed
    )
    assert resp.status_code == 200, resp.text
    assert [m["body"] for m in resp.json()["messages"]] == [1]
    # A signature that does not verify is no way around Keystone, nor is a method not granted.
    forged = {**signed, "URL-Signature": "0" * 64}
    resp = await gateway.http.get(f"/v2/queues/{queue}/messages", headers=forged)
    assert_unauthorized(resp, keystone)
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": 2}]}, headers=signed
    )
    assert_unauthorized(resp, keystone)


# WebSocket ----------------------------------------------------------------------------------


async def ask(socket: Any, action: str, body: dict[str, Any] | None = None,
              **headers: str) -> dict[str, Any]:
    request = {"action": action, "headers": {"Client-ID": CLIENT_ID, **headers},
               "body": body or {}}
    await socket.send(orjson.dumps(request).decode())
    answer = orjson.loads(await socket.recv())
    assert isinstance(answer, dict)
    return answer


async def test_websocket_needs_authenticate_first(gateway: Gateway, keystone: Keystone) -> None:
    queue = new_queue()
    token_a = await keystone.atoken("user-a")
    async with connect(gateway.ws_url) as socket:
        answer = await ask(socket, "queue_list", **{"X-Project-ID": "p", "X-Auth-Token": token_a})
        assert answer["headers"]["status"] == 403
        assert answer["body"]["error"] == "Not authentified."
        for token in ("", "garbage"):
            answer = await ask(socket, "authenticate", **{"X-Auth-Token": token})
            assert answer["headers"]["status"] == 401
            answer = await ask(socket, "queue_list")
            assert answer["headers"]["status"] == 403
        answer = await ask(socket, "authenticate", **{"X-Auth-Token": token_a})
        assert answer["headers"]["status"] == 200
        assert answer["body"] == {"message": "Authentified."}
        answer = await ask(socket, "queue_create", {"queue_name": queue},
                           **{"X-Project-ID": "ignored"})
        assert answer["headers"]["status"] == 201, answer
        answer = await ask(socket, "check_node_health")
        assert answer["headers"]["status"] == 403
    # The queue is A's: listed over HTTP with A's token, not with B's.
    listed = await gateway.http.get("/v2/queues", headers=auth(token_a))
    assert queue in [q["name"] for q in listed.json()["queues"]]
    listed = await gateway.http.get("/v2/queues", headers=auth(await keystone.atoken("user-b")))
    assert queue not in [q["name"] for q in listed.json()["queues"]]
    async with connect(gateway.ws_url) as socket:
        other = await keystone.atoken("user-b")
        answer = await ask(socket, "authenticate", **{"X-Auth-Token": other})
        assert answer["headers"]["status"] == 200
        answer = await ask(socket, "queue_list")
        assert queue not in [q["name"] for q in answer["body"]["queues"]]
        admin = await keystone.atoken("admin-a")
        answer = await ask(socket, "authenticate", **{"X-Auth-Token": admin})
        answer = await ask(socket, "check_node_health")
        assert answer["headers"]["status"] == 200


async def test_websocket_signed_requests_before_authenticate(
    gateway: Gateway, keystone: Keystone
) -> None:
    """Before ``authenticate``, a pre-signed request goes ahead as its X-Project-ID with no
    roles, when the signature grants its action (as Zaqar's sockets do); anything else is
    ``Not authentified.``, and no signature is a way into another queue or action."""
    project = keystone.users["user-a"].project_id
    queue, other_queue = new_queue(), new_queue()
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": 1, "ttl": 300}]},
        headers=auth(await keystone.atoken("user-a")),
    )
    assert resp.status_code == 201, resp.text
    signed = signed_for(project, f"/v2/queues/{queue}/messages", ["GET", "POST"])
    q = {"queue_name": queue}
    async with connect(gateway.ws_url) as socket:
        answer = await ask(socket, "message_post", {**q, "messages": [{"body": 2}]}, **signed)
        assert answer["headers"]["status"] == 201, answer
        answer = await ask(socket, "message_list", {**q, "echo": True}, **signed)
        assert answer["headers"]["status"] == 200, answer
        assert [m["body"] for m in answer["body"]["messages"]] == [1, 2]
        refused: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
            ("forged", "message_list", q, {**signed, "URL-Signature": "0" * 64}),
            ("method not granted", "message_delete_many", {**q, "pop": 1}, signed),
            ("path not granted", "claim_create", q, signed),
            ("path not granted", "queue_list", {}, signed),
            ("other queue", "message_list", {"queue_name": other_queue}, signed),
            ("other project", "message_list", q, {**signed, "X-Project-ID": "b"}),
            # Roles in its own headers are not the signed request's.
            ("roles claimed", "check_node_health", {}, {**signed, "X-Roles": "admin"}),
            ("no signature", "message_list", q, {"X-Project-ID": project}),
        ]
        for why, action, body, headers in refused:
            answer = await ask(socket, action, body, **headers)
            assert (why, answer["headers"]["status"], answer["body"]["error"]) == (
                why, 403, "Not authentified."
            )
        # `authenticate` is not taken for a signed request, signature or not.
        answer = await ask(
            socket, "authenticate", **{**signed, "X-Auth-Token": await keystone.atoken("user-b")}
        )
        assert answer["headers"]["status"] == 200, answer
        # Authenticated, the token's project is the request's: A's grant is not B's (404).
        answer = await ask(socket, "message_list", q, **signed)
        assert answer["headers"]["status"] == 404, answer
    # Nothing was popped or claimed.
    resp = await gateway.http.get(
        f"/v2/queues/{queue}/messages", params={"echo": "true"},
        headers=auth(await keystone.atoken("user-a")),
    )
    assert [m["body"] for m in resp.json()["messages"]] == [1, 2]


async def test_websocket_before_authenticate_no_action_goes_ahead(
    gateway: Gateway, keystone: Keystone
) -> None:
    """Every action of the WebSocket API (its table, so a new action is covered unedited),
    before ``authenticate``: forged roles and project, a forged signature, or a true one for
    another queue, are all ``Not authentified.``; one for the action's own path carries no
    roles, so it is no way to an admin action."""
    project = keystone.users["user-a"].project_id
    queue = new_queue()
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]

    def grant(path: str) -> dict[str, str]:
        return signed_for(project, path, methods)

    samples: dict[str, Any] = {
        "queue_name": queue, "topic_name": f"t-{queue}", "message_id": "m", "claim_id": "c",
        "subscription_id": "s", "message_ids": ["m"], "messages": [{"body": 1}],
        "resource_types": ["messages"],
    }
    forged = {"X-Project-ID": project, "X-Roles": "admin"}
    another_queue = grant(f"/v2/queues/{new_queue()}/messages")
    names = [name for name in ACTIONS if name != "authenticate"]
    assert len(names) > 30
    async with connect(gateway.ws_url) as socket:
        for name in names:
            action = ACTIONS[name]
            body = {key: samples[key] for key in action.required}
            if name == "message_delete_many":
                body["pop"] = 1
            for why, headers in (
                ("forged roles", forged),
                ("forged signature", {**forged, "URL-Signature": "0" * 64}),
                ("another queue's signature", {**another_queue, "X-Roles": "admin"}),
            ):
                answer = await ask(socket, name, body, **headers)
                assert (name, why, answer["headers"]["status"], answer["body"]["error"]) == (
                    name, why, 403, "Not authentified."
                )
        # Signed for its own path, the admin action still sees no roles.
        answer = await ask(socket, "check_node_health", **{**grant("/v2/health"),
                                                            "X-Roles": "admin"})
        assert answer["headers"]["status"] == 403, answer
        assert answer["body"]["error"] != "Not authentified.", answer  # signed, not an admin
        # ... and its own queue's path is granted.
        answer = await ask(socket, "queue_get_stats", {"queue_name": queue},
                           **grant(f"/v2/queues/{queue}/stats"))
        assert answer["headers"]["status"] == 200, answer


async def test_admin_role_gates_the_catalog(
    gateway: Gateway, keystone: Keystone, tmp_path: Path
) -> None:
    member, admin = await keystone.atoken("user-a"), await keystone.atoken("admin-a")
    pool = orjson.dumps({"uri": f"sqlite:///{tmp_path / 'pool.db'}", "weight": 1})
    flavor = orjson.dumps({"pool_list": ["p1"]})
    # A member, even one claiming the role in X-Roles, may not touch pools or write flavors
    for headers in (auth(member), auth(member, **{"X-Roles": "admin"})):
        assert (await gateway.http.get("/v2/pools", headers=headers)).status_code == 403
        resp = await gateway.http.put("/v2/pools/p1", content=pool, headers=headers)
        assert resp.status_code == 403
        resp = await gateway.http.put("/v2/flavors/gold", content=flavor, headers=headers)
        assert resp.status_code == 403
    # The admin may, and defines the flavor in the project of its token
    resp = await gateway.http.put("/v2/pools/p1", content=pool, headers=auth(admin))
    assert resp.status_code == 201, resp.text
    resp = await gateway.http.put("/v2/flavors/gold", content=flavor, headers=auth(admin))
    assert resp.status_code == 201, resp.text
    # Which a member of that project reads, and a member of another does not see
    resp = await gateway.http.get("/v2/flavors/gold", headers=auth(member))
    assert resp.status_code == 200 and resp.json()["pool_list"] == ["p1"]
    other = await keystone.atoken("user-b")
    assert (await gateway.http.get("/v2/flavors/gold", headers=auth(other))).status_code == 404


async def test_token_expiry(gateway: Gateway, keystone: Keystone) -> None:
    """An expired token: the socket it authenticated is closed with 4003, and HTTP answers
    401 whether the token was cached or not."""
    async with contextlib.AsyncExitStack() as stack:
        # Given a token that worked over HTTP (and so sits in the gateway's cache) and
        # authenticated a socket: one of a few seconds or, should it have expired before
        # that on a loaded machine, a longer one
        for seconds in (5, 10, SHORT_TOKEN_SECONDS):
            # Issued first, so expired by the time the other one is.
            fresh = await keystone.ashort_token("user-b", seconds)
            cached, until = await keystone.ashort_token_until("user-a", seconds)
            socket = await stack.enter_async_context(connect(gateway.ws_url))
            listed = await gateway.http.get("/v2/queues", headers=auth(cached))
            try:
                answer = await ask(socket, "authenticate", **{"X-Auth-Token": cached})
            except ConnectionClosed as refused:
                answer = {"headers": {"status": None}, "closed": str(refused)}
            if (listed.status_code, answer["headers"]["status"]) == (200, 200):
                break
            # refused while it lived: a failure
            assert seconds != SHORT_TOKEN_SECONDS and time.monotonic() >= until, (
                listed.text, answer)
        # When it expires, the socket is closed
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(seconds + 30):
                while True:
                    await asyncio.sleep(0.5)
                    await ask(socket, "queue_list")
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4003
    assert_unauthorized(await gateway.http.get("/v2/queues", headers=auth(cached)), keystone)
    assert_unauthorized(await gateway.http.get("/v2/queues", headers=auth(fresh)), keystone)


def test_the_test_keystone_serves_while_a_client_has_connected_and_not_written(
    keystone: Keystone,
) -> None:
    """The run's one Keystone worker must not wait on one client: an async test that asks for a
    token synchronously blocks the event loop of its in-process services, which may have
    connected to Keystone and not yet written their request (tests/keystone.py)."""
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(keystone.url)
    assert address.hostname is not None and address.port is not None
    with socket.create_connection((address.hostname, address.port)):
        # A sync worker read the silent connection first: this timed out (httpx, 30 s).
        assert keystone.token("user-a")
