"""How a service passes on the failure of a call it makes to another service
(``services.common.errors.upstream_call``), against real servers over real sockets.

The rule denies by default: only what an upstream service of ours said itself reaches the
caller. An UNAVAILABLE it answered keeps its own account; a 4xx it answered about the
caller's request is passed on only by a call that carries that request (``relay=True``);
everything else, including a 4xx where none is expected, is a 503 saying that a backing
service did not answer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc, queues_pb2, queues_pb2_grpc

from services.common.config import Settings
from services.common.errors import (
    NOT_ANSWERED,
    ServiceError,
    Unavailable,
    decode_rpc_error,
    upstream_call,
)
from services.common.grpc_server import Running
from services.message_svc import server as message_server
from services.queue_svc import server as queue_server
from tests.servers import free_port, redis_process

pytestmark = pytest.mark.asyncio

PROJECT = "p"
Code = grpc.StatusCode


@pytest.fixture
async def queue_svc(make_settings: Callable[..., Settings]) -> AsyncIterator[Running]:
    running = await queue_server.start(make_settings())
    yield running
    await running.stop()


async def _get_queue(port: int, queue: str, *, relay: bool) -> Any:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = queues_pb2_grpc.QueuesStub(channel)
        return await upstream_call(
            stub.GetQueue(queues_pb2.GetQueueRequest(project=PROJECT, queue=queue), timeout=5),
            f"queue_svc at 127.0.0.1:{port}", f"The metadata of queue {queue} could not be read.",
            relay=relay,
        )


async def test_a_4xx_about_the_callers_request_is_passed_on_as_it_came(
    queue_svc: Running,
) -> None:
    # When queue_svc judges the name of the caller's queue, and the call relays
    with pytest.raises(ServiceError) as caught:
        await _get_queue(queue_svc.port, "not a name", relay=True)
    # Then the caller gets queue_svc's own 400: code, reason, title and description
    err = caught.value
    assert (err.code, err.reason, err.title) == (
        Code.INVALID_ARGUMENT, "INVALID_QUEUE_NAME", "Invalid queue identification"
    )
    assert err.description == (
        "The format of the submitted queue name or project id is not valid."
    )
    assert not isinstance(err, Unavailable)


async def test_a_4xx_where_none_is_expected_is_unavailable_and_logged_as_an_error(
    queue_svc: Running, caplog: pytest.LogCaptureFixture
) -> None:
    # When the same answer comes to a call that carries no request of the caller's
    with caplog.at_level(logging.ERROR, logger="services.common.errors"), \
            pytest.raises(Unavailable) as caught:
        await _get_queue(queue_svc.port, "not a name", relay=False)
    # Then it is a 503 (the services disagree), and the log says what queue_svc answered
    assert caught.value.description == (
        f"The metadata of queue not a name could not be read. {NOT_ANSWERED}"
    )
    assert caught.value.reason == "STORE_UNAVAILABLE"
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert "answered INVALID_ARGUMENT (INVALID_QUEUE_NAME" in logged[0]


async def test_an_upstream_that_does_not_answer_is_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # When nothing listens on the upstream's port
    port = free_port()
    with caplog.at_level(logging.WARNING, logger="services.common.errors"), \
            pytest.raises(Unavailable) as caught:
        await _get_queue(port, "q", relay=True)
    # Then a 503 that says so, with no detail of the channel's for the caller
    assert caught.value.description == (
        f"The metadata of queue q could not be read. {NOT_ANSWERED}"
    )
    assert str(port) not in caught.value.description
    # and the log names the upstream, with gRPC's code
    assert any(f"queue_svc at 127.0.0.1:{port}" in r.getMessage() and "UNAVAILABLE" in
               r.getMessage() for r in caplog.records)


async def test_a_4xx_from_a_server_that_is_not_ours_is_unavailable() -> None:
    # Given a gRPC server of somebody else's (no error details of ours) that refuses the call
    async def refuse(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        await context.abort(Code.INVALID_ARGUMENT, "no such thing here")
        raise AssertionError("abort returns no value")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "zaqar.v2.Queues", {"GetQueue": grpc.unary_unary_rpc_method_handler(refuse)},
    ),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        # When a call that relays 4xx gets its answer
        with pytest.raises(Unavailable) as caught:
            await _get_queue(port, "q", relay=True)
    finally:
        await server.stop(None)
    # Then it is not taken for a judgement of the caller's request
    assert caught.value.description == (
        f"The metadata of queue q could not be read. {NOT_ANSWERED}"
    )
    assert "no such thing" not in caught.value.description


async def test_a_post_while_the_queue_store_is_down_says_why(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    # Given queue_svc on a Redis queue store and message_svc on its own SQLite store
    with redis_process(tmp_path / "redis") as redis:
        settings = make_settings(queue_store=f"redis://127.0.0.1:{redis.port}/0",
                                 metadata_cache_ttl=0)
        queues = await queue_server.start(settings)
        messages = await message_server.start(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{messages.port}") as channel:
                stub = messages_pb2_grpc.MessagesStub(channel)

                def post(queue: str) -> Any:
                    return stub.PostMessages(messages_pb2.PostMessagesRequest(
                        project=PROJECT, queue=queue, client_id="c",
                        messages=[messages_pb2.NewMessage(body=b"1")],
                    ))

                assert len((await post("first")).ids) == 1
                # When the queue store goes away and a post needs a queue's metadata
                redis.kill()
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await post("second")
        finally:
            await messages.stop()
            await queues.stop()
    # Then the 503 gives queue_svc's own account after what failed, not "did not answer"
    info = decode_rpc_error(caught.value)
    assert info.code == Code.UNAVAILABLE
    assert info.description.startswith("The metadata of queue second could not be read. ")
    assert NOT_ANSWERED not in info.description
    assert "queue store" in info.description.lower()
