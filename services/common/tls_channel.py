"""A gRPC channel that follows the process's TLS material when its files are rotated.

A channel's credentials are fixed when it is made, so a new certificate, key or CA needs a new
channel. :class:`ReloadingChannel` keeps the stubs made on it working across that: each call
goes on the channel of the newest material (:attr:`Tls.generation <services.common.tls.Tls>`
compared per call), and the channel of the material before takes no new calls and is closed
with a grace of :data:`RETIRE_GRACE` seconds, so that what runs on it (a long poll, an
``Exchange`` stream until its rotation) ends there. The files are looked at in the background
(:meth:`Tls.watch <services.common.tls.Tls.watch>`). docs/architecture.md, "TLS between
services".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

import grpc

from services.common.tls import Tls

# Seconds the calls already on a channel of older material get to end before it is closed: a
# long poll (at most 30 s) and an Exchange stream (rotated every 60 s) end within it.
RETIRE_GRACE: Final = 120.0


class _Method:
    """A stub's method: each call goes on the channel of the newest material."""

    __slots__ = ("_args", "_channel", "_kind", "_kwargs", "_owner", "_real")

    def __init__(self, owner: ReloadingChannel, kind: str, args: Any, kwargs: Any) -> None:
        self._owner, self._kind, self._args, self._kwargs = owner, kind, args, kwargs
        self._channel: grpc.aio.Channel | None = None
        self._real: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        channel = self._owner.current()
        if channel is not self._channel:
            self._real = getattr(channel, self._kind)(*self._args, **self._kwargs)
            self._channel = channel
        return self._real(*args, **kwargs)


class ReloadingChannel(grpc.aio.Channel):
    """A channel opened by ``open_`` again each time ``tls`` has new material (module
    docstring)."""

    def __init__(
        self,
        open_: Callable[[], grpc.aio.Channel],
        tls: Tls,
        grace: float = RETIRE_GRACE,
    ) -> None:
        self._open = open_
        self._tls = tls
        self._grace = grace
        self._generation = tls.generation
        self._channel = open_()
        tls.watch()
        self._retiring: dict[grpc.aio.Channel, asyncio.Task[None]] = {}

    @property
    def generation(self) -> int:
        """The generation of the material the current channel was opened with."""
        return self._generation

    def current(self) -> grpc.aio.Channel:
        """The channel new calls go on: reopened first when the material changed."""
        tls = self._tls
        if tls.generation != self._generation:
            self._reopen()
        elif tls.due():
            tls.watch()  # the channel was made outside an event loop: its watcher starts now
        return self._channel

    def _reopen(self) -> None:
        old, self._generation = self._channel, self._tls.generation
        self._channel = self._open()
        task = asyncio.ensure_future(old.close(self._grace))
        self._retiring[old] = task
        task.add_done_callback(lambda _: self._retiring.pop(old, None))

    def unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "unary_unary", args, kwargs)

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "unary_stream", args, kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "stream_unary", args, kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return _Method(self, "stream_stream", args, kwargs)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self.current().get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self.current().channel_ready()

    async def close(self, grace: float | None = None) -> None:
        """Close the current channel and those still retiring (each with ``grace``)."""
        retiring, self._retiring = self._retiring, {}
        for task in retiring.values():
            task.cancel()  # its wait for the calls; the close below ends them within grace
        await asyncio.gather(*retiring.values(), return_exceptions=True)
        await asyncio.gather(*(channel.close(grace) for channel in [self._channel, *retiring]))

    async def __aenter__(self) -> ReloadingChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)
