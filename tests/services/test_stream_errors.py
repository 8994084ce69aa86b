"""Server streams through the error interceptor, on a real server from ``create_server``.

grpc.aio serves a server stream from an async generator (our servicers) or from a coroutine
that writes its items (grpcio-health-checking's ``Watch``): both must be served, and a failure
in either ends the stream with the same rich status as a unary call's. A call (stream or unary)
that aborts after its caller has gone is not a failure of the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from services.common.errors import InvalidArgument, decode_rpc_error
from services.common.grpc_server import create_server, open_channel
from services.common.request_bytes import Receiving

SERVICE = "zaqar.test.Streams"


async def yielding(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    if request == b"invalid":
        raise InvalidArgument("That is not a request.")
    if request == b"crash":
        raise RuntimeError("boom")
    yield b"second"


async def writing(request: bytes, context: Any) -> None:
    await context.write(b"first")
    if request == b"invalid":
        raise InvalidArgument("That is not a request.")
    if request == b"crash":
        raise RuntimeError("boom")
    await context.write(b"second")


def register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Yielding": grpc.unary_stream_rpc_method_handler(yielding),
        "Writing": grpc.unary_stream_rpc_method_handler(writing),
        "Aborting": grpc.unary_stream_rpc_method_handler(aborting_when_cancelled),
        "UnaryAborting": grpc.unary_unary_rpc_method_handler(unary_aborting_when_cancelled),
    }),))


@pytest.fixture
async def channel() -> AsyncIterator[tuple[grpc.aio.Channel, Any]]:
    server, port, health = create_server(
        [register], [SERVICE], receiving=Receiving(0), process="test"
    )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    try:
        async with open_channel(f"127.0.0.1:{port}", None) as channel:
            yield channel, health
    finally:
        await server.stop(0)


async def test_the_health_watch_stream_is_served(
    channel: tuple[grpc.aio.Channel, Any],
) -> None:
    chan, health = channel
    watch = health_pb2_grpc.HealthStub(chan).Watch(  # type: ignore[no-untyped-call]
        health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


@pytest.mark.parametrize("method", ["Yielding", "Writing"])
async def test_both_kinds_of_stream_answer_and_fail_alike(
    method: str, channel: tuple[grpc.aio.Channel, Any],
) -> None:
    chan, _ = channel
    call = chan.unary_stream(f"/{SERVICE}/{method}")
    # A stream that ends well
    assert [item async for item in call(b"fine")] == [b"first", b"second"]
    # A service error after an item: the item, then the error's rich status
    stream = call(b"invalid")
    assert await stream.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = decode_rpc_error(caught.value)
    assert error.description == "That is not a request."
    assert error.title == "Invalid API request"  # from the rich status's ErrorInfo
    # Anything else: UNAVAILABLE, naming the kind of failure only
    stream = call(b"crash")
    assert await stream.read() == b"first"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "The service could not complete the request: RuntimeError"


async def aborting_when_cancelled(request: bytes, context: Any) -> AsyncIterator[bytes]:
    """A stream that, ended by its caller, still says why it ends, as a service that stops
    while its caller goes away does (notifier_svc's ``Watch`` when message_svc stops too)."""
    yield b"first"
    await abort_when_cancelled(context)


async def unary_aborting_when_cancelled(request: bytes, context: Any) -> bytes:
    await abort_when_cancelled(context)
    return b"never"


async def abort_when_cancelled(context: Any) -> None:
    STARTED.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        try:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "The service is stopping.")
        except BaseException as error:
            ABORTS.append(type(error).__name__)
            raise
        finally:
            ABORTED.set()


ABORTS: list[str] = []
STARTED = asyncio.Event()
ABORTED = asyncio.Event()


def handled(method: str, code: str) -> float:
    return REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
    ) or 0.0


@pytest.mark.parametrize("method", ["Aborting", "UnaryAborting"])
async def test_a_call_whose_caller_left_while_it_aborted_is_not_a_failure(
    method: str, channel: tuple[grpc.aio.Channel, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a call that aborts once it is told to end
    chan, _ = channel
    caplog.set_level(logging.DEBUG)
    ABORTS.clear()
    STARTED.clear()
    ABORTED.clear()
    cancelled = handled(method, "CANCELLED")
    call: Any
    if method == "Aborting":
        call = chan.unary_stream(f"/{SERVICE}/{method}")(b"")
        assert await call.read() == b"first"
    else:
        call = chan.unary_unary(f"/{SERVICE}/{method}")(b"")
        await asyncio.wait_for(STARTED.wait(), 30)
    # When its caller cancels it, so that its abort's status can no longer be sent
    call.cancel()
    await asyncio.wait_for(ABORTED.wait(), 30)
    # Then grpc refused that status (the case this covers)...
    assert ABORTS == ["ExecuteBatchError"]
    # ...and the call is counted as cancelled (in the same step as the refusal), with
    # nothing logged as an error: no traceback of an "unexpected failure", no second abort
    assert handled(method, "CANCELLED") == cancelled + 1
    assert handled(method, "UNAVAILABLE") == 0
    for _ in range(10):  # let grpc end the call
        await asyncio.sleep(0)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [], [r.getMessage() for r in warnings]


def _refused(logger: logging.Logger) -> None:
    """What grpc.aio logs when the answer of a call whose servicer returned could not be sent
    (its caller had reset the call: the fuzzer's gRPC family met it when an ``OpenBodies``
    answer of 6 MB went over its client's 4 MiB receive bound)."""
    try:
        raise RuntimeError("stand-in for grpc._cython.cygrpc.ExecuteBatchError")
    except RuntimeError:
        # (grpc formats the line itself: no arguments)
        logger.exception("ExecuteBatchError raised in core by servicer method [/a/B]")


@pytest.mark.parametrize("level", [logging.INFO, logging.DEBUG])
async def test_grpcs_refusal_to_send_an_answer_is_not_an_error(
    level: int, channel: tuple[grpc.aio.Channel, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a process serving gRPC (``create_server`` installs the filter)
    caplog.set_level(level)
    logger = logging.getLogger("grpc._cython.cygrpc")
    # When grpc.aio says it could not send an answer, and says something else
    _refused(logger)
    logger.error("Something else [%s]", "/a/B")
    # Then the first is one DEBUG line without a traceback (at INFO: nothing), the other as is
    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records
             if r.name == logger.name and "/a/B" in r.getMessage()]
    gone = [("DEBUG", "the caller of /a/B left before its answer could be sent", None)]
    assert lines == (gone if level == logging.DEBUG else []) + [
        ("ERROR", "Something else [/a/B]", None)]
