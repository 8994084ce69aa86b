"""Keystone tokens on the public gRPC API (``services/common/grpc_auth.py``) against a real
Keystone (``tests/keystone.py``): queue_svc, message_svc and notifier_svc in keystone mode,
called directly over gRPC as an OpenStack service would, and through the gateway.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from zaqar_grpc.v2 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    messages_pb2,
    notifier_pb2,
    notifier_pb2_grpc,
    queues_pb2,
    topics_pb2,
)

from services.api_gateway.app import create_app
from services.api_gateway.upstream import Upstreams
from services.common import grpc_auth
from services.common.config import Settings
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.common.grpc_server import Running, open_channel
from services.common.keystone import KeystoneAuth
from services.message_svc import server as message_server
from services.notifier_svc import server as notifier_server
from services.queue_svc import server as queue_server
from tests.gateway.conftest import CLIENT_ID, lifespan, new_queue, running_services
from tests.keystone import SHORT_TOKEN_SECONDS, Keystone
from tests.services._grpc import Metadata, Stubs, service, stubs, token
from tests.waiting import until

Code = grpc.StatusCode


async def rpc_error(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


def post(queue: str, *bodies: Any, project: str = "") -> messages_pb2.PostMessagesRequest:
    return messages_pb2.PostMessagesRequest(
        project=project, queue=queue, client_id=str(uuid.uuid4()),
        messages=[messages_pb2.NewMessage(body=orjson.dumps(b), ttl=300) for b in bodies],
    )


def listing(queue: str, project: str = "") -> messages_pb2.ListMessagesRequest:
    return messages_pb2.ListMessagesRequest(
        project=project, queue=queue, client_id=str(uuid.uuid4()), echo=True
    )


async def names(stubs: Stubs, metadata: Metadata, project: str = "") -> list[str]:
    listed = await stubs.queues.ListQueues(
        queues_pb2.ListQueuesRequest(project=project, limit=20), metadata=metadata
    )
    return [q.name for q in listed.queues]


# A project's caller ---------------------------------------------------------------------------


async def test_a_token_scopes_every_call_to_its_project(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    _, s = keystone_stack
    # (Tokens are issued where they are used: the test Keystone's live 20 s.)
    a = await keystone.atoken("user-a")
    project_a = keystone.users["user-a"].project_id
    queue = new_queue()
    # Given a queue with a message and a subscription made with A's token, whatever project
    # the requests name
    created = await s.queues.CreateQueue(
        queues_pb2.CreateQueueRequest(project="chosen-by-caller", queue=queue), metadata=token(a)
    )
    assert created.created
    await s.messages.PostMessages(post(queue, {"n": 1}, project="other"), metadata=token(a))
    await s.subscriptions.CreateSubscription(
        notifier_pb2.CreateSubscriptionRequest(
            project="other", queue=queue, subscriber="http://127.0.0.1:9/hook"
        ),
        metadata=token(a),
    )
    # Then it is A's: A sees it all
    assert queue in await names(s, token(a))
    listed = await s.messages.ListMessages(listing(queue), metadata=token(a))
    assert [orjson.loads(m.body) for m in listed.messages] == [{"n": 1}]
    subs = await s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(queue=queue), metadata=token(a)
    )
    assert len(subs.subscriptions) == 1
    # and is stored under A's project id (as a service naming that project sees it)
    assert queue in await names(s, service(await keystone.atoken("zaqar")), project=project_a)
    # When B asks, even naming A's project, B sees nothing of it
    b = await keystone.atoken("user-b")
    assert queue not in await names(s, token(b), project=project_a)
    listed = await s.messages.ListMessages(listing(queue, project_a), metadata=token(b))
    assert list(listed.messages) == []
    stats = await s.queues.GetQueueStats(
        queues_pb2.GetQueueStatsRequest(project=project_a, queue=queue), metadata=token(b)
    )
    assert stats.total == 0
    subs = await s.subscriptions.ListSubscriptions(
        notifier_pb2.ListSubscriptionsRequest(project=project_a, queue=queue), metadata=token(b)
    )
    assert list(subs.subscriptions) == []
    got = await s.queues.GetQueue(
        queues_pb2.GetQueueRequest(project=project_a, queue=queue), metadata=token(b)
    )
    assert not got.exists
    # and B's deletes and purges cannot touch A's queue
    await s.queues.DeleteQueue(
        queues_pb2.DeleteQueueRequest(project=project_a, queue=queue), metadata=token(b)
    )
    assert queue in await names(s, token(await keystone.atoken("user-a")))


@pytest.mark.parametrize(
    ("metadata", "reason", "description"),
    [
        ((), "UNAUTHENTICATED", grpc_auth.MISSING_TOKEN),
        (token(""), "UNAUTHENTICATED", grpc_auth.MISSING_TOKEN),
        (token("garbage"), "UNAUTHENTICATED", grpc_auth.REFUSED_TOKEN.format(key="x-auth-token")),
        (token("gAAAAABinvalid-fernet-token"), "UNAUTHENTICATED",
         grpc_auth.REFUSED_TOKEN.format(key="x-auth-token")),
        # a calling service's own token: a reason of its own (the gateway answers it 503)
        (service("garbage"), "SERVICE_TOKEN_REFUSED",
         grpc_auth.REFUSED_TOKEN.format(key="x-service-token")),
    ],
)
async def test_a_missing_or_refused_token_is_unauthenticated(
    keystone_stack: tuple[Settings, Stubs], metadata: Metadata, reason: str, description: str
) -> None:
    _, s = keystone_stack
    queue = new_queue()
    calls = [
        s.queues.ListQueues(queues_pb2.ListQueuesRequest(project="p"), metadata=metadata),
        s.queues.CreateQueue(
            queues_pb2.CreateQueueRequest(project="p", queue=queue), metadata=metadata
        ),
        s.messages.PostMessages(post(queue, 1, project="p"), metadata=metadata),
        s.messages.GetStats(common_pb2.QueueRef(project="p", queue=queue), metadata=metadata),
        s.subscriptions.ListSubscriptions(
            notifier_pb2.ListSubscriptionsRequest(project="p", queue=queue), metadata=metadata
        ),
    ]
    for call in calls:
        info = await rpc_error(call)
        assert (info.code, info.reason, info.title, info.description) == (
            Code.UNAUTHENTICATED, reason, "Unauthorized", description
        )


async def test_an_expired_token_is_unauthenticated(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    _, s = keystone_stack
    # Given a token that worked (and so sits in the services' caches): one of a few seconds,
    # or, should it have expired before its first call on a loaded machine, a longer one
    for seconds in (6, 12, SHORT_TOKEN_SECONDS):
        a, until = await keystone.ashort_token_until("user-a", seconds)
        try:
            assert isinstance(await names(s, token(a)), list)
            break
        except (grpc.aio.AioRpcError, AssertionError):
            if seconds == SHORT_TOKEN_SECONDS or time.monotonic() < until:
                raise  # refused while it lived
    # When it expires (Keystone's expiry is set after `until` was taken), it is refused from
    # the cache and by Keystone alike
    await asyncio.sleep(max(0.0, until + 1 - time.monotonic()))
    info = await rpc_error(s.queues.ListQueues(queues_pb2.ListQueuesRequest(), metadata=token(a)))
    assert info.code == Code.UNAUTHENTICATED
    info = await rpc_error(s.messages.ListMessages(listing(new_queue()), metadata=token(a)))
    assert info.code == Code.UNAUTHENTICATED


# Our own services ----------------------------------------------------------------------------


async def test_internal_services_take_only_service_tokens(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    _, s = keystone_stack
    ref = common_pb2.QueueRef(project="p", queue=new_queue())
    member = await keystone.atoken("user-a")
    for call in (s.messages_internal.InvalidateQueue, s.notifier_internal.DeleteQueueSubscriptions):
        for metadata in ((), token(member)):
            info = await rpc_error(call(ref, metadata=metadata))
            assert info.code == Code.UNAUTHENTICATED
            assert "is internal to zaqar-grpc" in info.description
        # A project's token presented as a service token is no way in either
        info = await rpc_error(call(ref, metadata=service(member)))
        assert (info.code, info.reason) == (Code.PERMISSION_DENIED, "NOT_A_SERVICE")
        assert info.description == grpc_auth.NOT_A_SERVICE.format(roles="service")
        await call(ref, metadata=service(await keystone.atoken("zaqar")))


async def test_streams_take_service_tokens_from_the_channel(
    keystone_stack: tuple[Settings, Stubs], keystone_settings: Callable[..., Settings],
    keystone: Keystone,
) -> None:
    settings, s = keystone_stack
    queue = new_queue()
    request = notifier_pb2.WatchRequest(project="p", queue=queue, ttl=1)
    # Without a token a watch is refused
    info = await rpc_error(s.notifier_internal.Watch(request).read())
    assert info.code == Code.UNAUTHENTICATED
    # A channel opened with a Keystone client sends the process's service token on streams
    # too: the watch is registered and gets a posted message
    auth = KeystoneAuth(settings)
    channel = open_channel(settings.target("notifier"), None, auth)
    try:
        stub = notifier_pb2_grpc.NotifierInternalStub(channel)  # type: ignore[no-untyped-call]
        watch = stub.Watch(notifier_pb2.WatchRequest(project="p", queue=queue, ttl=60))
        await watch.initial_metadata()
        await s.messages.PostMessages(post(queue, "pushed", project="p"),
                                      metadata=service(await keystone.atoken("zaqar")))
        async with asyncio.timeout(30):
            got = await watch.read()
        assert orjson.loads(got.message.body) == "pushed"
        watch.cancel()
    finally:
        await channel.close()
        await auth.aclose()


async def test_only_a_service_token_may_name_the_project(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    _, s = keystone_stack
    project_b = keystone.users["user-b"].project_id
    queue = new_queue()
    # A member's token as x-service-token cannot be used to pick B's project
    info = await rpc_error(s.queues.CreateQueue(
        queues_pb2.CreateQueueRequest(project=project_b, queue=queue),
        metadata=service(await keystone.atoken("user-a")),
    ))
    assert info.code == Code.PERMISSION_DENIED
    # The service user's token can (the gateway calls this way)
    await s.queues.CreateQueue(
        queues_pb2.CreateQueueRequest(project=project_b, queue=queue),
        metadata=service(await keystone.atoken("zaqar")),
    )
    assert queue in await names(s, token(await keystone.atoken("user-b")))


async def test_admin_calls_need_the_admin_role(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    settings, _ = keystone_stack
    member, admin = token(await keystone.atoken("user-a")), token(await keystone.atoken("admin-a"))
    for name in ("queue", "message", "notifier"):
        async with grpc.aio.insecure_channel(settings.target(name)) as channel:
            health = admin_pb2_grpc.StoreHealthStub(channel)  # type: ignore[no-untyped-call]
            info = await rpc_error(health.CheckStores(admin_pb2.CheckStoresRequest(),
                                                      metadata=member))
            assert (info.code, info.description) == (
                Code.PERMISSION_DENIED,
                grpc_auth.NOT_AN_ADMIN.format(method="zaqar.v2.StoreHealth/CheckStores"),
            )
            report = await health.CheckStores(admin_pb2.CheckStoresRequest(), metadata=admin)
            assert report.stores
    async with grpc.aio.insecure_channel(settings.target("queue")) as channel:
        pools = admin_pb2_grpc.PoolsStub(channel)  # type: ignore[no-untyped-call]
        info = await rpc_error(pools.ListPools(admin_pb2.ListPoolsRequest(), metadata=member))
        assert info.code == Code.PERMISSION_DENIED
        # Flavors: any project reads its own, only an admin writes
        flavors = admin_pb2_grpc.FlavorsStub(channel)  # type: ignore[no-untyped-call]
        info = await rpc_error(flavors.PutFlavor(
            admin_pb2.PutFlavorRequest(project="p", name="f", pool_list=["x"]), metadata=member
        ))
        assert info.code == Code.PERMISSION_DENIED
        listed = await flavors.ListFlavors(admin_pb2.ListFlavorsRequest(project="p"),
                                           metadata=member)
        assert list(listed.flavors) == []


async def test_health_and_reflection_need_no_token(
    keystone_stack: tuple[Settings, Stubs],
) -> None:
    settings, _ = keystone_stack
    for name in ("queue", "message", "notifier"):
        async with grpc.aio.insecure_channel(settings.target(name)) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            answers = reflection.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")])
            )
            async for answer in answers:
                listed = [svc.name for svc in answer.list_services_response.service]
                assert any(n.startswith("zaqar.v2.") for n in listed)
                break


def test_every_public_request_has_a_project_the_token_decides() -> None:
    public = ((queues_pb2, "Queues"), (topics_pb2, "Topics"), (messages_pb2, "Messages"),
              (notifier_pb2, "Subscriptions"))
    for module, service_name in public:
        for method in module.DESCRIPTOR.services_by_name[service_name].methods:
            assert "project" in method.input_type.fields_by_name, method.full_name


# Through the gateway -------------------------------------------------------------------------


@pytest.fixture
async def separate_clients(
    keystone_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[Settings, dict[str, KeystoneAuth]]]:
    """The three services and the gateway in keystone mode, each with its own Keystone
    client (as separate processes have)."""
    settings = keystone_settings()
    clients = {name: KeystoneAuth(settings) for name in ("queue", "message", "notifier", "gw")}
    running: list[Running] = []
    try:
        running.append(await notifier_server.start(settings, clients["notifier"]))
        running.append(await message_server.start(settings, clients["message"]))
        running.append(await queue_server.start(settings, clients["queue"]))
        yield settings, clients
    finally:
        for service_running in reversed(running):
            await service_running.stop()
        for client in clients.values():
            await client.aclose()


async def test_gateway_calls_cost_the_services_no_keystone_round_trip(
    separate_clients: tuple[Settings, dict[str, KeystoneAuth]], keystone: Keystone
) -> None:
    settings, clients = separate_clients
    up = Upstreams(settings, auth=clients["gw"])
    app = create_app(settings, up, clients["gw"])
    headers = {"Client-ID": CLIENT_ID, "Accept": "application/json"}
    queue = new_queue()
    async with lifespan(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=headers
    ) as http:
        # (Each user token is issued just before its request: a token made long before could
        # expire on a loaded machine, the test Keystone's tokens living 20 s.)
        def fresh_token() -> Awaitable[str]:
            return asyncio.to_thread(keystone.token, "user-a")

        # (Fresh service tokens: none is renewed during the test, which a short token life
        # would otherwise allow.)
        for client in clients.values():
            await client.service_token(renew=True)
        # Given services that have seen each other's and the gateway's tokens once
        notifier_seen = clients["notifier"].validations
        warm = await http.post(
            f"/v2/queues/{queue}/messages", json={"messages": [{"body": "warm"}]},
            headers={"X-Auth-Token": await fresh_token()},
        )
        assert warm.status_code == 201, warm.text
        # (message_svc hands the post to notifier_svc in the background, with its new token)
        await until(lambda: clients["notifier"].validations > notifier_seen,
                    what="notifier_svc validating message_svc's token")
        before = {name: c.validations for name, c in clients.items()}
        tokens_before = {name: c._service_token for name, c in clients.items()}
        # When five requests come with five tokens the gateway has never seen
        for n in range(5):
            user_token = await fresh_token()
            resp = await http.post(
                f"/v2/queues/{queue}/messages", json={"messages": [{"body": n}]},
                headers={"X-Auth-Token": user_token},
            )
            assert resp.status_code == 201, resp.text
        await asyncio.sleep(0.5)  # a window for any validation the posts cause to show
        # Then the gateway asked Keystone about each, the services about none
        after = {name: c.validations for name, c in clients.items()}
        renewed = {name for name, c in clients.items() if c._service_token != tokens_before[name]}
    await up.close()
    assert after["gw"] - before["gw"] == 5
    # (Except that a process whose own token was renewed meanwhile, which a loaded machine
    # can make happen by stretching the test past three quarters of a token's 20 s, shows
    # its callees a new token, which each may validate once: never five times.)
    extra = {name: after[name] - before[name] for name in ("queue", "message", "notifier")}
    assert all(extra[name] <= len(renewed - {name}) for name in extra), (extra, renewed)


# No-auth mode --------------------------------------------------------------------------------


async def test_noauth_services_take_the_project_of_the_request(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_services(make_settings()) as settings:
        s = stubs(settings)
        try:
            queue = new_queue()
            # Tokens mean nothing here: the request's project stands
            await s.queues.CreateQueue(
                queues_pb2.CreateQueueRequest(project="p1", queue=queue),
                metadata=token("garbage"),
            )
            assert queue in await names(s, (), project="p1")
            assert queue not in await names(s, (), project="p2")
            await s.messages_internal.InvalidateQueue(common_pb2.QueueRef(project="p1",
                                                                          queue=queue))
        finally:
            await s.close()


async def test_a_projects_caller_neither_sees_nor_chooses_pools(
    keystone_settings: Callable[..., Settings], keystone: Keystone, tmp_path: Any
) -> None:
    # Given pooling, and a pool that takes no new queues by itself (weight 0)
    async with running_services(keystone_settings(pooling=True)) as settings:
        s = stubs(settings)
        as_service = service(await keystone.atoken("zaqar"))
        as_user = token(await keystone.atoken("user-a"))
        try:
            pools = admin_pb2_grpc.PoolsStub(s.channels[0])  # type: ignore[no-untyped-call]
            await pools.PutPool(admin_pb2.PutPoolRequest(
                name="a", uri=f"sqlite:///{tmp_path / 'a.db'}", weight=0
            ), metadata=as_service)

            # A project's caller asking for a pool and for placement gets neither
            mine = new_queue()
            answer = await s.queues.EnsureQueue(queues_pb2.GetQueueRequest(
                queue=mine, place_on="a", with_placement=True
            ), metadata=as_user)
            assert (answer.pool, answer.pool_uri) == ("", "")

            # Our services get both
            project = keystone.users["user-a"].project_id
            placed = await s.queues.EnsureQueue(queues_pb2.GetQueueRequest(
                project=project, queue=new_queue(), place_on="a", with_placement=True
            ), metadata=as_service)
            assert (placed.pool, placed.pool_uri) == ("a", f"sqlite:///{tmp_path / 'a.db'}")
            seen = await s.queues.GetQueue(queues_pb2.GetQueueRequest(
                project=project, queue=mine, with_placement=True
            ), metadata=as_service)
            assert (seen.exists, seen.pool) == (True, "")
        finally:
            await s.close()
