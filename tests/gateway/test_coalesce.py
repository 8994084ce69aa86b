"""Coalescing of the gateway's calls to message_svc (``services/api_gateway/coalesce.py``).

Through the gateway, with real queue_svc and message_svc in-process: concurrent requests share
``MessagesInternal.Batch`` calls and every one of them gets the HTTP answer it gets without
coalescing. Against a stand-in message_svc (a real gRPC server whose ``Messages`` methods wait
when told to, its ``Batch`` served by message_svc's own ``BatchRunner``): what waits, what is
dropped, what times out, and what an older message_svc without ``Batch`` gets.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import grpc
import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from zaqar_grpc.v2 import messages_pb2, messages_pb2_grpc

from services.api_gateway import exchange as exchange_module
from services.api_gateway.app import create_app
from services.api_gateway.coalesce import CoalescingMessages, Window
from services.api_gateway.errors import api_error_from_rpc
from services.api_gateway.exchange import Exchange
from services.api_gateway.upstream import Upstreams
from services.common.config import ConfigurationError, Settings
from services.common.errors import InvalidArgument, decode_rpc_error
from services.common.grpc_server import create_server, open_channel
from services.common.request_bytes import Receiving
from services.message_svc.batch import BatchRunner, ExchangeRunner
from tests.gateway.conftest import HEADERS, lifespan, new_queue, running_services
from tests.waiting import until


@asynccontextmanager
async def gateway(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Upstreams]]:
    """The gateway app in-process, with its upstreams at hand (for their call counts)."""
    up = Upstreams(settings)
    app = create_app(settings, up)
    async with lifespan(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
            base_url="http://gateway", headers=HEADERS,
        ) as client:
            yield client, up
    await up.close()


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _comparable(resp: httpx.Response, fresh: Mapping[str, str]) -> tuple[int, Any, str | None]:
    """Status, body and Location, with the ``age`` of messages and claims (a clock) left out,
    the names in ``fresh`` (queues made for one run) replaced by their keys, and the ids of
    messages and claims of those queues by their order of appearance."""

    def strip(doc: Any) -> Any:
        if isinstance(doc, dict):
            return {k: strip(v) for k, v in doc.items() if k != "age"}
        if isinstance(doc, list):
            return [strip(v) for v in doc]
        return doc

    text = orjson.dumps([strip(resp.json()) if resp.content else None,
                         resp.headers.get("location")]).decode()
    if any(name in text for name in fresh.values()):
        for key, name in fresh.items():
            text = text.replace(name, key)
        ids: dict[str, str] = {}
        text = _UUID.sub(lambda m: ids.setdefault(m.group(), f"id{len(ids)}"), text)
    body, location = orjson.loads(text)
    return resp.status_code, body, location


async def test_concurrent_requests_share_calls_and_answer_as_alone(
    make_settings: Callable[..., Settings],
) -> None:
    # (the calls wait for the ones in flight however slow the machine: what went together is
    # asserted below)
    async with running_services(make_settings(message_batch_wait=60.0)) as settings:
        single_settings = Settings.load(
            environ={}, overrides={**_fields(settings), "message_batch": False}
        )
        async with gateway(single_settings) as (alone, alone_up), gateway(settings) as (
            together, together_up
        ):
            # Given a queue with claimed and unclaimed messages, and an empty one
            q, empty = new_queue(), new_queue()
            posted = await alone.post(f"/v2/queues/{q}/messages", content=orjson.dumps(
                {"messages": [{"body": {"n": n}, "ttl": 300} for n in range(4)]}))
            a, b, c, _ = [h.rsplit("/", 1)[1] for h in posted.json()["resources"]]
            claimed = await alone.post(f"/v2/queues/{q}/claims?limit=1", json={"ttl": 300})
            claim = claimed.headers["location"].rsplit("/", 1)[1]
            assert [m["id"] for m in claimed.json()["messages"]] == [a]

            # And requests, answered with success or error, that change nothing they share
            # (posts and claims succeed on queues made for each run)
            bogus = uuid.uuid4().hex[:24]

            def probes(fresh: Mapping[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
                return [
                    ("POST", f"/v2/queues/{fresh['post']}/messages",
                     {"json": {"messages": [{"body": 1}, {"body": {"a": [2]}, "ttl": 60}]}}),
                    ("POST", f"/v2/queues/{fresh['claim']}/claims?limit=2", {"json": {}}),
                    ("GET", f"/v2/queues/{q}/messages/{b}", {}),
                    ("GET", f"/v2/queues/{q}/messages/{bogus}", {}),
                    ("GET", f"/v2/queues/{q}/messages?ids={c},{bogus},{b}", {}),
                    ("GET", f"/v2/queues/{q}/messages?ids={bogus}", {}),
                    ("GET", f"/v2/queues/{q}/messages?include_claimed=true&echo=true", {}),
                    ("GET", f"/v2/queues/{q}/messages?limit=5", {}),
                    ("DELETE", f"/v2/queues/{q}/messages/{a}", {}),
                    ("DELETE", f"/v2/queues/{q}/messages/{a}?claim_id={bogus}", {}),
                    ("DELETE", f"/v2/queues/{q}/messages/{b}?claim_id={claim}", {}),
                    ("DELETE", f"/v2/queues/{q}/messages/{bogus}", {}),
                    ("DELETE", f"/v2/queues/{q}/messages?pop=0", {}),
                    ("DELETE", f"/v2/queues/{q}/messages?ids={a}&claim_ids={bogus}", {}),
                    ("GET", f"/v2/queues/{q}/claims/{claim}", {}),
                    ("GET", f"/v2/queues/{q}/claims/{bogus}", {}),
                    ("PATCH", f"/v2/queues/{q}/claims/{bogus}", {"json": {"ttl": 300}}),
                    ("PATCH", f"/v2/queues/{q}/claims/{claim}", {"json": {"ttl": 1}}),
                    ("DELETE", f"/v2/queues/{q}/claims/{bogus}", {}),
                    ("POST", f"/v2/queues/{empty}/claims", {"json": {}}),
                    ("POST", f"/v2/queues/{q}/claims", {"json": {"ttl": 10}}),
                    ("POST", f"/v2/queues/{q}/messages",
                     {"json": {"messages": [{"body": 1, "ttl": 10}]}}),
                    ("POST", f"/v2/queues/{q}/messages",
                     {"json": {"messages": [{"body": "x" * 300_000}]}}),
                    ("GET", f"/v2/queues/{q}/stats", {}),
                ]

            async def fresh_queues() -> dict[str, str]:
                fresh = {"post": new_queue(), "claim": new_queue()}
                resp = await alone.post(f"/v2/queues/{fresh['claim']}/messages",
                                        json={"messages": [{"body": n} for n in range(3)]})
                assert resp.status_code == 201
                return fresh

            # When each is sent alone through a gateway that does not coalesce
            fresh = await fresh_queues()
            one_by_one = [_comparable(await alone.request(m, p, **kw), fresh)
                          for m, p, kw in probes(fresh)]
            # And all at once through one that does
            fresh = await fresh_queues()
            at_once = await asyncio.gather(*(together.request(m, p, **kw)
                                             for m, p, kw in probes(fresh)))

            # Then every answer is the same
            for probe, expected, got in zip(probes(fresh), one_by_one, at_once, strict=True):
                assert _comparable(got, fresh) == expected, probe
            assert {status for status, _, _ in one_by_one} >= {200, 201, 204, 400, 403, 404}
            # And those that reached message_svc (the gateway refuses some itself) went in
            # fewer calls: the first alone, the others together
            stats = together_up.messages.stats
            assert stats.requests >= len(one_by_one) - 2 and stats.batches >= 1
            assert stats.alone + stats.batches < stats.requests / 4
            assert alone_up.messages is not together_up.messages
            assert not isinstance(alone_up.messages, CoalescingMessages)


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__dataclass_fields__}


async def test_requests_one_after_the_other_go_alone(
    make_settings: Callable[..., Settings],
) -> None:
    async with running_services(make_settings()) as settings, gateway(settings) as (client, up):
        queue = new_queue()
        for n in range(5):
            resp = await client.post(f"/v2/queues/{queue}/messages",
                                     json={"messages": [{"body": n}]})
            assert resp.status_code == 201
        stats = up.messages.stats
        assert (stats.requests, stats.alone, stats.batches) == (5, 5, 0)


def test_the_settings_are_checked() -> None:
    for bad in ({"message_batch_max": 1}, {"message_batch_max": 257},
                {"message_batch_in_flight": 0}, {"message_batch_wait": 0.0},
                {"message_batch_wait": 61.0}):
        settings = Settings.load(environ={}, overrides=bad)
        with pytest.raises(ConfigurationError):  # before any channel is opened
            Upstreams(settings)


# Against a stand-in message_svc ----------------------------------------------------------------


class StandIn(messages_pb2_grpc.MessagesServicer):
    """``PostMessages`` answers the queue's name as the id; queues "hold…" wait for
    ``release``, "later…" for ``release_later``, "bad" fails as message_svc fails a bad
    request, "crash" raises."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release_later = asyncio.Event()
        self.alone: list[str] = []
        self.arrived: list[str] = []  # every post that reached it, alone or in a batch

    async def PostMessages(self, request: Any, context: Any) -> Any:
        self.alone.append(request.queue)
        return await self.post(request)

    async def post(self, request: Any) -> Any:
        self.arrived.append(request.queue)
        if request.queue.startswith("hold"):
            await self.release.wait()
        if request.queue.startswith("later"):
            await self.release_later.wait()
        if request.queue == "bad":
            raise InvalidArgument("bad queue")
        if request.queue == "crash":
            raise RuntimeError("crash")
        return messages_pb2.PostMessagesResponse(ids=[request.queue])


class StandInInternal(messages_pb2_grpc.MessagesInternalServicer):
    def __init__(self, messages: StandIn) -> None:
        self.batches: list[list[str]] = []

        class Through(messages_pb2_grpc.MessagesServicer):  # not recorded as alone
            async def PostMessages(self, request: Any, context: Any) -> Any:
                return await messages.post(request)

        self._runner = BatchRunner(Through())

    async def Batch(self, request: Any, context: Any) -> Any:
        self.batches.append([item.post_messages.queue for item in request.items])
        return await self._runner.run(request, context)


MAX_ITEMS = 6
# The stand-ins' calls wait for the ones in flight as long as the tests hold them (the longest
# message_batch_wait), except where a test asks otherwise.
LONGEST_WAIT = 60.0


@pytest.fixture
async def stand_in(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[CoalescingMessages, StandIn, StandInInternal]]:
    """The coalescing stub over a real channel to the stand-in (``with_batch`` param: whether
    it serves ``MessagesInternal.Batch``)."""
    with_batch = getattr(request, "param", True)
    messages = StandIn()
    internal = StandInInternal(messages)

    def register(server: grpc.aio.Server) -> None:
        messages_pb2_grpc.add_MessagesServicer_to_server(  # type: ignore[no-untyped-call]
            messages, server)
        if with_batch:
            messages_pb2_grpc.add_MessagesInternalServicer_to_server(  # type: ignore[no-untyped-call]
                internal, server)

    server, port, _ = create_server(

        [register], ["zaqar.v2.Messages"], receiving=Receiving(0), process="test"

    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", None)
    stub = CoalescingMessages(
        messages_pb2_grpc.MessagesStub(channel),  # type: ignore[no-untyped-call]
        messages_pb2_grpc.MessagesInternalStub(channel),  # type: ignore[no-untyped-call]
        max_items=MAX_ITEMS, max_wait=LONGEST_WAIT,
    )
    yield stub, messages, internal
    messages.release.set()
    messages.release_later.set()
    await stub.close()
    await channel.close()
    await server.stop(0)


def post(stub: CoalescingMessages, queue: str, timeout: float | None = 5.0) -> asyncio.Task[Any]:
    request = messages_pb2.PostMessagesRequest(project="p", queue=queue)
    return asyncio.ensure_future(stub.PostMessages(request, timeout=timeout))


async def settled(*tasks: asyncio.Task[Any]) -> None:
    await asyncio.wait(tasks, timeout=10)


async def test_a_cancelled_or_expired_waiting_call_leaves_the_others_alone(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
) -> None:
    stub, messages, internal = stand_in
    # Given a call in flight that holds the window open
    held = post(stub, "hold")
    await until(lambda: messages.alone == ["hold"])
    # And waiting calls: one that will time out, one whose caller gives up, two more
    expiring = post(stub, "expiring", timeout=0.05)
    cancelled = post(stub, "cancelled")
    first, second = post(stub, "first"), post(stub, "second")
    await asyncio.sleep(0.1)
    cancelled.cancel()
    await asyncio.sleep(0)

    # When the call in flight returns
    messages.release.set()
    await settled(held, first, second)

    # Then the expired call failed alone, as a single call past its deadline does (503)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await expiring
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert api_error_from_rpc(caught.value).status == 503
    assert cancelled.cancelled()
    # And only the two live ones went, together, and got their answers
    assert internal.batches == [["first", "second"]]
    assert [list(t.result().ids) for t in (held, first, second)] == [["hold"], ["first"],
                                                                     ["second"]]
    assert messages.alone == ["hold"]


async def test_what_waited_is_sent_before_the_answered_callers_go_on(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
) -> None:
    """When a call returns, the calls that waited for it are sent before its callers go on
    (to write their HTTP answers): message_svc serves the next batch meanwhile. Both when
    the call that returns went alone and when it was a batch."""
    stub, messages, internal = stand_in
    events: list[str] = []
    batch_call = stub._batch_call

    def recording(request: Any, **options: Any) -> Any:
        events.append("sent " + ",".join(item.post_messages.queue for item in request.items))
        return batch_call(request, **options)

    stub._batch_call = recording

    async def call(queue: str) -> None:
        await stub.PostMessages(messages_pb2.PostMessagesRequest(project="p", queue=queue),
                                timeout=5.0)
        events.append(f"answered {queue}")

    # Given a call in flight alone, and two waiting for it
    alone = asyncio.ensure_future(call("hold"))
    await until(lambda: messages.alone == ["hold"])
    batch = [asyncio.ensure_future(call(q)) for q in ("later-1", "later-2")]
    await until(lambda: len(stub._state.waiting) == 2, what="the two calls wait")
    # When it returns, then the two go (and are held) before its caller goes on
    messages.release.set()
    await until(lambda: internal.batches == [["later-1", "later-2"]], what="the batch")
    await settled(alone)
    assert events.index("sent later-1,later-2") < events.index("answered hold"), events

    # Given two more calls waiting for that batch
    last = [asyncio.ensure_future(call(q)) for q in ("next-1", "next-2")]
    await until(lambda: len(stub._state.waiting) == 2, what="the two calls wait")
    # When the batch returns, then the two go before the batch's callers go on
    messages.release_later.set()
    await settled(*batch, *last)
    sent = events.index("sent next-1,next-2")
    assert sent < events.index("answered later-1") and sent < events.index("answered later-2"), (
        events)


async def test_failed_items_fail_alone_with_their_own_status(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub, messages, internal = stand_in
    held = post(stub, "hold")
    await until(lambda: messages.alone == ["hold"])
    bad, crash, good = post(stub, "bad"), post(stub, "crash"), post(stub, "good")
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.ERROR):
        messages.release.set()
        await settled(held, bad, crash, good)

    assert internal.batches == [["bad", "crash", "good"]]
    assert list(good.result().ids) == ["good"]
    bad_info = decode_rpc_error(bad.exception())
    assert (bad_info.code, bad_info.reason, bad_info.title, bad_info.description) == (
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", "Invalid API request", "bad queue")
    crash_info = decode_rpc_error(crash.exception())
    assert (crash_info.code, crash_info.reason) == (
        grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE")
    assert "unexpected failure in Batch/PostMessages" in caplog.text


async def test_a_batch_takes_the_earliest_deadline_and_at_most_max_items(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
) -> None:
    stub, messages, internal = stand_in
    held = post(stub, "hold", timeout=1.0)
    await until(lambda: messages.alone == ["hold"])
    # Seven wait (one more than max_items): six go at once as a full batch
    waiting = [post(stub, f"hold-{n}", timeout=1.5 if n == 0 else 30.0)
               for n in range(MAX_ITEMS + 1)]
    await until(lambda: internal.batches)
    assert internal.batches == [[f"hold-{n}" for n in range(MAX_ITEMS)]]

    # The full batch had the deadline of its first item: all of it failed with it
    await settled(held, *waiting[:MAX_ITEMS])
    for task in (held, *waiting[:MAX_ITEMS]):
        assert task.exception().code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[union-attr]
    # And the last one went when that call returned, alone, and answers once released
    await until(lambda: len(messages.alone) == 2)
    last = waiting[MAX_ITEMS]
    assert not last.done() and messages.alone == ["hold", f"hold-{MAX_ITEMS}"]
    messages.release.set()
    assert list((await last).ids) == [f"hold-{MAX_ITEMS}"]


@pytest.mark.parametrize("stand_in", [False], indirect=True)
async def test_a_message_svc_without_batch_gets_single_calls(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
    caplog: pytest.LogCaptureFixture,
) -> None:
    stub, messages, _ = stand_in
    held = post(stub, "hold")
    await until(lambda: messages.alone == ["hold"])
    waiting = [post(stub, f"w{n}") for n in range(3)]
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING):
        messages.release.set()
        await settled(held, *waiting)
    assert [list(t.result().ids) for t in waiting] == [["w0"], ["w1"], ["w2"]]
    assert "does not serve MessagesInternal.Batch" in caplog.text
    # And later calls go alone without trying Batch again (for a while)
    more = [post(stub, f"m{n}") for n in range(3)]
    await settled(*more)
    assert sorted(messages.alone) == sorted(["hold", "w0", "w1", "w2", "m0", "m1", "m2"])


# The limit of requests in flight --------------------------------------------------------------


def test_the_window_rises_when_waiting_gathers_nothing_and_probes_back() -> None:
    window = Window(1)
    # Given one request in flight, a second one waits
    assert window.go_now(0, now=0.0)
    assert not window.go_now(1, now=0.0)
    # When waiting calls go one at a time, three times in a row
    for _ in range(Window.LONELY_RUN):
        window.flushed(1)
    # Then the limit rises, and a second request goes at once
    assert window.limit == 2 and window.go_now(1, now=0.1)
    # And a batch brings it down again
    window.flushed(3)
    assert window.limit == 1
    # And after a quiet second a raised limit drops back to see whether waiting pays again
    for _ in range(Window.LONELY_RUN * 2):
        window.flushed(1)
    assert window.limit == 3 and window.go_now(2, now=0.5)
    assert not window.go_now(2, now=0.5 + Window.PROBE_AFTER + 0.01)
    assert window.limit == 1


async def test_two_clients_in_lockstep_stop_waiting(
    stand_in: tuple[CoalescingMessages, StandIn, StandInInternal],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stub, _, _ = stand_in
    monkeypatch.setattr(Window, "PROBE_AFTER", 60.0)  # no probe during the test, however slow

    async def client(name: str) -> None:
        for n in range(50):
            response = await post(stub, f"{name}-{n}")
            assert list(response.ids) == [f"{name}-{n}"]

    # When two clients call one after the other each, concurrently
    await asyncio.gather(client("a"), client("b"))

    # Then only the first few calls waited (each for the other client's), then none
    assert stub.stats.requests == 100
    assert stub.stats.waited <= 2 * Window.LONELY_RUN
    assert stub.window.limit == 2


# On the MessagesInternal.Exchange stream ----------------------------------------------------------


class StreamingInternal(StandInInternal):
    """The stand-in's ``MessagesInternal`` serving ``Exchange`` as message_svc does."""

    def __init__(self, messages: StandIn) -> None:
        super().__init__(messages)
        self.streams = 0
        self._exchange = ExchangeRunner(self._runner)

    async def Exchange(self, request_iterator: Any, context: Any) -> None:
        self.streams += 1
        await self._exchange.serve(context)


class DrainingInternal(StreamingInternal):
    """Serves ``Exchange`` as message_svc does, and can say it is stopping, as message_svc
    does when it begins to stop."""

    def drain(self) -> None:
        self._exchange.drain()


class StoppingInternal(StandInInternal):
    """Its ``Exchange`` streams answer nothing, and end with UNAVAILABLE once ``stop`` is set,
    as a stopping message_svc's do."""

    def __init__(self, messages: StandIn) -> None:
        super().__init__(messages)
        self.stop = asyncio.Event()

    async def Exchange(self, request_iterator: Any, context: Any) -> None:
        await self.stop.wait()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "message_svc is stopping")


@asynccontextmanager
async def streaming_stand_in(
    internal_class: type[StandInInternal], max_wait: float = LONGEST_WAIT,
) -> AsyncIterator[
    tuple[CoalescingMessages, StandIn, StandInInternal, Exchange, grpc.aio.Server]
]:
    messages = StandIn()
    internal = internal_class(messages)

    def register(server: grpc.aio.Server) -> None:
        messages_pb2_grpc.add_MessagesServicer_to_server(  # type: ignore[no-untyped-call]
            messages, server)
        messages_pb2_grpc.add_MessagesInternalServicer_to_server(  # type: ignore[no-untyped-call]
            internal, server)

    server, port, _ = create_server(

        [register], ["zaqar.v2.Messages"], receiving=Receiving(0), process="test"

    )
    await server.start()
    channel = open_channel(f"127.0.0.1:{port}", None)
    internal_stub = messages_pb2_grpc.MessagesInternalStub(channel)  # type: ignore[no-untyped-call]
    exchange = Exchange(internal_stub)
    stub = CoalescingMessages(
        messages_pb2_grpc.MessagesStub(channel),  # type: ignore[no-untyped-call]
        internal_stub, max_items=MAX_ITEMS, exchange=exchange, max_wait=max_wait,
    )
    try:
        yield stub, messages, internal, exchange, server
    finally:
        messages.release.set()
        await stub.close()
        await channel.close()
        await server.stop(0)


@pytest.mark.parametrize("internal_class", [StreamingInternal, StandInInternal],
                         ids=["stream", "unary"])
async def test_a_slow_call_in_flight_holds_the_calls_behind_it_no_longer_than_the_wait(
    internal_class: type[StandInInternal],
) -> None:
    async with streaming_stand_in(internal_class, max_wait=0.05) as (stub, messages, _, _, _):
        # Given a call in flight that does not return (a store that takes seconds to fail)
        held = post(stub, "hold")
        await until(lambda: "hold" in messages.arrived)
        # When more calls come, and the first of them has waited message_batch_wait
        behind = [post(stub, f"behind-{n}") for n in range(3)]
        await settled(*behind)
        # Then they went together, without it, and are answered while it is still in flight
        assert [list(t.result().ids) for t in behind] == [[f"behind-{n}"] for n in range(3)]
        assert not held.done()
        assert stub.stats.overdue == 1 and stub.stats.batches == 1
        # And a call coming while nothing else waits goes after its own wait, as they did
        late = post(stub, "late")
        assert list((await late).ids) == ["late"]
        assert not held.done() and stub.stats.overdue == 2
        messages.release.set()
        assert list((await held).ids) == ["hold"]


async def test_calls_go_on_one_stream_and_answer_and_fail_as_unary_calls() -> None:
    async with streaming_stand_in(StreamingInternal) as (stub, messages, internal, _, _):
        assert isinstance(internal, StreamingInternal)
        # A call alone, then one held with others waiting behind it, one of them bad
        assert list((await post(stub, "first")).ids) == ["first"]
        held = post(stub, "hold")
        await until(lambda: "hold" in messages.arrived)
        waiting = [post(stub, "w0"), post(stub, "bad"), post(stub, "w1")]
        expiring = post(stub, "hold-expiring", timeout=0.05)
        await asyncio.sleep(0.1)
        messages.release.set()
        await settled(held, *waiting, expiring)

        # Every one went on the one stream: no unary Messages call, no Batch call
        assert messages.alone == [] and internal.batches == [] and internal.streams == 1
        assert list(held.result().ids) == ["hold"]
        assert list(waiting[0].result().ids) == ["w0"]
        assert list(waiting[2].result().ids) == ["w1"]
        bad = decode_rpc_error(waiting[1].exception())
        assert (bad.code, bad.description) == (grpc.StatusCode.INVALID_ARGUMENT, "bad queue")
        deadline = expiring.exception()
        assert isinstance(deadline, grpc.aio.AioRpcError)
        assert deadline.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert api_error_from_rpc(deadline).status == 503


async def test_a_message_svc_without_exchange_gets_unary_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with streaming_stand_in(StandInInternal) as (stub, messages, internal, _, _):
        # Each call tries a stream until one ends with UNIMPLEMENTED where the gateway sees it
        # (a write that races that end fails as INTERNAL; that call goes unary all the same).
        firsts: list[str] = []
        with caplog.at_level(logging.WARNING):
            while "does not serve MessagesInternal.Exchange" not in caplog.text:
                assert len(firsts) < 20, "no stream was found missing"
                firsts.append(f"first{len(firsts)}")
                assert list((await post(stub, firsts[-1])).ids) == [firsts[-1]]
        # Later calls go as unary calls (alone, or as Batch) without trying the stream again
        held = post(stub, "hold")
        await until(lambda: "hold" in messages.arrived)
        waiting = [post(stub, "w0"), post(stub, "w1")]
        await asyncio.sleep(0.05)
        messages.release.set()
        await settled(held, *waiting)
        assert [list(t.result().ids) for t in waiting] == [["w0"], ["w1"]]
        assert messages.alone == [*firsts, "hold"]
        assert internal.batches == [["w0", "w1"]]


@pytest.mark.parametrize(("internal_class", "fallback"), [
    pytest.param(StandInInternal, True, id="without-exchange"),
    pytest.param(StoppingInternal, False, id="stopping"),
])
async def test_a_call_whose_stream_ended_before_its_write_goes_once_as_a_unary_call(
    internal_class: type[StandInInternal], fallback: bool, caplog: pytest.LogCaptureFixture,
) -> None:
    """The stream ends while the call waits behind another request's write: the call was
    never sent, so it goes as a unary call instead of failing (UNAVAILABLE would be a 503)."""
    async with streaming_stand_in(internal_class) as (stub, messages, internal, exchange, _):
        stream = exchange._current(asyncio.get_running_loop().time())
        with caplog.at_level(logging.WARNING):
            async with stream.writing:  # another request being written
                posted = post(stub, "q")
                # Nothing between a call's start and its write awaits but the lock
                await until(lambda: stub.stats.requests == 1, what="the call started")
                if isinstance(internal, StoppingInternal):
                    internal.stop.set()
                await stream.call.code()  # the stream has ended
            assert list((await posted).ids) == ["q"]
        assert messages.alone == ["q"]
        assert messages.arrived == ["q"]
        assert stream.failed is not None
        # Only a message_svc without Exchange is left unasked for a while
        assert ("does not serve MessagesInternal.Exchange" in caplog.text) is fallback


async def test_a_gateway_whose_message_svc_stopped_after_saying_so_closes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """message_svc says it is stopping, then stops, and no replica comes back: the stream the
    gateway opened in its place waits for a replica, has nothing written on it, and must not
    hold the gateway's close (which gives streams :data:`CLOSE_WAIT` to end)."""
    async with streaming_stand_in(DrainingInternal) as (stub, _, internal, exchange, server):
        assert isinstance(internal, DrainingInternal)
        assert list((await post(stub, "before")).ids) == ["before"]
        first = exchange._current(asyncio.get_running_loop().time())

        # message_svc stops (taking no new stream) and says so on the open one
        stopping = asyncio.ensure_future(server.stop(60))
        await asyncio.sleep(0)  # (the stop's first step, synchronous, refuses new calls)
        internal.drain()
        await until(lambda: exchange._stream is not first, what="a stream in its place")
        replacement = exchange._stream
        assert replacement is not None and replacement.waits_for_ready
        # The old stream, closed by the gateway, ends, and with it the server
        assert await first.call.code() == grpc.StatusCode.OK
        await stopping

        # The replacement, still waiting for a replica, is cancelled, and close returns
        with monkeypatch.context() as patched:
            patched.setattr(exchange_module, "CLOSE_WAIT", 3600.0)
            async with asyncio.timeout(60):
                await exchange.close()
        assert await replacement.call.code() == grpc.StatusCode.CANCELLED


def streams_left(why: str) -> float:
    """The gateway's count of Exchange streams left because they seemed to hang."""
    value = REGISTRY.get_sample_value("zaqar_exchange_streams_left_total", {"why": why})
    return value or 0.0


class HangingInternal(StreamingInternal):
    """Its first ``Exchange`` stream takes requests and answers none until ``wake`` is set (a
    replica that hangs: stopped, deadlocked, cut off by the network), then serves them; the
    streams after it are served at once, as message_svc serves them."""

    def __init__(self, messages: StandIn) -> None:
        super().__init__(messages)
        self.wake = asyncio.Event()

    async def Exchange(self, request_iterator: Any, context: Any) -> None:
        self.streams += 1
        if self.streams == 1:
            await self.wake.wait()
        await self._exchange.serve(context)


async def test_a_stream_silent_past_a_deadline_is_left_for_a_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(exchange_module, "STALL_AFTER", 1.0)
    async with streaming_stand_in(HangingInternal, max_wait=0.02) as (
            stub, _, internal, exchange, _):
        assert isinstance(internal, HangingInternal)
        # Given a message_svc replica that takes the stream's requests and answers none
        with caplog.at_level(logging.WARNING):
            # A deadline shorter than STALL_AFTER passing does not say that it hangs
            short = post(stub, "short", timeout=0.1)
            await settled(short)
            assert isinstance(short.exception(), grpc.aio.AioRpcError)
            first = exchange._stream
            assert first is not None and not first.stalled
            # When a request's deadline passes with the stream silent for STALL_AFTER
            silent_before = streams_left("silent")
            patient = post(stub, "patient", timeout=30)
            expiring = post(stub, "expiring", timeout=1.5)
            await settled(expiring)
        # Then the request fails as a unary call's would, and the stream is left
        error = expiring.exception()
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert first.stalled and exchange._stream is not first
        assert "Exchange stream seems to hang: it has answered nothing" in caplog.text
        assert streams_left("silent") == silent_before + 1
        # And new calls go on a new stream, answered at once
        assert list((await post(stub, "after")).ids) == ["after"]
        assert internal.streams == 2
        # While the silent stream's other request keeps its own deadline: answered when the
        # replica wakes in time
        assert not patient.done()
        internal.wake.set()
        assert list((await patient).ids) == ["patient"]
        # And the silent stream, closed by the gateway, then ends
        assert await first.call.code() == grpc.StatusCode.OK


async def test_a_write_to_a_replica_that_reads_nothing_waits_no_longer_than_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replica that hangs reads nothing, so once the stream's flow-control window is full
    the writes of further requests wait: each caller still gets its answer at its deadline,
    and new requests go on a new stream."""
    async with streaming_stand_in(HangingInternal, max_wait=0.02) as (stub, _, internal, _, _):
        assert isinstance(internal, HangingInternal)
        body = b'"' + b"x" * (1024 * 1024) + b'"'

        def large(n: int) -> asyncio.Task[Any]:
            request = messages_pb2.PostMessagesRequest(
                project="p", queue=f"large-{n}",
                messages=[messages_pb2.NewMessage(body=body, ttl=60)])
            return asyncio.ensure_future(stub.PostMessages(request, timeout=1.0))

        # Given requests whose bytes are more than the stream's window holds
        unwritten_before = streams_left("unwritten")
        started = asyncio.get_running_loop().time()
        with caplog.at_level(logging.WARNING):
            posts = [large(n) for n in range(24)]
            await asyncio.wait(posts, timeout=30)
        took = asyncio.get_running_loop().time() - started
        # Then every caller got DEADLINE_EXCEEDED at about its deadline, not when it woke
        codes = {t.exception().code() for t in posts  # type: ignore[union-attr]
                 if isinstance(t.exception(), grpc.aio.AioRpcError)}
        assert all(t.done() for t in posts) and codes == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert took < 10, took
        assert "could not be written for the deadline" in caplog.text
        assert streams_left("unwritten") == unwritten_before + 1
        # And a new call goes on a new stream, answered at once
        assert list((await post(stub, "after")).ids) == ["after"]
        assert internal.streams == 2
        internal.wake.set()
