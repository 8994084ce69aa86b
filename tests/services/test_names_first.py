"""A request that names a bad project, queue or topic is refused before anything else happens.

The cases are generated from the services' descriptors: every method of every service whose
request names a project, with each name it carries made bad in turn, and the rest of the
request as valid as it can be (a wait of one second where the method long-polls, a message
where it posts). Each service runs alone, with its store killed and the services it calls
not running: a method that looked anything up (its store, the queue's metadata or placement
in queue_svc, notifier_svc) before checking the names would answer UNAVAILABLE, or hang; a
method that checks first answers INVALID_ARGUMENT with the name's reason at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from zaqar_grpc.v2 import messages_pb2, notifier_pb2, queues_pb2, topics_pb2

from services.common.config import Settings
from services.common.errors import decode_rpc_error
from services.message_svc.server import start as start_message_svc
from services.notifier_svc.server import start as start_notifier_svc
from services.queue_svc.server import start as start_queue_svc
from tests.keystone import Keystone
from tests.servers import ServerProcess, redis_process, service_ports
from tests.services._grpc import Stubs, token

# service (the process) -> the descriptors of what it serves
SERVED = {
    "queue": [queues_pb2.DESCRIPTOR.services_by_name["Queues"],
              topics_pb2.DESCRIPTOR.services_by_name["Topics"]],
    "message": [messages_pb2.DESCRIPTOR.services_by_name["Messages"],
                messages_pb2.DESCRIPTOR.services_by_name["MessagesInternal"]],
    "notifier": [notifier_pb2.DESCRIPTOR.services_by_name["Subscriptions"],
                 notifier_pb2.DESCRIPTOR.services_by_name["NotifierInternal"]],
}
STARTS = {"queue": start_queue_svc, "message": start_message_svc,
          "notifier": start_notifier_svc}
BAD = {"project": ["", "p" * 257], "queue": ["bad name", "q" * 65, "é", "a/b", "a\n"],
       "topic": ["bad name", "t" * 65, "a/b"]}
PROJECT, QUEUE, TOPIC = "names-first", "q-1", "t-1"
# What a valid request carries besides its names (by field name).
VALID: dict[str, Any] = {
    "client_id": str(uuid.uuid4()), "limit": 1, "ttl": 60, "grace": 60, "wait_seconds": 1,
    "message_id": "5f1d0f3e6a2b4c7d8e9f0a1b", "message_ids": ["5f1d0f3e6a2b4c7d8e9f0a1b"],
    "claim_id": "5f1d0f3e6a2b4c7d8e9f0a1c", "subscription_id": "5f1d0f3e6a2b4c7d8e9f0a1d",
    "destination": "q-2", "max_per_second": 10, "max_outstanding": 1, "key": "k-1",
    "body": b'{"n": 1}', "bodies": [b'{"n": 1}'], "subscriber": "http://127.0.0.1:9/hook",
    "metadata": b"{}", "options": b"{}", "resource_types": ["messages"], "confirmed": True,
    "accepted_at": 1.0, "deliveries": True, "subscriptions": True,
}
# Repeated message fields given one item: the posts' messages.
ONE_ITEM: dict[str, dict[str, Any]] = {
    "NewMessage": {"body": b'{"n": 1}', "ttl": 60},
    "TopicMessage": {"body": b'{"n": 1}', "ttl": 60},
    "Message": {"id": "5f1d0f3e6a2b4c7d8e9f0a1b", "body": b'{"n": 1}', "ttl": 60},
}


@dataclass(frozen=True)
class Case:
    service: str
    method: MethodDescriptor
    field: str
    bad: str

    @property
    def id(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}-{self.field}={self.bad!r}"

    @property
    def reason(self) -> str:
        """A bad project is refused as the queue's or the topic's the request names (a
        listing's: as a queue's, a topic's in zaqar.v2.Topics)."""
        names = {"queue", "topic"} & set(self.method.input_type.fields_by_name)
        topical = self.field == "topic" or (self.field == "project" and (
            names == {"topic"} or (not names and self.method.containing_service.name == "Topics")))
        return "INVALID_TOPIC_NAME" if topical else "INVALID_QUEUE_NAME"

    def request(self) -> Message:
        kind = GetMessageClass(self.method.input_type)
        fields = self.method.input_type.fields_by_name
        values: dict[str, Any] = {"project": PROJECT}
        if "queue" in fields and ("topic" not in fields or self.field != "topic"):
            values["queue"] = QUEUE
        if "topic" in fields and "queue" not in values:
            values["topic"] = TOPIC
        values[self.field] = self.bad
        for name, field in fields.items():
            if name in values:
                continue
            if field.message_type is not None and field.message_type.name in ONE_ITEM:
                values[name] = [ONE_ITEM[field.message_type.name]]
            elif name in VALID and field.type != FieldDescriptor.TYPE_MESSAGE:
                values[name] = VALID[name]
        return kind(**values)


def cases() -> Iterator[Case]:
    for service, descriptors in SERVED.items():
        for descriptor in descriptors:
            for method in descriptor.methods:
                fields = method.input_type.fields_by_name
                if "project" not in fields or method.client_streaming:
                    continue  # a batch carries its items' names (checked item by item)
                for field in ("project", "queue", "topic"):
                    if field in fields:
                        for bad in BAD[field]:
                            yield Case(service, method, field, bad)


CASES = list(cases())


def test_every_public_method_is_among_the_cases() -> None:
    public = {(s.name, m.name) for descriptors in SERVED.values() for s in descriptors
              for m in s.methods if not s.name.endswith("Internal")}
    assert public <= {(c.method.containing_service.name, c.method.name) for c in CASES}


@pytest.fixture(scope="module")
def dead_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A redis-server the services open at start, then killed before any case runs."""
    with redis_process(tmp_path_factory.mktemp("names-first-redis")) as server:
        yield server


@pytest.fixture(scope="module")
async def alone(
    dead_store: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    """Each service started alone (pooling on, so that metadata and placement are asked of
    queue_svc), with ports of its own for the others, where nothing listens; then the store
    is killed. Channels to each, by service."""
    running: list[Any] = []
    channels: dict[str, grpc.aio.Channel] = {}
    uri = f"redis://127.0.0.1:{dead_store.port}"
    try:
        for index, (service, start) in enumerate(STARTS.items()):
            data = tmp_path_factory.mktemp(f"names-first-{service}")
            settings = Settings.load(environ={}, overrides={
                "data_dir": str(data), **service_ports(), "pooling": True,
                "queue_store": f"{uri}/1", "message_store": f"{uri}/2",
                "notifier_store": f"{uri}/3", "gc_interval": 3600.0 + index,
            })
            running.append(await start(settings))
            channels[service] = grpc.aio.insecure_channel(settings.target(service))
        dead_store.kill()
        yield channels
    finally:
        for channel in channels.values():
            await channel.close()
        for service in reversed(running):
            await service.stop()


async def _answer(
    channel: grpc.aio.Channel, case: Case, request: Message | None = None
) -> grpc.RpcError | None:
    method = case.method
    path = f"/{method.containing_service.full_name}/{method.name}"
    request = request or case.request()
    reply = GetMessageClass(method.output_type)
    if method.server_streaming:
        stream: Callable[..., Any] = channel.unary_stream(
            path, request_serializer=type(request).SerializeToString,
            response_deserializer=reply.FromString)
        call = stream(request, timeout=10)
        try:
            async for _ in call:
                break
        except grpc.aio.AioRpcError as exc:
            return exc
        finally:
            call.cancel()
        return None
    unary = channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                response_deserializer=reply.FromString)
    try:
        await unary(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc
    return None


async def test_a_bad_name_is_refused_before_any_look_up(
    alone: dict[str, grpc.aio.Channel],
) -> None:
    wrong: list[str] = []

    async def check(case: Case) -> None:
        error = await _answer(alone[case.service], case)
        if error is None:
            wrong.append(f"{case.id}: answered")
            return
        info = decode_rpc_error(error)
        if info.code != grpc.StatusCode.INVALID_ARGUMENT or info.reason != case.reason:
            wrong.append(f"{case.id}: {info.code.name} {info.reason}: {info.description}")

    for start in range(0, len(CASES), 16):
        await asyncio.gather(*(check(case) for case in CASES[start:start + 16]))
    assert not wrong, "\n".join(wrong)



# A long poll's other parameters are checked before its first look-up as well.
BAD_VALUES = {"limit": [0, 21], "ttl": [59, 43_201], "grace": [59, 43_201]}


def long_poll_cases() -> Iterator[tuple[MethodDescriptor, str, int]]:
    for descriptor in SERVED["message"]:
        for method in descriptor.methods:
            fields = method.input_type.fields_by_name
            if "wait_seconds" in fields:
                for field, values in BAD_VALUES.items():
                    if field in fields:
                        for value in values:
                            yield method, field, value


async def test_a_long_poll_with_a_bad_parameter_is_refused_before_any_look_up(
    alone: dict[str, grpc.aio.Channel],
) -> None:
    wrong: list[str] = []
    polls = list(long_poll_cases())
    assert {m.name for m, _, _ in polls} == {"ListMessages", "CreateClaim"}
    for method, field, value in polls:
        case = Case("message", method, "queue", QUEUE)  # a good name, then the bad value
        request = case.request()
        setattr(request, field, value)
        error = await _answer(alone["message"], case, request)
        code = decode_rpc_error(error).code if error is not None else None
        if code != grpc.StatusCode.INVALID_ARGUMENT:
            wrong.append(f"{method.name} {field}={value}: {code}")
    assert not wrong, "\n".join(wrong)


async def test_in_keystone_mode_the_token_is_checked_before_the_names(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    # A call without a token learns nothing of its names; one with a token has its project
    # taken from the token before the names are checked (it sends none of its own).
    _, s = keystone_stack
    bad = messages_pb2.ListMessagesRequest(queue="bad name", wait_seconds=1)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.messages.ListMessages(bad)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # With a token, the token's project stands in for the empty one, then the names are checked
    good = messages_pb2.ListMessagesRequest(queue="names-first-ks")
    listed = await s.messages.ListMessages(good, metadata=token(await keystone.atoken("user-a")))
    assert list(listed.messages) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.messages.ListMessages(bad, metadata=token(await keystone.atoken("user-a")))
    assert decode_rpc_error(caught.value).reason == "INVALID_QUEUE_NAME"
