"""Messages.StreamingPull over real gRPC: claims as messages arrive, at most max_outstanding
unacknowledged per stream, acks (DeleteMessage with the claim id) let more flow, and a
cancelled stream's claims go back to the queue at once."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import orjson
from zaqar_grpc.v2 import common_pb2, messages_pb2

from tests.services.test_message_svc import (  # noqa: F401 - fixtures
    PROJECT,
    Services,
    invalid,
    message_svc,
    message_svc_factory,
    rpc_error,
)

MAX_OUTSTANDING = "Max outstanding must be at least 1 and may not be greater than 100."
CLAIM_TTL = (
    "The TTL for a claim may not exceed 43200 seconds, and must be at least 60 seconds long."
)


def pull(svc: Services, queue: str = "q", **kw: Any) -> Any:
    return svc.messages.StreamingPull(
        messages_pb2.StreamingPullRequest(project=PROJECT, queue=queue, **kw)
    )


class Reader:
    """Reads a stream; a read left pending is kept for the next (cancelling a read would
    cancel the call)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._next: asyncio.Future[Any] | None = None

    def _read(self) -> asyncio.Future[Any]:
        if self._next is None:
            self._next = asyncio.ensure_future(self.call.read())
        return self._next

    async def take(self, count: int) -> list[Any]:
        """The next responses until ``count`` messages came."""
        got: list[Any] = []
        while sum(len(r.messages) for r in got) < count:
            got.append(await asyncio.wait_for(asyncio.shield(self._read()), 10))
            self._next = None
        return got

    async def nothing_more(self, svc: Services) -> None:
        """Nothing comes while the stream is full: a read started now is still pending after
        round trips to the service (and the queue's claimed count did not grow)."""
        read = self._read()
        await svc.listed()
        await asyncio.sleep(0)
        assert not read.done()

    def cancel(self) -> None:
        self.call.cancel()
        if self._next is not None:
            self._next.cancel()


def pulling(svc: Services, queue: str = "q", **kw: Any) -> Reader:
    return Reader(pull(svc, queue, **kw))


def bodies(responses: list[Any]) -> list[Any]:
    return [orjson.loads(m.body) for r in responses for m in r.messages]


async def test_a_stream_receives_messages_as_they_are_posted(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    stream = pulling(message_svc, ttl=60)
    try:
        await message_svc.post({"n": 1})
        first = await stream.take(1)
        await message_svc.post({"n": 2}, {"n": 3})
        later = await stream.take(2)
    finally:
        stream.cancel()

    assert bodies(first) == [{"n": 1}]
    assert bodies(later) == [{"n": 2}, {"n": 3}]
    for response in first + later:
        assert response.claim_id and response.claim_ttl == 60
        assert all(m.claim_id == response.claim_id for m in response.messages)


async def test_never_more_than_max_outstanding_and_acks_let_more_flow(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    await message_svc.post(*range(5))
    stream = pulling(message_svc, max_outstanding=2)
    try:
        got = await stream.take(2)
        assert bodies(got) == [0, 1]
        # Full: the rest stays in the queue, claimable by others
        await stream.nothing_more(message_svc)
        stats = await message_svc.messages.GetStats(
            common_pb2.QueueRef(project=PROJECT, queue="q")
        )
        assert (stats.claimed, stats.free) == (2, 3)

        # When one is acknowledged, exactly one more flows
        first = got[0].messages[0]
        await message_svc.messages.DeleteMessage(messages_pb2.DeleteMessageRequest(
            project=PROJECT, queue="q", message_id=first.id, claim_id=first.claim_id,
        ))
        more = await stream.take(1)
        assert bodies(more) == [2]
        await stream.nothing_more(message_svc)

        # Releasing the stream's claim frees its places too (the message goes back)
        await message_svc.messages.DeleteClaim(messages_pb2.DeleteClaimRequest(
            project=PROJECT, queue="q", claim_id=more[0].claim_id,
        ))
        again = await stream.take(1)
        assert bodies(again) in ([2], [3])
    finally:
        stream.cancel()


async def test_cancelling_a_stream_releases_its_claims(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    await message_svc.post("a", "b", "c")
    stream = pulling(message_svc, max_outstanding=3)
    got = await stream.take(3)
    assert bodies(got) == ["a", "b", "c"]

    stream.cancel()

    # Another consumer gets them as soon as they are released (a waiting claim is woken)
    claim = await message_svc.claim(wait_seconds=5)
    assert sorted(orjson.loads(m.body) for m in claim.messages) == ["a", "b", "c"]


async def test_out_of_range_arguments_are_invalid(
    message_svc: Services,  # noqa: F811 - fixture
) -> None:
    for value in (0, 101, -1):
        invalid(await rpc_error(_first(pull(message_svc, max_outstanding=value))),
                MAX_OUTSTANDING)
    invalid(await rpc_error(_first(pull(message_svc, ttl=10))), CLAIM_TTL)


async def _first(call: Any) -> Any:
    response = await call.read()
    if response is grpc.aio.EOF:
        await call  # raises the stream's status
    return response
