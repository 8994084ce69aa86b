"""Push to a socket that subscribed itself: ``NotifierInternal.Watch`` streams, one per
subscription, forwarded as Zaqar's notification frames and cancelled with the connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from zaqar_grpc.v2 import notifier_pb2

from services.api_gateway import translate
from services.api_gateway.errors import unavailable
from services.api_gateway.operations import Caller
from services.api_gateway.upstream import Upstreams
from services.api_gateway.websocket import frames

log = logging.getLogger(__name__)

Send = Callable[[str | bytes], Awaitable[None]]


class Watches:
    """The push subscriptions of one connection, by the id given to the client."""

    def __init__(self, up: Upstreams, send: Send) -> None:
        self._up = up
        self._send = send
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._unreleased: list[asyncio.Event] = []

    async def subscribe(
        self, caller: Caller, queue: str, ttl: int, binary: bool, *, topic: bool = False
    ) -> str:
        """Open a watch of the queue (``topic``: of the topic of that name) and return its id
        once notifier_svc has registered it, so that every message posted after the answer is
        pushed. Raises the call's error if it is refused."""
        request = notifier_pb2.WatchRequest(project=caller.project, ttl=translate.int32(ttl))
        if topic:
            request.topic = queue
        else:
            request.queue = queue
        call = self._up.notifier.Watch(request)
        try:
            await _registered(call, self._up.timeout)
        except BaseException:
            call.cancel()
            raise
        subscription_id = str(uuid.uuid4())
        gate = asyncio.Event()
        self._unreleased.append(gate)
        task = asyncio.ensure_future(self._forward(call, binary, gate))
        self._tasks[subscription_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(subscription_id, None))
        return subscription_id

    def release(self) -> None:
        """Start forwarding for the subscriptions just answered: the client gets the 201
        before any notification of the subscription."""
        for gate in self._unreleased:
            gate.set()
        self._unreleased.clear()

    def cancel(self, subscription_id: str) -> bool:
        """End one of this connection's push subscriptions; False when it is not one."""
        task = self._tasks.pop(subscription_id, None)
        if task is None:
            return False
        task.cancel()
        return True

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _forward(self, call: Any, binary: bool, gate: asyncio.Event) -> None:
        try:
            await gate.wait()
            async for notification in call:
                await self._send(frames.encode(translate.notification_doc(notification), binary))
        except grpc.RpcError as exc:
            # The stream ended on the notifier's side (ttl elapsed, too far behind, restart).
            log.warning("push subscription ended: %s %s", exc.code().name, exc.details())
        except Exception:
            # The socket is gone; the connection's own handler is closing it.
            log.debug("push subscription stopped: connection closed", exc_info=True)
        finally:
            call.cancel()


async def _registered(call: Any, deadline: float) -> None:
    """Wait for the initial metadata Watch sends once the watcher is registered."""
    try:
        async with asyncio.timeout(deadline):
            await call.initial_metadata()
    except TimeoutError:
        raise unavailable("The notification service did not register the subscription.") from None
    if call.done():
        # Refused: reading the finished call raises its error (with the service's details).
        await call.read()
        raise unavailable("The notification service ended the subscription at once.")
