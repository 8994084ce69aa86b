"""An internal service uses the generated stubs directly against the running processes, and gets
the same validation as a REST caller."""

from __future__ import annotations

import uuid

import grpc
import httpx
import orjson
import pytest
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc, queues_pb2, queues_pb2_grpc

from services.common.errors import decode_rpc_error
from tests.e2e.harness import Stack

pytestmark = pytest.mark.e2e


def headers(project: str) -> dict[str, str]:
    return {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
            "Content-Type": "application/json"}


async def test_grpc_post_is_visible_over_rest(stack: Stack, project: str) -> None:
    async with grpc.aio.insecure_channel(stack.settings.target("message")) as channel:
        stub = messages_pb2_grpc.MessagesStub(channel)
        # Given messages posted over gRPC by an internal service
        reply = await stub.PostMessages(messages_pb2.PostMessagesRequest(
            project=project, queue="from-grpc", client_id=str(uuid.uuid4()),
            messages=[messages_pb2.NewMessage(body=b'{"n": 1}', ttl=120),
                      messages_pb2.NewMessage(body=b'"two"')]))
        assert len(reply.ids) == 2
    # Then a REST client lists them, bodies intact, in order
    async with httpx.AsyncClient(base_url=stack.url) as http:
        r = await http.get("/v2/queues/from-grpc/messages", headers=headers(project))
    assert r.status_code == 200
    listed = r.json()["messages"]
    assert [m["id"] for m in listed] == list(reply.ids)
    assert [m["body"] for m in listed] == [{"n": 1}, "two"]
    assert [m["ttl"] for m in listed] == [120, 3600]


@pytest.mark.parametrize(
    ("grpc_request", "rest_path", "rest_body"),
    [
        (messages_pb2.PostMessagesRequest(queue="q", messages=[
            messages_pb2.NewMessage(body=b"1", ttl=10)]),
         "/v2/queues/q/messages", {"messages": [{"body": 1, "ttl": 10}]}),
        (messages_pb2.CreateClaimRequest(queue="q", ttl=10),
         "/v2/queues/q/claims", {"ttl": 10}),
        (messages_pb2.CreateClaimRequest(queue="q", grace=5),
         "/v2/queues/q/claims", {"grace": 5}),
        (messages_pb2.PostMessagesRequest(queue="bad name!", messages=[
            messages_pb2.NewMessage(body=b"1")]),
         "/v2/queues/bad%20name!/messages", {"messages": [{"body": 1}]}),
    ],
    ids=["message-ttl", "claim-ttl", "claim-grace", "queue-name"],
)
async def test_grpc_and_rest_validate_alike(
    stack: Stack, project: str, grpc_request: object, rest_path: str, rest_body: object
) -> None:
    # When the same invalid request is made over gRPC and over REST
    grpc_request.project = project  # type: ignore[attr-defined]
    async with grpc.aio.insecure_channel(stack.settings.target("message")) as channel:
        stub = messages_pb2_grpc.MessagesStub(channel)
        call = (stub.PostMessages if isinstance(grpc_request, messages_pb2.PostMessagesRequest)
                else stub.CreateClaim)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(grpc_request)
    info = decode_rpc_error(caught.value)
    async with httpx.AsyncClient(base_url=stack.url) as http:
        r = await http.post(rest_path, content=orjson.dumps(rest_body), headers=headers(project))
    # Then gRPC says INVALID_ARGUMENT and REST says 400, with the same title and description
    assert info.code == grpc.StatusCode.INVALID_ARGUMENT
    assert r.status_code == 400
    assert r.json() == {"title": info.title, "description": info.description}


async def test_grpc_queue_metadata_round_trip(stack: Stack, project: str) -> None:
    async with grpc.aio.insecure_channel(stack.settings.target("queue")) as channel:
        stub = queues_pb2_grpc.QueuesStub(channel)
        created = await stub.CreateQueue(queues_pb2.CreateQueueRequest(
            project=project, queue="meta", metadata=b'{"big": 12345678901234567890}'))
        assert created.created
        got = await stub.GetQueue(queues_pb2.GetQueueRequest(project=project, queue="meta"))
    # Integers beyond double precision survive (bodies and metadata are JSON bytes)
    assert b"12345678901234567890" in got.metadata
    assert orjson.loads(got.metadata)["_default_message_ttl"] == 3600
