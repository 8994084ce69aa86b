"""The bytes of requests a gRPC service process holds are bounded, and a request that is not
a valid message is refused as such (``request_bytes.py``).

First the rule, on a server built by ``create_server`` (the servers of every service are) with
methods that hold their calls until the test lets them go: large requests past the bound are
refused at once with UNAVAILABLE, reason RECEIVING_FULL; small ones always pass; one large
request always passes when no other is held; what a call held is given back when it ends,
answered, failed, cancelled, or a stream closed. Then each gRPC service of ``zaqar-grpc``
(generated from the CLI's list), through its own ``start``: the bound is its
``grpc_max_receiving_bytes``. Real servers over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from services.cli import SERVICES
from services.common.config import Settings
from services.common.errors import decode_rpc_error
from services.common.grpc_server import create_server
from services.common.grpc_types import Context
from services.common.request_bytes import ALLOWANCE, Receiving
from tests.waiting import until

WITHIN = 30.0
KIB = 1024
LARGE = 100 * KIB  # over the 64 KiB allowance
BOUND = 250 * KIB  # two large requests fit, a third does not


class Held:
    """``t.Held/Hold`` answers the size of its request once ``go`` is set; ``t.Held/Fail``
    fails once it is; ``t.Held/Items`` streams one item, then holds the stream until
    ``go``."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.entered = 0

    async def hold(self, request: bytes, context: Context) -> bytes:
        self.entered += 1
        await self.go.wait()
        return str(len(request)).encode()

    async def fail(self, request: bytes, context: Context) -> bytes:
        self.entered += 1
        await self.go.wait()
        raise RuntimeError("failed after holding")

    async def items(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        self.entered += 1
        yield b"first"
        await self.go.wait()
        yield b"last"

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Held", {
            "Hold": grpc.unary_unary_rpc_method_handler(self.hold),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Items": grpc.unary_stream_rpc_method_handler(self.items),
        }),))


async def _served(bound: int) -> tuple[grpc.aio.Server, grpc.aio.Channel, Held, Receiving]:
    held, receiving = Held(), Receiving(bound)
    server, port, _ = create_server([held.register], ["t.Held"], receiving=receiving,
                                    process="test_svc")
    await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), held, receiving


def _hold(channel: grpc.aio.Channel, size: int, method: str = "Hold") -> asyncio.Future[Any]:
    call = channel.unary_unary(f"/t.Held/{method}")(b"x" * size, timeout=WITHIN)
    return asyncio.ensure_future(call)


async def _refused(channel: grpc.aio.Channel, size: int) -> str:
    """The description of the refusal of a request of ``size`` bytes (fails if it is not
    refused RECEIVING_FULL, at once)."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        async with asyncio.timeout(WITHIN):
            await channel.unary_unary("/t.Held/Hold")(b"x" * size, timeout=WITHIN)
    info = decode_rpc_error(refused.value)
    assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "RECEIVING_FULL")
    return info.description


async def test_large_requests_past_the_bound_are_refused_and_small_ones_pass() -> None:
    server, channel, held, receiving = await _served(BOUND)
    try:
        # Given two large requests held (200 KiB of a 250 KiB bound)
        first, second = _hold(channel, LARGE), _hold(channel, LARGE)
        await until(lambda: receiving.held == 2 * LARGE, WITHIN, lambda: f"{receiving.held}")
        # When a third large one comes, it is refused at once, its method never run
        description = await _refused(channel, LARGE)
        assert held.entered == 2
        assert "test_svc" in description and "grpc_max_receiving_bytes" in description
        assert f"{LARGE} bytes" in description
        # And a small request still passes the full process, and is counted
        small = _hold(channel, 1 * KIB)
        await until(lambda: held.entered == 3, WITHIN, "the small request's method runs")
        assert receiving.held == 2 * LARGE + KIB
        # Then, answered, every call gives its bytes back, and a large one passes again
        held.go.set()
        async with asyncio.timeout(WITHIN):
            assert [await first, await second, await small] == [
                str(LARGE).encode(), str(LARGE).encode(), str(KIB).encode()]
            assert await channel.unary_unary("/t.Held/Hold")(b"x" * LARGE) == str(LARGE).encode()
        assert (receiving.held, receiving.large) == (0, 0)
    finally:
        await channel.close()
        await server.stop(None)


async def test_one_large_request_passes_a_bound_set_lower_than_it() -> None:
    server, channel, held, receiving = await _served(LARGE)
    try:
        # Given small requests held, over the bound together
        smalls = [_hold(channel, ALLOWANCE) for _ in range(3)]
        await until(lambda: held.entered == 3, WITHIN, "three small requests held")
        # When a request of three times the bound comes, it is the only large one: it passes
        big = _hold(channel, 3 * LARGE)
        await until(lambda: held.entered == 4, WITHIN, "the large request's method runs")
        assert receiving.held == 3 * ALLOWANCE + 3 * LARGE
        # But a second large one is refused while it is held
        await _refused(channel, ALLOWANCE + 1)
        held.go.set()
        async with asyncio.timeout(WITHIN):
            await asyncio.gather(big, *smalls)
        assert (receiving.held, receiving.large) == (0, 0)
    finally:
        await channel.close()
        await server.stop(None)


async def test_failed_cancelled_and_streamed_calls_give_their_bytes_back() -> None:
    server, channel, held, receiving = await _served(4 * LARGE)
    try:
        # Given a call that will fail, one its caller cancels, and a stream held open
        failing = _hold(channel, LARGE, "Fail")
        cancelled = _hold(channel, LARGE)
        stream = channel.unary_stream("/t.Held/Items")(b"x" * LARGE, timeout=WITHIN)
        async with asyncio.timeout(WITHIN):
            assert await stream.read() == b"first"
        await until(lambda: receiving.held == 3 * LARGE, WITHIN, lambda: f"{receiving.held}")
        # When the caller cancels one, its bytes are given back
        cancelled.cancel()
        await until(lambda: receiving.held == 2 * LARGE, WITHIN, lambda: f"{receiving.held}")
        # And the stream holds its request until it ends; the failed call gives its back too
        held.go.set()
        async with asyncio.timeout(WITHIN):
            assert await stream.read() == b"last"
            assert await stream.read() is grpc.aio.EOF
            with pytest.raises(grpc.aio.AioRpcError):
                await failing
        await until(lambda: (receiving.held, receiving.large) == (0, 0), WITHIN,
                    lambda: f"{receiving.held}, {receiving.large}")
    finally:
        await channel.close()
        await server.stop(None)


async def test_no_bound_counts_and_refuses_nothing() -> None:
    server, channel, held, receiving = await _served(0)
    try:
        calls = [_hold(channel, LARGE) for _ in range(4)]
        await until(lambda: held.entered == 4, WITHIN, "four large requests held")
        assert receiving.held == 4 * LARGE
        held.go.set()
        async with asyncio.timeout(WITHIN):
            await asyncio.gather(*calls)
    finally:
        await channel.close()
        await server.stop(None)


# A field number no request of ours uses: kept as an unknown field, so any request can be made
# as large as a test needs without changing what it asks.
_PAD_TAG = bytes([0xC2, 0x3E])  # field 1000, wire type 2 (length-delimited), as a varint


def padded(request: bytes, size: int) -> bytes:
    length, out = size, bytearray()
    while length > 0x7F:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return request + _PAD_TAG + bytes(out) + b"p" * size


GRPC_SERVICES = [name for name, (_, _, grpc_health) in SERVICES.items() if grpc_health]


@pytest.mark.parametrize("service", GRPC_SERVICES)
async def test_every_service_bounds_the_requests_it_holds(
    service: str, make_settings: Callable[..., Settings]
) -> None:
    import importlib

    module = importlib.import_module(SERVICES[service][0])
    running = await module.start(make_settings(grpc_max_receiving_bytes=1))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        check = health_pb2.HealthCheckRequest(service="").SerializeToString()
        watch_call = channel.unary_stream(
            "/grpc.health.v1.Health/Watch",
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        check_call = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        # Given a health watch whose request is over the allowance, held open (its own service's
        # handler, a coroutine that writes; one large request always passes)
        watch = watch_call(padded(check, LARGE), timeout=WITHIN)
        async with asyncio.timeout(WITHIN):
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            # Then a large check is refused RECEIVING_FULL, naming the service and the setting
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check_call(padded(check, LARGE), timeout=WITHIN)
            info = decode_rpc_error(refused.value)
            assert (info.code, info.reason) == (grpc.StatusCode.UNAVAILABLE, "RECEIVING_FULL")
            assert f"{service}_svc" in info.description
            # And a small one passes
            assert (await check_call(check)).status == health_pb2.HealthCheckResponse.SERVING
            # And a request that is not a valid message of its type is refused as such, not
            # answered UNKNOWN with protobuf's error (and logged as a crash) as gRPC would
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await check_call(b"\xff\xff\xff", timeout=WITHIN)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert malformed.value.details() == (
                "The request is not a valid grpc.health.v1.HealthCheckRequest message.")
        # When the watch ends, the large check passes
        watch.cancel()

        async def large_check_passes() -> bool:
            try:
                await check_call(padded(check, LARGE), timeout=WITHIN)
            except grpc.aio.AioRpcError as exc:
                assert decode_rpc_error(exc).reason == "RECEIVING_FULL"
                return False
            return True

        await until(large_check_passes, WITHIN, "a large check after the watch ended")
    finally:
        await channel.close()
        await running.stop()


async def test_a_malformed_request_on_a_stream_of_requests_is_refused_as_such(
    make_settings: Callable[..., Settings],
) -> None:
    from services.message_svc import server as message_server

    running = await message_server.start(make_settings())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stream = channel.stream_stream("/zaqar.v2.MessagesInternal/Exchange")(timeout=WITHIN)
        await stream.write(b"\x0a\xff\xff\xff\x0f")  # a length past the end
        await stream.done_writing()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async with asyncio.timeout(WITHIN):
                async for _ in stream:
                    pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details() == (
            "The request is not a valid zaqar.v2.ExchangeRequest message.")
    finally:
        await channel.close()
        await running.stop()
