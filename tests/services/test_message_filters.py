"""Message filters in message_svc over real gRPC, with the real queue_svc next to it.

The built-in ``message_schema`` filter comes from zaqar-grpc's own entry points; the other
filters from tests/filter_plugins.py's distribution, installed on ``sys.path`` for the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from zaqar_grpc.v2 import messages_pb2, queues_pb2

from services.common.config import ConfigurationError
from services.common.errors import RpcErrorInfo, decode_rpc_error
from services.common.message_schema import SCHEMA_SIZE_MAX
from tests import filter_plugins
from tests.services import test_message_svc
from tests.services.test_message_svc import CLIENT, PROJECT, Services

Code = grpc.StatusCode
Factory = Callable[..., Awaitable[Services]]
# The fixtures that run queue_svc and message_svc.
message_svc_factory = test_message_svc.message_svc_factory
message_svc = test_message_svc.message_svc
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(filter_plugins.install(tmp_path / "site")))


async def error_of(call: Awaitable[Any]) -> RpcErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return decode_rpc_error(raised.value)


def bodies(messages: Any) -> list[Any]:
    return [orjson.loads(m.body) for m in messages]


def patch(op: str, key: str, value: Any) -> queues_pb2.PatchOperation:
    return queues_pb2.PatchOperation(op=op, path=f"/metadata/{key}", value=orjson.dumps(value))


async def test_a_body_that_does_not_match_the_schema_is_refused(message_svc: Services) -> None:
    # Given a queue with a message schema
    await message_svc.create_queue("typed", _message_schema=SCHEMA)
    # When a post has a message that does not match it
    info = await error_of(message_svc.post({"n": 1}, {"n": "x"}, queue="typed"))
    # Then it is refused naming the message and the pointer, and nothing is stored
    assert (info.code, info.reason, info.title) == (
        Code.INVALID_ARGUMENT, "MESSAGE_REJECTED", "Invalid request body"
    )
    assert info.description == (
        "Message 1 was refused by message filter 'message_schema': the body does not match the "
        "queue's _message_schema at JSON pointer \"/n\": 'x' is not of type 'integer'"
    )
    assert await message_svc.listed("typed") == []
    # And a matching post is stored as it was sent
    await message_svc.post({"n": 1}, {"n": 2}, queue="typed")
    assert bodies(await message_svc.listed("typed")) == [{"n": 1}, {"n": 2}]


async def test_a_new_schema_applies_to_the_next_post(message_svc: Services) -> None:
    await message_svc.create_queue("typed", _message_schema=SCHEMA)
    await message_svc.post({"n": 1}, queue="typed")
    # When the schema is replaced
    await message_svc.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="typed",
        operations=[patch("replace", "_message_schema", {"type": "string"})],
    ))
    # Then the very next post is checked against the new one
    info = await error_of(message_svc.post({"n": 1}, queue="typed"))
    assert 'at JSON pointer "": {\'n\': 1} is not of type \'string\'' in info.description
    await message_svc.post("text", queue="typed")
    # And without a schema anything goes again
    await message_svc.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="typed", operations=[patch("remove", "_message_schema", None)],
    ))
    await message_svc.post([1, 2], queue="typed")


@pytest.mark.parametrize(
    ("metadata", "description"),
    [
        ({"_message_schema": {"type": "objekt"}},
         "_message_schema is not a valid JSON Schema (draft 2020-12) at /type: 'objekt' is not "
         "valid under any of the given schemas"),
        ({"_message_schema": "string"},
         "_message_schema must be a JSON Schema (an object or a boolean)."),
        ({"_message_schema": {"$ref": "https://example.com/schema.json"}},
         "_message_schema may only refer to its own parts ($ref \"#...\"), not to "
         "'https://example.com/schema.json'."),
        ({"_message_schema": {"description": "x" * SCHEMA_SIZE_MAX}},
         f"_message_schema is too large: {SCHEMA_SIZE_MAX + 18} bytes, at most "
         f"{SCHEMA_SIZE_MAX}."),
        ({"_filters": "message_schema"}, "_filters must be a list of message filter names."),
        ({"_filters": ["no_such_filter"]},
         "_filters: no message filter named 'no_such_filter' is installed (installed: "
         "message_schema)."),
    ],
)
async def test_queue_svc_refuses_unusable_filter_metadata(
    message_svc: Services, metadata: dict[str, Any], description: str
) -> None:
    # On create
    info = await error_of(message_svc.create_queue("q", **metadata))
    assert (info.code, info.description) == (Code.INVALID_ARGUMENT, description)
    # And on update
    await message_svc.create_queue("q")
    key, value = next(iter(metadata.items()))
    info = await error_of(message_svc.queues.UpdateQueue(queues_pb2.UpdateQueueRequest(
        project=PROJECT, queue="q", operations=[patch("add", key, value)],
    )))
    assert (info.code, info.reason, info.description) == (
        Code.INVALID_ARGUMENT, "INVALID_BODY", description
    )


async def test_a_queues_filter_changes_posted_bodies(
    installed: None, message_svc_factory: Factory
) -> None:
    services = await message_svc_factory()
    await services.create_queue("stamped", _filters=["stamp"])
    await services.post({"n": 1}, "plain", queue="stamped")
    assert bodies(await services.listed("stamped")) == [{"n": 1, "stamp": "post"}, "plain"]
    # Other queues are not filtered
    await services.post({"n": 1}, queue="other")
    assert bodies(await services.listed("other")) == [{"n": 1}]


async def test_deployment_filters_act_on_every_way_out(
    installed: None, message_svc_factory: Factory
) -> None:
    # Given a deployment that redacts "secret" on the way out
    services = await message_svc_factory(message_filters="redact")
    ids = await services.post(*({"secret": i} for i in range(4)), queue="r")
    redacted = {"secret": "***"}
    # Then listing, getting, claiming, reading the claim and popping all show it redacted
    assert bodies(await services.listed("r")) == [redacted] * 4
    one = await services.messages.GetMessage(messages_pb2.GetMessageRequest(
        project=PROJECT, queue="r", message_id=ids[0]))
    assert orjson.loads(one.body) == redacted
    many = await services.messages.GetMessages(messages_pb2.GetMessagesRequest(
        project=PROJECT, queue="r", message_ids=ids[:2]))
    assert bodies(many.messages) == [redacted] * 2
    claim = await services.claim("r", limit=2)
    assert bodies(claim.messages) == [redacted] * 2
    again = await services.messages.GetClaim(messages_pb2.GetClaimRequest(
        project=PROJECT, queue="r", claim_id=claim.id))
    assert bodies(again.messages) == [redacted] * 2
    popped = await services.messages.PopMessages(messages_pb2.PopMessagesRequest(
        project=PROJECT, queue="r", limit=2))
    assert bodies(popped.messages) == [redacted] * 2


async def test_a_crashing_filter_refuses_the_post_with_400(
    installed: None, message_svc_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    services = await message_svc_factory()
    await services.create_queue("fragile", _filters=["crash"])
    info = await error_of(services.post({"n": 1}, queue="fragile"))
    assert (info.code, info.reason, info.title) == (
        Code.INVALID_ARGUMENT, "MESSAGE_FILTER_FAILED", "Message filter failed"
    )
    assert info.description.startswith("Message filter 'crash' failed, so the messages were "
                                        "not posted (nothing was stored).")
    assert await services.listed("fragile") == []
    assert "message filter 'crash' failed on post of demo-project/fragile" in caplog.text


async def test_a_filter_crashing_on_the_way_out_lets_messages_through(
    installed: None, message_svc_factory: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    services = await message_svc_factory()
    await services.create_queue("fragile", _filters=["crash_on_read"])
    await services.post({"n": 1}, queue="fragile")
    assert bodies(await services.listed("fragile")) == [{"n": 1}]
    assert bodies((await services.claim("fragile")).messages) == [{"n": 1}]
    assert "message filter 'crash_on_read' failed on list of demo-project/fragile" in caplog.text


async def test_filters_apply_to_batched_calls(message_svc: Services) -> None:
    await message_svc.create_queue("typed", _message_schema=SCHEMA)
    post = messages_pb2.PostMessagesRequest(
        project=PROJECT, queue="typed", client_id=CLIENT,
        messages=[messages_pb2.NewMessage(body=b'{"n": true}')],
    )
    answer = await message_svc.internal.Batch(messages_pb2.BatchRequest(items=[
        messages_pb2.BatchItem(post_messages=post),
        messages_pb2.BatchItem(post_messages=messages_pb2.PostMessagesRequest(
            project=PROJECT, queue="typed", client_id=CLIENT,
            messages=[messages_pb2.NewMessage(body=b'{"n": 7}')],
        )),
    ]))
    refused, stored = answer.results
    assert refused.error.code == Code.INVALID_ARGUMENT.value[0]
    assert "Message 0 was refused by message filter 'message_schema'" in refused.error.message
    assert len(stored.post_messages.ids) == 1


async def test_an_unknown_deployment_filter_stops_the_start(message_svc_factory: Factory) -> None:
    with pytest.raises(ConfigurationError, match="ZAQAR_MESSAGE_FILTERS: no message filter "
                                                 "named 'nope' is installed"):
        await message_svc_factory(message_filters="nope")
