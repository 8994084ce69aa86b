"""A service always stops: a clean-up step that loses its cancellation (a driver that turns it
into an error, a retry loop that takes that error for a failure to retry) neither holds
``Running.stop`` past its time limit nor keeps a periodic task running for ever."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from services.common import grpc_server
from services.common.config import Settings
from services.common.errors import Unavailable
from services.common.sweeper import Sweeper
from services.message_svc import server as message_server
from services.message_svc.storage.registry import open_store

# Only how long a broken test waits before it fails (a hang would otherwise hold the session).
WITHIN = 60.0


async def test_a_clean_up_that_ignores_its_cancellation_does_not_hold_stop(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a running message_svc whose clean-up, once it has closed everything, keeps
    # retrying whatever it is told, cancellations included
    monkeypatch.setattr(grpc_server, "CLOSE_TIMEOUT", 0.5)
    running = await message_server.start(make_settings())
    release, cancelled = asyncio.Event(), asyncio.Event()
    close = running.close

    async def stubborn() -> None:
        await close()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                cancelled.set()

    running.close = stubborn
    try:
        # When the service is stopped, Then stop returns: the clean-up was cancelled, and is
        # left to end in the background
        async with asyncio.timeout(WITHIN):
            await running.stop()
            await cancelled.wait()
    finally:
        release.set()


class LosesCancellation:
    """A real message store whose expiry sweep, when cancelled, fails with a store error
    instead (as a driver does that tears its connection down on a cancellation and reports
    the broken connection)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.sweeps = 0
        self.under_way = asyncio.Event()

    async def collect_garbage(self) -> int:
        store = await open_store(self.uri)
        try:
            self.sweeps += 1
            self.under_way.set()
            await asyncio.Event().wait()  # a sweep that takes long: stop finds it under way
            return await store.collect_garbage()
        except asyncio.CancelledError:
            raise Unavailable("The message store could not collect garbage.") from None
        finally:
            await store.close()


async def test_a_sweeper_stops_when_its_store_loses_the_cancellation(
    make_settings: Callable[..., Settings],
) -> None:
    # Given a sweeper whose sweep is under way on a store that loses cancellations
    store = LosesCancellation(make_settings().store_uri("message"))
    sweeper = Sweeper(store, 0.01)
    sweeper.start()
    async with asyncio.timeout(WITHIN):
        await store.under_way.wait()
        # When it is stopped, Then it stops, and sweeps no more
        await sweeper.stop()
    assert store.sweeps == 1
