"""``trust+http(s)`` subscribers (contract §5) against a real Keystone and a real webhook
receiver: the trust made at subscribe time (``services/notifier_svc/trusts.py``) and delivery
with a trust-scoped token (``services/notifier_svc/delivery/trust.py``), which the test then
shows to Keystone.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from zaqar_grpc.v2 import messages_pb2, notifier_pb2

from services.api_gateway.app import create_app
from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.notifier_svc import trusts
from tests.gateway.conftest import CLIENT_ID, lifespan, new_queue, running_services
from tests.gateway.test_keystone import Gateway, ask, keystone_gateway
from tests.keystone import Keystone, admin_client
from tests.receivers import Hit, Receiver
from tests.services._grpc import Stubs, service, stubs, token

Code = grpc.StatusCode
JSON = {"Content-Type": "application/json"}


def fresh(keystone: Keystone, who: str) -> Callable[[], str]:
    """A new token of ``who`` at each call: the test Keystone's live only 20 s."""
    return lambda: keystone.token(who)


async def rpc_error(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


async def subscribe(
    s: Stubs, user_token: str, queue: str, subscriber: str, **options: Any
) -> str:
    reply = await s.subscriptions.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(
            queue=queue, subscriber=subscriber, options=orjson.dumps(options)
        ),
        metadata=token(user_token),
    )
    return str(reply.subscription_id)


async def options_of(s: Stubs, user_token: str, queue: str, subscription_id: str) -> Any:
    got = await s.subscriptions.GetSubscription(
        notifier_pb2.SubscriptionRef(queue=queue, subscription_id=subscription_id),
        metadata=token(user_token),
    )
    return orjson.loads(got.options)


async def post(s: Stubs, user_token: str, queue: str, body: Any) -> None:
    await s.messages.PostMessages(
        messages_pb2.PostMessagesRequest(
            queue=queue, client_id=str(uuid.uuid4()),
            messages=[messages_pb2.NewMessage(body=orjson.dumps(body), ttl=300)],
        ),
        metadata=token(user_token),
    )


def trust_scope(keystone: Keystone, hit: Hit) -> dict[str, Any]:
    """What Keystone says about the token a delivery carried (asserting it is valid)."""
    with admin_client(keystone) as admin:
        answer = admin.get("/auth/tokens", headers={"X-Subject-Token": hit.headers["X-Auth-Token"]})
    assert answer.status_code == 200, answer.text
    doc: dict[str, Any] = answer.json()["token"]
    return doc


def trust_exists(keystone: Keystone, trust_id: str) -> bool:
    with admin_client(keystone) as admin:
        answer = admin.get(f"/OS-TRUST/trusts/{trust_id}")
    assert answer.status_code in (200, 404), answer.text
    return answer.status_code == 200


def assert_trust_scoped(
    keystone: Keystone, hit: Hit, trust_id: str, who: str
) -> None:
    doc = trust_scope(keystone, hit)
    user = keystone.users[who]
    assert doc["OS-TRUST:trust"]["id"] == trust_id
    assert doc["OS-TRUST:trust"]["trustor_user"]["id"] == user.id
    assert doc["OS-TRUST:trust"]["trustee_user"]["id"] == keystone.users["zaqar"].id
    assert doc["OS-TRUST:trust"]["impersonation"] is True
    assert doc["project"]["id"] == user.project_id
    assert "member" in {role["name"] for role in doc["roles"]}


# Over gRPC, as an OpenStack service would call -----------------------------------------------


async def test_a_trust_subscriber_gets_posts_with_a_trust_scoped_token(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone, receiver: Receiver
) -> None:
    _, s = keystone_stack
    a = fresh(keystone, "user-a")
    queue = new_queue()
    # Given a trust+http subscriber made with A's token
    sid = await subscribe(s, a(), queue, "trust+" + receiver.url("/hook"))
    # Then the subscription holds the trust made for it, shown back as Zaqar does
    trust_id = (await options_of(s, a(), queue, sid))["trust_id"]
    assert trust_exists(keystone, trust_id)
    # When messages are posted
    await post(s, a(), queue, {"n": 1})
    await post(s, a(), queue, {"n": 2})
    # Then the URL without "trust+" gets them, each with a token Keystone validates as scoped
    # to the trust, on A's project, impersonating A; the token is reused while it lives
    hits = await receiver.wait_for(2, within=30)
    assert [hit.path for hit in hits] == ["/hook", "/hook"]
    assert sorted(hit.json()["body"]["n"] for hit in hits) == [1, 2]
    assert hits[0].headers["Content-Type"] == "application/json"
    assert_trust_scoped(keystone, hits[0], trust_id, "user-a")
    assert hits[0].headers["X-Auth-Token"] == hits[1].headers["X-Auth-Token"]


async def test_updates_keep_or_renew_the_trust(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone, receiver: Receiver
) -> None:
    _, s = keystone_stack
    a = fresh(keystone, "user-a")
    queue = new_queue()
    ref = {"queue": queue}
    sid = await subscribe(s, a(), queue, receiver.url("/plain"))
    assert "trust_id" not in await options_of(s, a(), queue, sid)

    async def update(**fields: Any) -> Any:
        await s.subscriptions.UpdateSubscription(
            notifier_pb2.UpdateSubscriptionRequest(**ref, subscription_id=sid, **fields),
            metadata=token(a()),
        )
        return await options_of(s, a(), queue, sid)

    # An http subscriber that becomes a trust+ one gets a trust
    first = (await update(subscriber="trust+" + receiver.url("/trusted")))["trust_id"]
    # New options without trust_id keep it
    options = await update(options=orjson.dumps({"post_headers": {"X-Extra": "1"}}))
    assert options == {"post_headers": {"X-Extra": "1"}, "trust_id": first}
    # A new ttl is a new life, so a new trust; the replaced one is deleted
    second = (await update(ttl=7200))["trust_id"]
    assert second != first
    assert not trust_exists(keystone, first)
    assert trust_exists(keystone, second)
    await post(s, a(), queue, "hello")
    hit = (await receiver.wait_for(1, within=30))[0]
    assert (hit.path, hit.headers["X-Extra"]) == ("/trusted", "1")
    assert_trust_scoped(keystone, hit, second, "user-a")


async def test_a_given_trust_id_must_be_the_callers_own(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone, receiver: Receiver
) -> None:
    _, s = keystone_stack
    a, b = fresh(keystone, "user-a"), fresh(keystone, "user-b")
    queue = new_queue()
    sid = await subscribe(s, a(), queue, "trust+" + receiver.url("/a"))
    trust_of_a = (await options_of(s, a(), queue, sid))["trust_id"]
    # B cannot make deliveries run on A's trust, nor on one that does not exist
    for given in (trust_of_a, "0" * 32, 42):
        info = await rpc_error(
            subscribe(s, b(), queue, "trust+" + receiver.url("/b"), trust_id=given)
        )
        assert (info.code, info.title) == (Code.INVALID_ARGUMENT, "Invalid API request")
        assert info.description.startswith("options.trust_id must be the id of a trust")
    # A may reuse its own
    other = await subscribe(s, a(), queue, "trust+" + receiver.url("/a2"), trust_id=trust_of_a)
    assert (await options_of(s, a(), queue, other))["trust_id"] == trust_of_a


async def test_a_trust_needs_the_callers_token(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone, receiver: Receiver
) -> None:
    _, s = keystone_stack
    # A service naming the project, but without the user's token (a pre-signed request
    # through the gateway is such a call): there is nobody to make the trust as
    info = await rpc_error(s.subscriptions.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(
            project=keystone.users["user-a"].project_id, queue=new_queue(),
            subscriber="trust+" + receiver.url(),
        ),
        metadata=service(await keystone.atoken("zaqar")),
    ))
    assert (info.code, info.description) == (Code.INVALID_ARGUMENT, trusts.NEEDS_TOKEN)


# Through the gateway --------------------------------------------------------------------------


@pytest.fixture
async def gateway(keystone_settings: Callable[..., Settings]) -> AsyncIterator[Gateway]:
    async with running_services(keystone_settings()) as settings:
        async with keystone_gateway(settings) as gw:
            yield gw


async def test_trust_subscriptions_over_http(
    gateway: Gateway, keystone: Keystone, receiver: Receiver
) -> None:
    def b() -> dict[str, str]:
        return {"X-Auth-Token": keystone.token("user-b"), **JSON}

    queue = new_queue()
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/subscriptions",
        json={"subscriber": "trust+" + receiver.url("/over-http"), "ttl": 600}, headers=b(),
    )
    assert resp.status_code == 201, resp.text
    sid = resp.json()["subscription_id"]
    got = await gateway.http.get(f"/v2/queues/{queue}/subscriptions/{sid}", headers=b())
    assert got.json()["subscriber"] == "trust+" + receiver.url("/over-http")
    trust_id = got.json()["options"]["trust_id"]
    resp = await gateway.http.post(
        f"/v2/queues/{queue}/messages", json={"messages": [{"body": "hi", "ttl": 300}]},
        headers=b(),
    )
    assert resp.status_code == 201, resp.text
    hit = (await receiver.wait_for(1, within=30))[0]
    assert hit.path == "/over-http"
    assert hit.json()["body"] == "hi"
    assert_trust_scoped(keystone, hit, trust_id, "user-b")


async def test_trust_subscriptions_over_websocket(
    gateway: Gateway, keystone: Keystone, receiver: Receiver
) -> None:
    queue = new_queue()
    async with connect(gateway.ws_url) as socket:
        member = await keystone.atoken("user-a")
        answer = await ask(socket, "authenticate", **{"X-Auth-Token": member})
        assert answer["headers"]["status"] == 200
        answer = await ask(socket, "subscription_create", {
            "queue_name": queue, "subscriber": "trust+" + receiver.url("/ws"), "ttl": 600,
        })
        assert answer["headers"]["status"] == 201, answer
        sid = answer["body"]["subscription_id"]
        answer = await ask(socket, "subscription_get",
                           {"queue_name": queue, "subscription_id": sid})
        trust_id = answer["body"]["options"]["trust_id"]
        answer = await ask(socket, "message_post",
                           {"queue_name": queue, "messages": [{"body": "by socket"}]})
        assert answer["headers"]["status"] == 201, answer
    hit = (await receiver.wait_for(1, within=30))[0]
    assert (hit.path, hit.json()["body"]) == ("/ws", "by socket")
    assert_trust_scoped(keystone, hit, trust_id, "user-a")


# No-auth mode ---------------------------------------------------------------------------------


async def test_noauth_refuses_trust_subscribers(
    make_settings: Callable[..., Settings], receiver: Receiver
) -> None:
    async with running_services(make_settings()) as settings:
        s = stubs(settings)
        try:
            info = await rpc_error(s.subscriptions.CreateSubscription(
                notifier_pb2.CreateSubscriptionRequest(
                    project="p", queue="q", subscriber="trust+" + receiver.url()
                )
            ))
            assert (info.code, info.description) == (
                Code.INVALID_ARGUMENT, trusts.NEEDS_KEYSTONE
            )
        finally:
            await s.close()
        app = create_app(settings)
        async with lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway",
            headers={"Client-ID": CLIENT_ID, "X-Project-ID": "p"},
        ) as http:
            resp = await http.post(
                "/v2/queues/q/subscriptions", json={"subscriber": "trust+https://example.com/x"}
            )
        assert resp.status_code == 400
        assert resp.json() == {"title": "Invalid API request",
                               "description": trusts.NEEDS_KEYSTONE}
