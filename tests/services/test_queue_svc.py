"""queue_svc over real gRPC: started in-process on free ports, called through the generated stub.

Tests marked ``alone`` run queue_svc without any message_svc listening (nothing answers on its
target): they cover validation, reads, and what happens when message_svc is unreachable. The
others start the real message_svc too, with the same settings, so the two find each other.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from zaqar_grpc.v2 import (
    admin_pb2,
    admin_pb2_grpc,
    messages_pb2,
    messages_pb2_grpc,
    notifier_pb2,
    queues_pb2,
    queues_pb2_grpc,
)

from services.cli import settings_environment
from services.common.config import ConfigurationError, Settings
from services.common.errors import NOT_ANSWERED, RpcErrorInfo, decode_rpc_error
from services.common.startup import CannotListen
from services.message_svc.server import start as start_message_svc
from services.notifier_svc.server import start as start_notifier_svc
from services.queue_svc.server import start
from tests.conftest import free_port
from tests.gateway.conftest import running_services
from tests.services._grpc import stubs

DEFAULTS = {
    "_max_messages_post_size": 262144,
    "_default_message_ttl": 3600,
    "_default_message_delay": 0,
    "_dead_letter_queue": None,
    "_dead_letter_queue_messages_ttl": None,
    "_max_claim_count": None,
    "_enable_encrypt_messages": False,
}
BAD_NAME = "The format of the submitted queue name or project id is not valid."
RETRY = "Please try again in a few seconds."


@dataclass
class QueueSvc:
    stub: queues_pb2_grpc.QueuesStub
    channel: grpc.aio.Channel
    settings: Settings


@pytest.fixture
async def alone(make_settings: Callable[..., Settings]) -> AsyncIterator[QueueSvc]:
    """queue_svc with no message_svc behind it."""
    async with queue_service(make_settings(rpc_timeout=2.0)) as svc:
        yield svc


@asynccontextmanager
async def queue_service(settings: Settings) -> AsyncIterator[QueueSvc]:
    running = await start(settings)
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{running.port}") as channel:
            yield QueueSvc(queues_stub(channel), channel, settings)
    finally:
        await running.stop()


def queues_stub(channel: grpc.aio.Channel) -> queues_pb2_grpc.QueuesStub:
    return queues_pb2_grpc.QueuesStub(channel)  # type: ignore[no-untyped-call]


async def rpc_error(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return decode_rpc_error(caught.value)


def assert_error(
    info: RpcErrorInfo, code: grpc.StatusCode, reason: str, title: str, description: str
) -> None:
    assert (info.code, info.reason, info.title, info.description) == (
        code, reason, title, description
    )


def get(project: str, queue: str) -> queues_pb2.GetQueueRequest:
    return queues_pb2.GetQueueRequest(project=project, queue=queue)


def patch(op: str, path: str, value: Any = None) -> queues_pb2.PatchOperation:
    raw = b"" if value is None else orjson.dumps(value)
    return queues_pb2.PatchOperation(op=op, path=path, value=raw)


async def names(stub: queues_pb2_grpc.QueuesStub, **kwargs: Any) -> list[str]:
    reply = await stub.ListQueues(queues_pb2.ListQueuesRequest(**kwargs))
    return [q.name for q in reply.queues]


# reads and lazy queues -----------------------------------------------------------------------


async def test_absent_queue_answers_defaults_in_order(alone: QueueSvc) -> None:
    # When a queue that was never created is read
    queue = await alone.stub.GetQueue(get("p", "nope"))
    # Then it answers the reserved defaults, in Zaqar's order, and says it does not exist
    assert queue.name == "nope"
    assert queue.exists is False
    assert list(orjson.loads(queue.metadata).items()) == list(DEFAULTS.items())


async def test_ensure_creates_queue_once_without_message_svc(alone: QueueSvc) -> None:
    # When a queue is ensured twice (a post to a new queue does this)
    first = await alone.stub.EnsureQueue(get("p", "auto"))
    second = await alone.stub.EnsureQueue(get("p", "auto"))
    # Then it exists with default metadata, and nothing needed message_svc
    for queue in (first, second):
        assert (queue.name, queue.exists) == ("auto", True)
        assert orjson.loads(queue.metadata) == DEFAULTS
    assert (await alone.stub.GetQueue(get("p", "auto"))).exists is True


async def test_longest_valid_name_is_accepted(alone: QueueSvc) -> None:
    name = "a-Z_0." + "x" * 58
    assert len(name) == 64
    assert (await alone.stub.EnsureQueue(get("p" * 256, name))).exists


# identification ------------------------------------------------------------------------------

QUEUE_CALLS: dict[str, Callable[[queues_pb2_grpc.QueuesStub, str, str], Awaitable[Any]]] = {
    "CreateQueue": lambda s, p, q: s.CreateQueue(
        queues_pb2.CreateQueueRequest(project=p, queue=q)),
    "GetQueue": lambda s, p, q: s.GetQueue(get(p, q)),
    "EnsureQueue": lambda s, p, q: s.EnsureQueue(get(p, q)),
    "UpdateQueue": lambda s, p, q: s.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=p, queue=q, operations=[patch("add", "/metadata/a", 1)])),
    "DeleteQueue": lambda s, p, q: s.DeleteQueue(queues_pb2.DeleteQueueRequest(
        project=p, queue=q)),
    "GetQueueStats": lambda s, p, q: s.GetQueueStats(queues_pb2.GetQueueStatsRequest(
        project=p, queue=q)),
    "PurgeQueue": lambda s, p, q: s.PurgeQueue(queues_pb2.PurgeQueueRequest(
        project=p, queue=q)),
}


@pytest.mark.parametrize("method", sorted(QUEUE_CALLS))
@pytest.mark.parametrize(
    ("project", "queue"),
    [
        ("p", "bad name"),
        ("p", ""),
        ("p", "x" * 65),
        ("p", "caf\u00e9"),
        ("p", "a/b"),
        ("p", "abc\n"),
        ("", "fine"),
        ("p" * 257, "fine"),
    ],
    ids=["space", "empty", "65-chars", "non-ascii", "slash", "trailing-newline", "no-project",
         "long-project"],
)
async def test_bad_identification_is_rejected_by_every_call(
    alone: QueueSvc, method: str, project: str, queue: str
) -> None:
    info = await rpc_error(QUEUE_CALLS[method](alone.stub, project, queue))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUEUE_NAME",
                 "Invalid queue identification", BAD_NAME)
    # And nothing was created
    assert not (await alone.stub.GetQueue(get("p", "fine"))).exists


async def test_names_ending_in_a_newline_are_refused_by_every_service(
    make_settings: Callable[..., Settings],
) -> None:
    # Given the three services, with pooling
    async with running_services(make_settings(pooling=True)) as settings:
        s = stubs(settings)
        pools = admin_pb2_grpc.PoolsStub(s.channels[0])  # type: ignore[no-untyped-call]
        flavors = admin_pb2_grpc.FlavorsStub(s.channels[0])  # type: ignore[no-untyped-call]
        try:
            # When each is given a queue, pool or flavor name with a trailing newline
            calls = [
                s.queues.CreateQueue(queues_pb2.CreateQueueRequest(project="p", queue="abc\n")),
                s.queues.CreateQueue(queues_pb2.CreateQueueRequest(
                    project="p", queue="abc", metadata=b'{"_dead_letter_queue": "dlq\\n"}')),
                s.messages.PostMessages(messages_pb2.PostMessagesRequest(
                    project="p", queue="abc\n", client_id="c",
                    messages=[messages_pb2.NewMessage(body=b"1")])),
                s.subscriptions.CreateSubscription(notifier_pb2.CreateSubscriptionRequest(
                    project="p", queue="abc\n", subscriber="http://example.com")),
                pools.PutPool(admin_pb2.PutPoolRequest(
                    name="pool\n", uri=f"sqlite:///{settings.data_dir}/pool.db", weight=1)),
                flavors.PutFlavor(admin_pb2.PutFlavorRequest(
                    project="p", name="flavor\n", pool_list=["pool"])),
            ]
            # Then every call is refused, and nothing was made
            for call in calls:
                assert (await rpc_error(call)).code == grpc.StatusCode.INVALID_ARGUMENT
            assert await names(s.queues, project="p") == []
            assert list((await pools.ListPools(admin_pb2.ListPoolsRequest())).pools) == []
        finally:
            await s.close()


@pytest.mark.parametrize("project", ["", "p" * 257])
async def test_list_needs_a_valid_project(alone: QueueSvc, project: str) -> None:
    info = await rpc_error(alone.stub.ListQueues(queues_pb2.ListQueuesRequest(project=project)))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_QUEUE_NAME",
                 "Invalid queue identification", BAD_NAME)


# create: metadata validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "reason", "title", "description"),
    [
        (b"not json", "INVALID_BODY", "Invalid request body", "Request body could not be parsed."),
        (b"[1, 2]", "INVALID_BODY", "Invalid request body", "Document type not supported."),
        (b'"text"', "INVALID_BODY", "Invalid request body", "Document type not supported."),
        (b'{"a": ' + b'"' + b"x" * 65530 + b'"}', "INVALID_ARGUMENT", "Invalid API request",
         "Queue metadata is too large. Max size: 65536"),
    ],
    ids=["not-json", "array", "string", "65537-bytes"],
)
async def test_create_rejects_bad_metadata_documents(
    alone: QueueSvc, metadata: bytes, reason: str, title: str, description: str
) -> None:
    info = await rpc_error(alone.stub.CreateQueue(
        queues_pb2.CreateQueueRequest(project="p", queue="q", metadata=metadata)))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, reason, title, description)
    assert not (await alone.stub.GetQueue(get("p", "q"))).exists


RESERVED_ERRORS = [
    ({"_max_messages_post_size": 0},
     "_max_messages_post_size can not exceed 262144, and must be at least greater than 0."),
    ({"_max_messages_post_size": 262145},
     "_max_messages_post_size can not exceed 262144, and must be at least greater than 0."),
    ({"_max_messages_post_size": "1024"}, "_max_messages_post_size must be integer."),
    ({"_default_message_ttl": 59},
     "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long."),
    ({"_default_message_ttl": 1209601},
     "_default_message_ttl can not exceed 1209600 seconds, and must be at least 60 seconds long."),
    ({"_default_message_ttl": 120.0}, "_default_message_ttl must be integer."),
    ({"_default_message_ttl": True}, "_default_message_ttl must be integer."),
    ({"_default_message_delay": -1},
     "_default_message_delay can not exceed 900 seconds, and must be at least 0 seconds long."),
    ({"_default_message_delay": 901},
     "_default_message_delay can not exceed 900 seconds, and must be at least 0 seconds long."),
    ({"_dead_letter_queue": "bad name"},
     "_dead_letter_queue must be a queue name: at most 64 ASCII letters, digits, underscores, "
     "dashes or dots."),
    ({"_dead_letter_queue": 5},
     "_dead_letter_queue must be a queue name: at most 64 ASCII letters, digits, underscores, "
     "dashes or dots."),
    ({"_dead_letter_queue_messages_ttl": 30},
     "_dead_letter_queue_messages_ttl can not exceed 1209600 seconds, and must be at least 60 "
     "seconds long."),
    ({"_dead_letter_queue_messages_ttl": "60"},
     "_dead_letter_queue_messages_ttl must be integer."),
    ({"_max_claim_count": 0}, "_max_claim_count must be at least 1."),
    ({"_max_claim_count": 1.5}, "_max_claim_count must be integer."),
    ({"_enable_encrypt_messages": "yes"}, "_enable_encrypt_messages must be boolean."),
    ({"_enable_encrypt_messages": 1}, "_enable_encrypt_messages must be boolean."),
    ({"_retry_policy": [1]}, "retry_policy must be a dict."),
    ({"_retry_policy": {"retry_backoff_function": "cubic"}},
     "retry_backoff_function must be one of: linear, arithmetic, geometric, exponential."),
    ({"_retry_policy": {"minimum_delay": "5"}}, "Retry policy: minimum_delay must be an integer."),
    ({"_retry_policy": {"ignore_subscription_override": "yes"}},
     "ignore_subscription_override must be a boolean."),
    ({"_flavor": 3}, "_flavor must be a string."),
]


@pytest.mark.parametrize(("metadata", "description"), RESERVED_ERRORS)
async def test_create_validates_reserved_keys(
    alone: QueueSvc, metadata: dict[str, Any], description: str
) -> None:
    # When a queue is created with a reserved key out of its type or range (and a fine key)
    info = await rpc_error(alone.stub.CreateQueue(queues_pb2.CreateQueueRequest(
        project="p", queue="q", metadata=orjson.dumps({"description": "ok", **metadata}))))
    # Then it is refused as an invalid API request, and nothing is stored
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 "Invalid API request", description)
    assert not (await alone.stub.GetQueue(get("p", "q"))).exists


# update: validation, absent queue, conflicts --------------------------------------------------


async def test_update_of_absent_queue_is_not_found(alone: QueueSvc) -> None:
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="ghost", operations=[patch("add", "/metadata/a", 1)])))
    assert_error(info, grpc.StatusCode.NOT_FOUND, "QUEUE_NOT_FOUND", "Not found",
                 "Queue ghost does not exist for project p")
    assert not (await alone.stub.GetQueue(get("p", "ghost"))).exists


@pytest.mark.parametrize(
    ("operation", "description"),
    [
        (patch("move", "/metadata/a", 1),
         "Invalid operation: `move`. It must be one of the following: add, remove, replace."),
        (patch("", "/metadata/a", 1),
         "Unable to find `op` in JSON Schema change. It must be one of the following: add, "
         "remove, replace."),
        (patch("add", "", 1), "Unable to find 'path' in JSON Schema change"),
        (patch("add", "metadata/a", 1), 'Pointer `metadata/a` does not start with "/".'),
        (patch("add", "/metadata", 1),
         "Invalid JSON pointer for this resource: '/metadata, e.g /metadata/key'"),
        (patch("add", "/metadata/a/b", 1),
         "Invalid JSON pointer for this resource: '/metadata/a/b, e.g /metadata/key'"),
        (patch("add", "/metadata/", 1), 'Pointer `/metadata/` end with "/".'),
        (patch("add", "/metadata//a", 1), 'Pointer `/metadata//a` contains adjacent "/".'),
        (patch("add", "/meta/a", 1), "The root of path must be metadata, e.g /metadata/key."),
        (patch("remove", "/name/a"), "The root of path must be metadata, e.g /metadata/key."),
        (patch("add", "/metadata/a~2", 1),
         'Pointer `/metadata/a~2` contains "~" not part of a recognized escape sequence.'),
        (patch("add", "/metadata/a"), 'Operation "add" requires a member named "value".'),
        (patch("replace", "/metadata/a"),
         'Operation "replace" requires a member named "value".'),
        (queues_pb2.PatchOperation(op="add", path="/metadata/a", value=b"{bad"),
         "Request body could not be parsed."),
    ],
)
async def test_update_rejects_malformed_operations_before_anything_else(
    alone: QueueSvc, operation: queues_pb2.PatchOperation, description: str
) -> None:
    # Even on an absent queue, the patch itself is checked first (as Zaqar does)
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="absent", operations=[operation])))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BODY",
                 "Invalid request body", description)


@pytest.mark.parametrize("op", ["replace", "remove"])
async def test_update_of_absent_key_conflicts(alone: QueueSvc, op: str) -> None:
    # Given an existing queue without the key "color"
    await alone.stub.EnsureQueue(get("p", "q"))
    # When a patch adds a key, then replaces/removes "color"
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="q",
        operations=[patch("add", "/metadata/size", 1), patch(op, "/metadata/color", "red")])))
    # Then it conflicts and nothing of the patch is stored
    assert_error(info, grpc.StatusCode.FAILED_PRECONDITION, "PATCH_TARGET_ABSENT",
                 "Resource conflict", f"Can't {op} non-existent object color.")
    assert orjson.loads((await alone.stub.GetQueue(get("p", "q"))).metadata) == DEFAULTS


@pytest.mark.parametrize(("metadata", "description"), RESERVED_ERRORS[:6])
async def test_update_validates_reserved_values_as_body_errors(
    alone: QueueSvc, metadata: dict[str, Any], description: str
) -> None:
    await alone.stub.EnsureQueue(get("p", "q"))
    [(key, value)] = metadata.items()
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="q", operations=[patch("add", f"/metadata/{key}", value)])))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BODY",
                 "Invalid request body", description)
    assert orjson.loads((await alone.stub.GetQueue(get("p", "q"))).metadata) == DEFAULTS


async def test_update_that_makes_metadata_too_large_is_refused(alone: QueueSvc) -> None:
    await alone.stub.EnsureQueue(get("p", "q"))
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="q",
        operations=[patch("add", "/metadata/a", "x" * 40000),
                    patch("add", "/metadata/b", "y" * 30000)])))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_BODY",
                 "Invalid request body", "Queue metadata is too large. Max size: 65536")


# list ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, 21, -1])
async def test_list_limit_out_of_range(alone: QueueSvc, limit: int) -> None:
    info = await rpc_error(alone.stub.ListQueues(
        queues_pb2.ListQueuesRequest(project="p", limit=limit)))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 "Invalid API request", "Limit must be at least 1 and may not be greater than 20.")


async def test_list_filter_must_be_json(alone: QueueSvc) -> None:
    info = await rpc_error(alone.stub.ListQueues(queues_pb2.ListQueuesRequest(
        project="p", metadata_filters={"color": b"red"})))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 "Invalid API request", "The filter on metadata key 'color' is not a JSON value.")


async def test_list_pages_by_name_with_default_limit(alone: QueueSvc) -> None:
    # Given 12 queues, ensured out of order
    for i in reversed(range(12)):
        await alone.stub.EnsureQueue(get("p", f"q{i:02d}"))
    # When listing without a limit, then from the returned marker
    first = await alone.stub.ListQueues(queues_pb2.ListQueuesRequest(project="p"))
    second = await alone.stub.ListQueues(
        queues_pb2.ListQueuesRequest(project="p", marker=first.next_marker))
    last = await alone.stub.ListQueues(
        queues_pb2.ListQueuesRequest(project="p", marker=second.next_marker, limit=20))
    # Then 10 come first, the rest next, and the empty page has an empty marker
    assert [q.name for q in first.queues] == [f"q{i:02d}" for i in range(10)]
    assert first.next_marker == "q09"
    assert [q.name for q in second.queues] == ["q10", "q11"]
    assert second.next_marker == "q11"
    assert (list(last.queues), last.next_marker) == ([], "")
    # And plain listings carry no metadata, and no count unless asked
    assert all(q.metadata == b"" and q.exists for q in first.queues)
    assert not first.HasField("count")


async def test_list_detailed_count_and_name_filter(alone: QueueSvc) -> None:
    for name in ["orders", "my-orders", "audit"]:
        await alone.stub.EnsureQueue(get("p", name))
    reply = await alone.stub.ListQueues(queues_pb2.ListQueuesRequest(
        project="p", name="orders", detailed=True, with_count=True, limit=1))
    assert [q.name for q in reply.queues] == ["my-orders"]
    assert list(orjson.loads(reply.queues[0].metadata).items()) == list(DEFAULTS.items())
    assert reply.HasField("count") and reply.count == 2
    empty = await alone.stub.ListQueues(
        queues_pb2.ListQueuesRequest(project="p", name="zzz", with_count=True))
    assert empty.HasField("count") and empty.count == 0


async def test_list_is_scoped_by_project(alone: QueueSvc) -> None:
    await alone.stub.EnsureQueue(get("A", "a1"))
    await alone.stub.EnsureQueue(get("B", "b1"))
    assert await names(alone.stub, project="A") == ["a1"]
    assert await names(alone.stub, project="B") == ["b1"]
    assert await names(alone.stub, project="C") == []
    assert not (await alone.stub.GetQueue(get("B", "a1"))).exists


# purge ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("types", [["bogus"], ["messages", "claims"]])
async def test_purge_rejects_unknown_resource_types(alone: QueueSvc, types: list[str]) -> None:
    info = await rpc_error(alone.stub.PurgeQueue(
        queues_pb2.PurgeQueueRequest(project="p", queue="q", resource_types=types)))
    assert_error(info, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT",
                 "Invalid API request",
                 "Resource types must be a sub set of {'messages', 'subscriptions'}.")


async def test_purge_of_subscriptions_without_notifier_svc_is_unavailable(
    alone: QueueSvc,
) -> None:
    info = await rpc_error(alone.stub.PurgeQueue(queues_pb2.PurgeQueueRequest(
        project="p", queue="q", resource_types=["subscriptions"])))
    assert_unavailable(
        info, "Queue could not be purged: its subscriptions could not be removed. " + NOT_ANSWERED)


# message_svc unreachable ---------------------------------------------------------------------

STORED_BUT_STALE = (
    "The change was stored, but the message service did not confirm it, and may use the "
    "previous queue metadata for up to 30 seconds. " + RETRY
)


def assert_unavailable(info: RpcErrorInfo, description: str) -> None:
    assert_error(info, grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE",
                 "Service temporarily unavailable", description)


async def test_create_without_message_svc_is_stored_but_unavailable(alone: QueueSvc) -> None:
    # When a queue is created while no message_svc replica can be told
    info = await rpc_error(alone.stub.CreateQueue(queues_pb2.CreateQueueRequest(
        project="p", queue="q", metadata=b'{"_default_message_ttl": 120}')))
    # Then the caller learns it is unavailable, and the change is stored nonetheless
    assert_unavailable(info, STORED_BUT_STALE)
    queue = await alone.stub.GetQueue(get("p", "q"))
    assert queue.exists and orjson.loads(queue.metadata)["_default_message_ttl"] == 120


async def test_update_without_message_svc_is_stored_but_unavailable(alone: QueueSvc) -> None:
    await alone.stub.EnsureQueue(get("p", "q"))
    info = await rpc_error(alone.stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue="q", operations=[patch("add", "/metadata/color", "red")])))
    assert_unavailable(info, STORED_BUT_STALE)
    assert orjson.loads((await alone.stub.GetQueue(get("p", "q"))).metadata)["color"] == "red"


async def test_delete_without_message_svc_removes_queue_but_is_unavailable(
    alone: QueueSvc,
) -> None:
    await alone.stub.EnsureQueue(get("p", "q"))
    info = await rpc_error(alone.stub.DeleteQueue(
        queues_pb2.DeleteQueueRequest(project="p", queue="q")))
    assert_unavailable(
        info, "Queue could not be deleted: its messages could not be removed. " + NOT_ANSWERED)
    assert not (await alone.stub.GetQueue(get("p", "q"))).exists


async def test_stats_and_purge_without_message_svc_are_unavailable(alone: QueueSvc) -> None:
    stats = await rpc_error(alone.stub.GetQueueStats(
        queues_pb2.GetQueueStatsRequest(project="p", queue="q")))
    assert_unavailable(stats, "Queue stats could not be read. " + NOT_ANSWERED)
    purge = await rpc_error(alone.stub.PurgeQueue(
        queues_pb2.PurgeQueueRequest(project="p", queue="q")))
    assert_unavailable(
        purge, "Queue could not be purged: its messages could not be removed. " + NOT_ANSWERED)


# the server ----------------------------------------------------------------------------------


async def test_health_reports_serving(alone: QueueSvc) -> None:
    health = health_pb2_grpc.HealthStub(alone.channel)
    for service in ("", "zaqar.v2.Queues"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_start_with_bad_store_uri_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(queue_store="mysql://db/queues")
    with pytest.raises(ConfigurationError, match="unsupported scheme 'mysql'"):
        await start(settings)


async def test_start_on_port_zero_reports_the_bound_port(
    make_settings: Callable[..., Settings],
) -> None:
    running = await start(make_settings(queue_port=0))
    try:
        assert running.port > 0
    finally:
        await running.stop()


async def test_process_announces_ready_and_stops_on_sigterm(
    make_settings: Callable[..., Settings],
) -> None:
    # Given queue_svc run as its own process, configured through the environment
    settings = make_settings()
    env = {**os.environ, **settings_environment(settings)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.queue_svc.server", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        # Then it prints one READY line with its address, and serves there
        metrics = f"http://{settings.host}:{settings.queue_metrics_port}/metrics"
        assert line.decode().strip() == (
            f"READY queue_svc {settings.host}:{settings.queue_port} metrics={metrics}"
        )
        async with grpc.aio.insecure_channel(settings.target("queue")) as channel:
            queue = await queues_stub(channel).GetQueue(get("p", "q"))
        assert queue.exists is False
        # And SIGTERM stops it cleanly
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_process_with_bad_store_uri_exits_with_a_message(
    make_settings: Callable[..., Settings],
) -> None:
    settings = dataclasses.replace(make_settings(), queue_store="sqlite://nowhere")
    env = {**os.environ, **settings_environment(settings)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.queue_svc.server", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert err.decode().startswith(
        "zaqar-grpc: configuration error: invalid SQLite queue store URI 'sqlite://nowhere'")


# with the real message_svc -------------------------------------------------------------------

CLIENT = "3381af92-2b9e-11e3-b191-71861300734c"


@dataclass
class Stack(QueueSvc):
    messages: messages_pb2_grpc.MessagesStub


@asynccontextmanager
async def message_replica(settings: Settings) -> AsyncIterator[messages_pb2_grpc.MessagesStub]:
    running = await start_message_svc(settings)
    try:
        async with grpc.aio.insecure_channel(f"{settings.host}:{running.port}") as channel:
            yield messages_pb2_grpc.MessagesStub(channel)  # type: ignore[no-untyped-call]
    finally:
        await running.stop()


@asynccontextmanager
async def notifier_service(settings: Settings) -> AsyncIterator[None]:
    running = await start_notifier_svc(settings)
    try:
        yield
    finally:
        await running.stop()


@pytest.fixture
async def stack(make_settings: Callable[..., Settings]) -> AsyncIterator[Stack]:
    """queue_svc, one message_svc and notifier_svc, finding each other through the same
    settings."""
    settings = make_settings()
    async with notifier_service(settings), message_replica(settings) as messages, \
            queue_service(settings) as queues:
        yield Stack(queues.stub, queues.channel, settings, messages)


async def create(stub: queues_pb2_grpc.QueuesStub, queue: str, metadata: Any,
                 project: str = "p") -> bool:
    reply = await stub.CreateQueue(queues_pb2.CreateQueueRequest(
        project=project, queue=queue, metadata=orjson.dumps(metadata)))
    return bool(reply.created)


async def update(stub: queues_pb2_grpc.QueuesStub, queue: str,
                 *operations: queues_pb2.PatchOperation) -> dict[str, Any]:
    reply = await stub.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project="p", queue=queue, operations=operations))
    assert reply.exists
    metadata: dict[str, Any] = orjson.loads(reply.metadata)
    return metadata


async def metadata_of(stub: queues_pb2_grpc.QueuesStub, queue: str) -> dict[str, Any]:
    metadata: dict[str, Any] = orjson.loads((await stub.GetQueue(get("p", queue))).metadata)
    return metadata


async def post(messages: messages_pb2_grpc.MessagesStub, queue: str, count: int = 1) -> list[str]:
    reply = await messages.PostMessages(messages_pb2.PostMessagesRequest(
        project="p", queue=queue, client_id=CLIENT,
        messages=[messages_pb2.NewMessage(body=orjson.dumps({"n": i})) for i in range(count)]))
    return list(reply.ids)


async def ttl_of_next_post(messages: messages_pb2_grpc.MessagesStub, queue: str) -> int:
    """The TTL message_svc gives a message posted without one: the queue's default."""
    [message_id] = await post(messages, queue)
    message = await messages.GetMessage(messages_pb2.GetMessageRequest(
        project="p", queue=queue, message_id=message_id))
    return int(message.ttl)


async def stats(stub: queues_pb2_grpc.QueuesStub, queue: str) -> tuple[int, int, int]:
    reply = await stub.GetQueueStats(queues_pb2.GetQueueStatsRequest(project="p", queue=queue))
    return reply.claimed, reply.free, reply.total


async def test_create_then_create_again(stack: Stack) -> None:
    # When a queue is created with the transcript's metadata
    assert await create(stack.stub, "demoq", {
        "_max_messages_post_size": 262144, "_default_message_ttl": 3600, "description": "demo"
    }) is True
    # Then GET shows the stored keys first, then the missing defaults, exactly as Zaqar does
    queue = await stack.stub.GetQueue(get("p", "demoq"))
    assert queue.exists
    assert queue.metadata == (
        b'{"_max_messages_post_size":262144,"_default_message_ttl":3600,"description":"demo",'
        b'"_default_message_delay":0,"_dead_letter_queue":null,'
        b'"_dead_letter_queue_messages_ttl":null,"_max_claim_count":null,'
        b'"_enable_encrypt_messages":false}'
    )
    # And creating it again reports an existing queue and replaces the metadata
    assert await create(stack.stub, "demoq", {}) is False
    assert list((await metadata_of(stack.stub, "demoq")).items()) == list(DEFAULTS.items())


async def test_create_accepts_metadata_of_exactly_64_kib(stack: Stack) -> None:
    raw = b'{"a":"' + b"x" * (65536 - 8) + b'"}'
    assert len(raw) == 65536
    reply = await stack.stub.CreateQueue(
        queues_pb2.CreateQueueRequest(project="p", queue="big", metadata=raw))
    assert reply.created
    assert len((await metadata_of(stack.stub, "big"))["a"]) == 65528


async def test_create_with_empty_metadata_bytes(stack: Stack) -> None:
    reply = await stack.stub.CreateQueue(queues_pb2.CreateQueueRequest(project="p", queue="q"))
    assert reply.created
    assert await metadata_of(stack.stub, "q") == DEFAULTS


async def test_reserved_null_shows_the_default_in_place(stack: Stack) -> None:
    await create(stack.stub, "q", {"a": 1, "_default_message_ttl": None, "_max_claim_count": 3})
    shown = await metadata_of(stack.stub, "q")
    assert list(shown.items()) == [
        ("a", 1), ("_default_message_ttl", 3600), ("_max_claim_count", 3),
        ("_max_messages_post_size", 262144), ("_default_message_delay", 0),
        ("_dead_letter_queue", None), ("_dead_letter_queue_messages_ttl", None),
        ("_enable_encrypt_messages", False),
    ]


async def test_update_adds_replaces_removes_and_returns_full_metadata(stack: Stack) -> None:
    await create(stack.stub, "q", {"size": "s"})
    # When a key is added (the transcript's PATCH)
    after_add = await update(stack.stub, "q", patch("add", "/metadata/color", "red"))
    assert list(after_add.items()) == [("size", "s"), ("color", "red"), *DEFAULTS.items()]
    # And replaced, and another key removed
    after = await update(stack.stub, "q", patch("replace", "/metadata/color", "blue"),
                         patch("remove", "/metadata/size"))
    assert list(after.items()) == [("color", "blue"), *DEFAULTS.items()]
    # Then GET agrees
    assert await metadata_of(stack.stub, "q") == after


async def test_reserved_keys_can_be_replaced_and_removed_when_not_stored(stack: Stack) -> None:
    await create(stack.stub, "q", {})
    # Reserved keys always exist through their defaults: no conflict
    shown = await update(stack.stub, "q", patch("replace", "/metadata/_default_message_ttl", 120),
                         patch("remove", "/metadata/_default_message_delay"))
    assert shown["_default_message_ttl"] == 120
    assert shown["_default_message_delay"] == 0
    # And removing a stored reserved key brings its default back
    shown = await update(stack.stub, "q", patch("remove", "/metadata/_default_message_ttl"))
    assert shown == DEFAULTS


async def test_update_accepts_escaped_pointer_keys(stack: Stack) -> None:
    await create(stack.stub, "q", {})
    shown = await update(stack.stub, "q", patch("add", "/metadata/a~1b~0c", 1))
    assert shown["a/b~c"] == 1


async def test_list_filters_by_metadata_over_grpc(stack: Stack) -> None:
    await create(stack.stub, "red5", {"color": "red", "size": 5})
    await create(stack.stub, "red6", {"color": "red", "size": 6})
    await create(stack.stub, "blue5", {"color": "blue", "size": 5})
    assert await names(stack.stub, project="p", metadata_filters={"color": b'"red"'}) == [
        "red5", "red6"
    ]
    assert await names(stack.stub, project="p",
                       metadata_filters={"color": b'"red"', "size": b"5"}) == ["red5"]
    assert await names(stack.stub, project="p", metadata_filters={"size": b'"5"'}) == []
    detailed = await stack.stub.ListQueues(queues_pb2.ListQueuesRequest(
        project="p", detailed=True, metadata_filters={"size": b"6"}))
    assert [orjson.loads(q.metadata) for q in detailed.queues] == [
        {"color": "red", "size": 6, **DEFAULTS}
    ]


async def test_stats_reflect_posted_messages(stack: Stack) -> None:
    # An absent queue has zero counts
    assert await stats(stack.stub, "q") == (0, 0, 0)
    # When three messages are posted
    await post(stack.messages, "q", 3)
    # Then stats count them, with their ends
    reply = await stack.stub.GetQueueStats(queues_pb2.GetQueueStatsRequest(project="p", queue="q"))
    assert (reply.claimed, reply.free, reply.total) == (0, 3, 3)
    assert reply.HasField("oldest") and reply.HasField("newest")
    # And another project's queue of that name is still empty
    other = await stack.stub.GetQueueStats(queues_pb2.GetQueueStatsRequest(project="o", queue="q"))
    assert (other.claimed, other.free, other.total) == (0, 0, 0)


async def test_delete_queue_removes_its_messages(stack: Stack) -> None:
    # Given a queue with messages, and another queue with messages
    await create(stack.stub, "q", {"a": 1})
    await post(stack.messages, "q", 2)
    await post(stack.messages, "keep", 1)
    # When the queue is deleted, twice
    for _ in range(2):
        await stack.stub.DeleteQueue(queues_pb2.DeleteQueueRequest(project="p", queue="q"))
    # Then it is gone with its messages, and the other queue is untouched
    assert not (await stack.stub.GetQueue(get("p", "q"))).exists
    assert await names(stack.stub, project="p") == ["keep"]
    assert await stats(stack.stub, "q") == (0, 0, 0)
    listed = await stack.messages.ListMessages(messages_pb2.ListMessagesRequest(
        project="p", queue="q", client_id=CLIENT, echo=True))
    assert list(listed.messages) == []
    assert await stats(stack.stub, "keep") == (0, 1, 1)


async def test_purge_removes_messages_and_keeps_metadata(stack: Stack) -> None:
    await create(stack.stub, "q", {"description": "kept"})
    await post(stack.messages, "q", 2)
    for types in (["messages"], []):
        await post(stack.messages, "q", 1)
        await stack.stub.PurgeQueue(
            queues_pb2.PurgeQueueRequest(project="p", queue="q", resource_types=types))
        assert await stats(stack.stub, "q") == (0, 0, 0)
    assert (await metadata_of(stack.stub, "q"))["description"] == "kept"


async def test_metadata_changes_apply_to_the_very_next_post(stack: Stack) -> None:
    # Given a queue whose default TTL message_svc has cached
    await create(stack.stub, "q", {"_default_message_ttl": 120})
    assert await ttl_of_next_post(stack.messages, "q") == 120
    # When the default changes by PATCH, then by PUT over the existing queue
    await update(stack.stub, "q", patch("replace", "/metadata/_default_message_ttl", 300))
    assert await ttl_of_next_post(stack.messages, "q") == 300
    await create(stack.stub, "q", {"_default_message_ttl": 600})
    assert await ttl_of_next_post(stack.messages, "q") == 600
    # And after a delete the queue is new again, with the default TTL
    await stack.stub.DeleteQueue(queues_pb2.DeleteQueueRequest(project="p", queue="q"))
    assert await ttl_of_next_post(stack.messages, "q") == 3600
    assert (await stack.stub.GetQueue(get("p", "q"))).exists


async def test_lazy_queue_created_later_applies_its_metadata(stack: Stack) -> None:
    # Given message_svc has looked at a queue that does not exist yet
    listed = await stack.messages.ListMessages(messages_pb2.ListMessagesRequest(
        project="p", queue="later", client_id=CLIENT))
    assert list(listed.messages) == []
    # When it is created with metadata, the next post uses it
    await create(stack.stub, "later", {"_default_message_ttl": 90})
    assert await ttl_of_next_post(stack.messages, "later") == 90


async def test_a_change_reaches_every_message_svc_replica_without_a_list_of_them(
    make_settings: Callable[..., Settings],
) -> None:
    # Given two message_svc replicas on one store, and queue_svc knowing only the first
    base = make_settings()
    second_port = free_port()
    async with notifier_service(base), message_replica(base) as first, message_replica(
        dataclasses.replace(base, message_port=second_port)
    ) as second, queue_service(base) as queues:
        await create(queues.stub, "q", {"_default_message_ttl": 120})
        # And both have cached the queue's metadata
        assert await ttl_of_next_post(first, "q") == 120
        assert await ttl_of_next_post(second, "q") == 120
        # When the default TTL changes
        await update(queues.stub, "q", patch("replace", "/metadata/_default_message_ttl", 240))
        # Then each replica applies it to its very next post, the one never called included
        assert await ttl_of_next_post(second, "q") == 240
        assert await ttl_of_next_post(first, "q") == 240
        # And so it does after the queue is deleted and created again with other metadata
        await queues.stub.DeleteQueue(queues_pb2.DeleteQueueRequest(project="p", queue="q"))
        await create(queues.stub, "q", {"_default_message_ttl": 360})
        assert await ttl_of_next_post(second, "q") == 360


async def test_a_replica_that_is_down_costs_nothing_while_another_answers(
    make_settings: Callable[..., Settings],
) -> None:
    # Given queue_svc balancing over a replica that is down and one that is up
    base = make_settings()
    settings = dataclasses.replace(
        base, message_targets=f"{base.host}:{free_port()},{base.host}:{base.message_port}")
    async with message_replica(settings) as live, queue_service(settings) as queues:
        # Then changes are acknowledged, each by the replica that is up
        for ttl in (120, 240, 360):
            await create(queues.stub, "q", {"_default_message_ttl": ttl})
            # And applied at once
            assert await ttl_of_next_post(live, "q") == ttl


async def test_no_replica_to_tell_fails_the_change_but_keeps_it(
    make_settings: Callable[..., Settings],
) -> None:
    # Given queue_svc whose message_svc is down
    base = make_settings()
    settings = dataclasses.replace(base, message_targets=f"{base.host}:{free_port()}")
    async with queue_service(settings) as queues:
        info = await rpc_error(queues.stub.CreateQueue(queues_pb2.CreateQueueRequest(
            project="p", queue="q", metadata=b'{"_default_message_ttl": 120}')))
        # Then the caller learns the change is stored but not confirmed
        assert_unavailable(info, STORED_BUT_STALE)
        # And it is stored
        queue = await queues.stub.GetQueue(queues_pb2.GetQueueRequest(project="p", queue="q"))
        assert orjson.loads(queue.metadata)["_default_message_ttl"] == 120


async def test_start_on_a_taken_port_fails_and_releases_the_store(
    alone: QueueSvc, make_settings: Callable[..., Settings],
) -> None:
    # Given a port already served by another queue_svc
    taken = make_settings(queue_port=alone.settings.queue_port)
    # Then a second one cannot start there (and closes what it opened: warnings are errors)
    with pytest.raises(CannotListen, match="address already in use"):
        await start(taken)
