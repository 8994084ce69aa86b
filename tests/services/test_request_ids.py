"""Request ids across gRPC calls: the client wrapper sends the current task's id as metadata,
the server's error interceptor sets it for the method it runs (services/common/logs.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from services.common.grpc_server import create_server
from services.common.logs import REQUEST_ID, REQUEST_ID_KEY
from services.common.metrics import instrumented
from services.common.request_bytes import Receiving

GIVEN = "req-" + str(uuid.uuid4())
SERVICE = "test.Echo"


def _identity(value: bytes) -> bytes:
    return value


class EchoStub:
    """A stub whose one unary method answers what the server saw (as the generated ones)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.Seen = channel.unary_unary(
            f"/{SERVICE}/Seen", request_serializer=_identity, response_deserializer=_identity
        )


async def seen(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """The request id the method runs with, and every value of the metadata key."""
    sent = [v for k, v in context.invocation_metadata() or () if k == REQUEST_ID_KEY]
    return f"{REQUEST_ID.get()}|{','.join(sent)}".encode()


def register(server: grpc.aio.Server) -> None:
    handler = grpc.unary_unary_rpc_method_handler(
        seen, request_deserializer=_identity, response_serializer=_identity
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {"Seen": handler})]
    )


@pytest.fixture
async def echo() -> AsyncIterator[EchoStub]:
    server, port, _ = create_server(
        [register], [SERVICE], receiving=Receiving(0), process="test"
    )
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield instrumented(EchoStub(channel))
    finally:
        await channel.close()
        await server.stop(0)


async def call_with(stub: EchoStub, request_id: str | None, **options: Any) -> str:
    async def call() -> str:
        REQUEST_ID.set(request_id)
        answer: bytes = await stub.Seen(b"", timeout=5, **options)
        return answer.decode()

    return await asyncio.get_running_loop().create_task(call())


async def test_the_request_id_goes_with_the_call_and_is_set_for_the_method(
    echo: EchoStub,
) -> None:
    assert await call_with(echo, GIVEN) == f"{GIVEN}|{GIVEN}"


async def test_a_call_outside_of_a_request_carries_none(echo: EchoStub) -> None:
    assert await call_with(echo, None) == "None|"


async def test_the_callers_own_metadata_is_kept(echo: EchoStub) -> None:
    # Given a call with metadata of its own (as a tuple, and as grpc.aio.Metadata)
    for metadata in ((("client-id", "c"),), grpc.aio.Metadata(("client-id", "c"))):
        assert await call_with(echo, GIVEN, metadata=metadata) == f"{GIVEN}|{GIVEN}"


async def test_a_malformed_id_from_a_caller_is_not_taken(echo: EchoStub) -> None:
    # Given a gRPC caller that sends a value that is not a request id
    answer = await echo.Seen(b"", timeout=5, metadata=((REQUEST_ID_KEY, "req-1 x"),))
    assert answer.decode() == "None|req-1 x"


async def test_calls_of_concurrent_requests_keep_their_own_ids(echo: EchoStub) -> None:
    ids = ["req-" + str(uuid.uuid4()) for _ in range(20)]
    answers = await asyncio.gather(*(call_with(echo, i) for i in ids))
    assert answers == [f"{i}|{i}" for i in ids]
