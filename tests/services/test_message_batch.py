"""``MessagesInternal.Batch`` of message_svc over real gRPC: each item answers as its own
``Messages`` call would (response, or status code + message + ErrorInfo), items of one batch
run concurrently without stepping on each other, and the call is never retried."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2
from zaqar_grpc.v2 import common_pb2, messages_pb2, messages_pb2_grpc

from services.common.config import Settings
from services.common.errors import Unavailable
from services.common.grpc_server import create_server, open_channel
from services.common.logs import REQUEST_ID
from services.common.request_bytes import Receiving
from services.message_svc.batch import MAX_ITEMS, ROUTES
from services.message_svc.servicer import MessagesInternalServicer
from tests.keystone import Keystone
from tests.services._grpc import Stubs, service, token
from tests.services.test_message_svc import (  # noqa: F401 - fixtures
    PROJECT,
    Services,
    _start_pair,
    message_svc,
    message_svc_factory,
)

ITEM_METHODS = {field: method for field, (method, _) in ROUTES.items()}


def _no_ages(message: Message) -> Message:
    """A copy without the ``age`` fields, which tick with the clock."""
    copy = type(message)()
    copy.CopyFrom(message)
    stack: list[Message] = [copy]
    while stack:
        m = stack.pop()
        for descriptor, value in m.ListFields():
            if descriptor.name == "age":
                m.ClearField("age")
            elif descriptor.message_type is not None:
                if descriptor.is_repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
    return copy


async def _alone(svc: Services, item: messages_pb2.BatchItem) -> tuple[str, Any]:
    """What the item's own call answers: ("ok", response) or ("error", google.rpc.Status)."""
    kind = item.WhichOneof("request")
    assert kind is not None
    try:
        response = await getattr(svc.messages, ITEM_METHODS[kind])(getattr(item, kind))
    except grpc.aio.AioRpcError as exc:
        details = dict(exc.trailing_metadata() or ()).get("grpc-status-details-bin")
        status = status_pb2.Status.FromString(details) if details else status_pb2.Status(
            code=exc.code().value[0], message=exc.details() or ""
        )
        return "error", status
    return "ok", _no_ages(response)


def _batched(result: messages_pb2.BatchResult) -> tuple[str, Any]:
    kind = result.WhichOneof("result")
    assert kind is not None
    if kind == "error":
        return "error", result.error
    return "ok", _no_ages(getattr(result, kind))


def _item(**request: Message) -> messages_pb2.BatchItem:
    return messages_pb2.BatchItem(**request)


async def test_each_item_answers_as_its_own_call(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    # Given a queue with claimed and unclaimed messages, and an empty one
    a, b, c = await message_svc.post({"n": 1}, {"n": 2}, {"n": 3}, ttl=300)
    claim = await message_svc.claim(limit=1)
    assert [m.id for m in claim.messages] == [a]
    ref: dict[str, Any] = {"project": PROJECT, "queue": "q"}

    # And calls that succeed or fail without changing anything
    items = [
        _item(get_message=messages_pb2.GetMessageRequest(**ref, message_id=b)),
        _item(get_message=messages_pb2.GetMessageRequest(**ref, message_id="bogus")),
        _item(get_messages=messages_pb2.GetMessagesRequest(**ref, message_ids=[c, "x", b])),
        _item(get_messages=messages_pb2.GetMessagesRequest(
            **ref, message_ids=[str(i) for i in range(21)])),
        _item(list_messages=messages_pb2.ListMessagesRequest(
            **ref, client_id="someone", include_claimed=True)),
        _item(list_messages=messages_pb2.ListMessagesRequest(**ref, client_id="x", limit=0)),
        _item(delete_message=messages_pb2.DeleteMessageRequest(**ref, message_id=a)),
        _item(delete_message=messages_pb2.DeleteMessageRequest(
            **ref, message_id=a, claim_id="0123456789abcdef01234567")),
        _item(delete_message=messages_pb2.DeleteMessageRequest(
            **ref, message_id=b, claim_id=claim.id)),
        _item(delete_message=messages_pb2.DeleteMessageRequest(**ref, message_id="absent")),
        _item(delete_messages=messages_pb2.DeleteMessagesRequest(
            **ref, message_ids=[str(i) for i in range(21)])),
        _item(pop_messages=messages_pb2.PopMessagesRequest(**ref, limit=0)),
        _item(create_claim=messages_pb2.CreateClaimRequest(project=PROJECT, queue="empty")),
        _item(create_claim=messages_pb2.CreateClaimRequest(**ref, ttl=10)),
        _item(get_claim=messages_pb2.GetClaimRequest(**ref, claim_id=claim.id)),
        _item(get_claim=messages_pb2.GetClaimRequest(**ref, claim_id="bogus")),
        _item(update_claim=messages_pb2.UpdateClaimRequest(**ref, claim_id="bogus")),
        _item(update_claim=messages_pb2.UpdateClaimRequest(**ref, claim_id=claim.id, grace=1)),
        _item(delete_claim=messages_pb2.DeleteClaimRequest(**ref, claim_id="bogus")),
        _item(post_messages=messages_pb2.PostMessagesRequest(
            **ref, client_id="c", messages=[messages_pb2.NewMessage(body=b"1", ttl=10)])),
        _item(post_messages=messages_pb2.PostMessagesRequest(
            project=PROJECT, queue="bad name!", client_id="c",
            messages=[messages_pb2.NewMessage(body=b"1")])),
        _item(get_stats=common_pb2.QueueRef(**ref)),
    ]
    assert {item.WhichOneof("request") for item in items} == set(ROUTES)

    # When each is called alone, then all together in one batch
    alone = [await _alone(message_svc, item) for item in items]
    response = await message_svc.internal.Batch(messages_pb2.BatchRequest(items=items))

    # Then every result is what its own call gave: the same response, or the same status
    assert [_batched(result) for result in response.results] == alone
    errors = [outcome for kind, outcome in alone if kind == "error"]
    assert len(errors) == 14
    assert all(status.details for status in errors)  # ErrorInfo (reason, title) included


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_items_run_concurrently_and_keep_their_order(
    request: pytest.FixtureRequest,
    message_svc_factory: Callable[..., Awaitable[Services]],  # noqa: F811 - fixture
    store: str,
) -> None:
    overrides = {}
    if store == "redis":
        redis = request.getfixturevalue("redis_server")
        overrides["message_store"] = f"redis://127.0.0.1:{redis.port}/0"
    svc = await message_svc_factory(**overrides)
    project = "p-" + uuid.uuid4().hex[:8]

    # Given a queue of 10 messages
    ids = await svc.post(*range(10), project=project)

    # When one batch posts to 5 queues and makes 5 claims of 2 on the first
    posts = [
        _item(post_messages=messages_pb2.PostMessagesRequest(
            project=project, queue=f"q{i}", client_id="c",
            messages=[messages_pb2.NewMessage(body=orjson.dumps(i))]))
        for i in range(5)
    ]
    claims = [_item(create_claim=messages_pb2.CreateClaimRequest(
        project=project, queue="q", limit=2)) for _ in range(5)]
    response = await svc.internal.Batch(messages_pb2.BatchRequest(items=posts + claims))

    # Then each post's id is in its own queue
    for i, result in enumerate(response.results[:5]):
        (posted,) = await svc.listed(queue=f"q{i}", project=project)
        assert list(result.post_messages.ids) == [posted.id]
        assert orjson.loads(posted.body) == i
    # And the claims took every message exactly once
    claimed = [m.id for r in response.results[5:] for m in r.claim.messages]
    assert sorted(claimed) == sorted(ids)


async def test_a_bad_or_oversized_batch(message_svc: Services) -> None:  # noqa: F811
    empty = await message_svc.internal.Batch(messages_pb2.BatchRequest(items=[
        messages_pb2.BatchItem(),
        _item(get_stats=common_pb2.QueueRef(project=PROJECT, queue="q")),
    ]))
    assert empty.results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert empty.results[1].WhichOneof("result") == "stats"

    too_many = [_item(get_stats=common_pb2.QueueRef(project=PROJECT, queue="q"))] * (
        MAX_ITEMS + 1
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await message_svc.internal.Batch(messages_pb2.BatchRequest(items=too_many))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


class _Unavailable(messages_pb2_grpc.MessagesInternalServicer):
    """Answers every call UNAVAILABLE and counts the attempts."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def InvalidateQueue(self, request: Any, context: Any) -> Any:
        self.calls["InvalidateQueue"] = self.calls.get("InvalidateQueue", 0) + 1
        raise Unavailable("store down")

    async def Batch(self, request: Any, context: Any) -> Any:
        self.calls["Batch"] = self.calls.get("Batch", 0) + 1
        raise Unavailable("store down")


@pytest.fixture
async def unavailable() -> AsyncIterator[tuple[_Unavailable, grpc.aio.Channel]]:
    servicer = _Unavailable()

    def register(server: grpc.aio.Server) -> None:
        messages_pb2_grpc.add_MessagesInternalServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, server)

    server, port, _ = create_server(

        [register], ["zaqar.v2.MessagesInternal"], receiving=Receiving(0), process="test"

    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", None)
    yield servicer, channel
    await channel.close()
    await server.stop(0)


async def test_batch_is_never_retried(
    unavailable: tuple[_Unavailable, grpc.aio.Channel],
) -> None:
    # Given the channel every service opens (retries UNAVAILABLE on internal calls)
    servicer, channel = unavailable
    stub = messages_pb2_grpc.MessagesInternalStub(channel)  # type: ignore[no-untyped-call]

    # When an idempotent internal call and a Batch both meet UNAVAILABLE
    for call, request in ((stub.InvalidateQueue, common_pb2.QueueRef(project="p", queue="q")),
                          (stub.Batch, messages_pb2.BatchRequest())):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(request, timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE

    # Then only the idempotent one was tried again
    await asyncio.sleep(0)
    assert servicer.calls == {"InvalidateQueue": 3, "Batch": 1}


async def test_in_keystone_mode_batch_takes_only_service_tokens(
    keystone_stack: tuple[Settings, Stubs], keystone: Keystone
) -> None:
    # Given message_svc in keystone mode, and a batch naming some project
    _, s = keystone_stack
    batch = messages_pb2.BatchRequest(items=[
        _item(get_stats=common_pb2.QueueRef(project="p", queue="q")),
    ])
    # Then a project's token cannot use it to name another project
    for metadata in ((), token(await keystone.atoken("user-a"))):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.messages_internal.Batch(batch, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # And a service's token (the gateway's) may
    gateway_token = await keystone.atoken("zaqar")
    answer = await s.messages_internal.Batch(batch, metadata=service(gateway_token))
    assert answer.results[0].WhichOneof("result") == "stats"


# MessagesInternal.Exchange: the same items over one long-lived stream ----------------------------


async def test_exchange_answers_each_request_by_its_id_as_batch_does(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    project = "p-" + uuid.uuid4().hex[:8]
    ids = await message_svc.post(*range(4), project=project)
    stream = message_svc.internal.Exchange()

    # When requests go on one stream: posts to 3 queues, 2 claims of 2, a bad item, and an
    # oversized request
    posts = {
        n: _item(post_messages=messages_pb2.PostMessagesRequest(
            project=project, queue=f"x{n}", client_id="c",
            messages=[messages_pb2.NewMessage(body=orjson.dumps(n))]))
        for n in range(3)
    }
    for n, item in posts.items():
        await stream.write(messages_pb2.ExchangeRequest(id=100 + n, items=[item],
                                                        timeout_ms=5000))
    claim = _item(create_claim=messages_pb2.CreateClaimRequest(project=project, queue="q",
                                                               limit=2))
    await stream.write(messages_pb2.ExchangeRequest(id=7, items=[claim, claim]))
    await stream.write(messages_pb2.ExchangeRequest(id=8, items=[messages_pb2.BatchItem()]))
    too_many = [_item(get_stats=common_pb2.QueueRef(project=project, queue="q"))] * (
        MAX_ITEMS + 1
    )
    await stream.write(messages_pb2.ExchangeRequest(id=9, items=too_many))
    await stream.done_writing()
    answers = {response.id: response.results for response in await _read_all(stream)}

    # Then each request was answered once, by its id, with one result per item
    assert sorted(answers) == [7, 8, 9, 100, 101, 102]
    for n in range(3):
        (posted,) = await message_svc.listed(queue=f"x{n}", project=project)
        assert list(answers[100 + n][0].post_messages.ids) == [posted.id]
    claimed = [m.id for r in answers[7] for m in r.claim.messages]
    assert sorted(claimed) == sorted(ids)
    assert answers[8][0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert len(answers[9]) == MAX_ITEMS + 1
    assert {r.error.code for r in answers[9]} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
    assert await stream.code() == grpc.StatusCode.OK


async def test_a_stopping_message_svc_tells_its_streams_and_answers_what_they_send(
    make_settings: Callable[..., Settings],
) -> None:
    """When message_svc begins to stop, each ``Exchange`` stream is told (``draining``);
    what its caller sends before it moves is still answered, and the stream ends, and the
    process stops, once the caller ends its side, not when the grace runs out."""
    queues, messages = await _start_pair(make_settings())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{messages.port}")
    stopped: asyncio.Future[None] | None = None
    try:
        stream = messages_pb2_grpc.MessagesInternalStub(channel).Exchange()  # type: ignore[no-untyped-call]

        def post(n: int) -> messages_pb2.ExchangeRequest:
            return messages_pb2.ExchangeRequest(id=n, items=[_item(
                post_messages=messages_pb2.PostMessagesRequest(
                    project=PROJECT, queue="drained", client_id="c",
                    messages=[messages_pb2.NewMessage(body=orjson.dumps(n))]))])

        # Given a stream in use
        await stream.write(post(1))
        assert (await stream.read()).id == 1
        # When the process begins to stop, with a grace longer than the test may take
        stopped = asyncio.ensure_future(messages.stop(grace=3600))
        # Then the stream is told, by an answer to no request
        notice = await stream.read()
        assert (notice.draining, notice.id, len(notice.results)) == (True, 0, 0)
        # And a request sent before the caller moved is answered as ever
        await stream.write(post(2))
        answer = await stream.read()
        assert answer.id == 2 and not answer.draining
        assert len(answer.results[0].post_messages.ids) == 1
        # And once the caller ends its side, the stream ends well and the process stops
        await stream.done_writing()
        assert await stream.read() is grpc.aio.EOF
        assert await stream.code() == grpc.StatusCode.OK
        await stopped
    finally:
        await channel.close()
        if stopped is None:
            await messages.stop()
        await queues.stop()


async def _read_all(stream: Any) -> list[messages_pb2.ExchangeResponse]:
    """Every answer until message_svc ends the stream."""
    answers = []
    while (response := await stream.read()) is not grpc.aio.EOF:
        answers.append(response)
    return answers


class _Slow(messages_pb2_grpc.MessagesServicer):
    """``PostMessages`` waits ``release`` for queues "hold…", and answers the queue's name."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.cancelled: list[str] = []
        self.gone = asyncio.Event()

    async def PostMessages(self, request: Any, context: Any) -> Any:
        try:
            if request.queue.startswith("hold"):
                await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.append(request.queue)
            self.gone.set()
            raise
        return messages_pb2.PostMessagesResponse(ids=[request.queue])


@contextlib.asynccontextmanager
async def _exchange(messages: Any) -> AsyncIterator[Any]:
    """An ``Exchange`` stream to a message_svc whose ``Messages`` servicer is ``messages``."""

    def register(server: grpc.aio.Server) -> None:
        internal = MessagesInternalServicer(None, messages)
        messages_pb2_grpc.add_MessagesInternalServicer_to_server(  # type: ignore[no-untyped-call]
            internal, server)

    server, port, _ = create_server(

        [register], ["zaqar.v2.MessagesInternal"], receiving=Receiving(0), process="test"

    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", None)
    try:
        yield messages_pb2_grpc.MessagesInternalStub(channel).Exchange()  # type: ignore[no-untyped-call]
    finally:
        await channel.close()
        await server.stop(0)


async def test_exchange_answers_in_the_order_done_and_drops_a_request_past_its_timeout() -> None:
    slow = _Slow()

    async with _exchange(slow) as stream:

        def post(request_id: int, queue: str, timeout_ms: int = 0) -> messages_pb2.ExchangeRequest:
            item = _item(post_messages=messages_pb2.PostMessagesRequest(project="p", queue=queue))
            return messages_pb2.ExchangeRequest(id=request_id, items=[item],
                                                timeout_ms=timeout_ms)

        # Given a request that waits, one that waits past its timeout, and one that does not
        await stream.write(post(1, "hold"))
        await stream.write(post(2, "hold-expiring", timeout_ms=50))
        await stream.write(post(3, "quick"))
        # Then the one that did not wait is answered first
        first = await stream.read()
        assert (first.id, list(first.results[0].post_messages.ids)) == (3, ["quick"])
        # And the expired one was cancelled, and is never answered
        async with asyncio.timeout(10):
            await slow.gone.wait()
        assert slow.cancelled == ["hold-expiring"]
        slow.release.set()
        await stream.done_writing()
        rest = await _read_all(stream)
        assert [(r.id, list(r.results[0].post_messages.ids)) for r in rest] == [(1, ["hold"])]


class _Recording(_Slow):
    """``_Slow``, and the request id each ``PostMessages`` ran with, by queue."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, str | None] = {}
        self.three_gone = asyncio.Event()

    async def PostMessages(self, request: Any, context: Any) -> Any:
        self.ids[request.queue] = REQUEST_ID.get()
        try:
            return await super().PostMessages(request, context)
        finally:
            if len(self.cancelled) == 3:
                self.three_gone.set()


async def test_exchange_items_run_with_their_own_ids_and_all_stop_when_their_request_expires(
) -> None:
    slow = _Recording()

    async with _exchange(slow) as stream:

        def request(request_id: int, queues: list[str], timeout_ms: int = 0
                    ) -> messages_pb2.ExchangeRequest:
            items = [_item(post_messages=messages_pb2.PostMessagesRequest(project="p", queue=q))
                     for q in queues]
            return messages_pb2.ExchangeRequest(
                id=request_id, items=items, timeout_ms=timeout_ms,
                request_ids=[f"req-{uuid.UUID(int=i + 1)}" for i in range(len(queues))],
            )

        # Given three items of one request that answer at once
        await stream.write(request(1, ["a", "b", "c"]))
        first = await stream.read()
        # Then each answered, in order, having run with its own request id
        assert [list(r.post_messages.ids) for r in first.results] == [["a"], ["b"], ["c"]]
        assert slow.ids == {q: f"req-{uuid.UUID(int=i + 1)}" for i, q in enumerate("abc")}
        # Given three items that wait, in a request whose timeout passes
        await stream.write(request(2, ["hold-1", "hold-2", "hold-3"], timeout_ms=50))
        # Then all three are cancelled (the first runs in the request's own task, the others
        # in tasks of their own), and the request is never answered
        async with asyncio.timeout(10):
            await slow.three_gone.wait()
        assert sorted(slow.cancelled) == ["hold-1", "hold-2", "hold-3"]
        await stream.done_writing()
        assert await _read_all(stream) == []
