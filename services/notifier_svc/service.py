"""notifier_svc's rules over its store: subscriptions with Zaqar's semantics, confirmation,
the hand-over of posted messages into the outbox and to the watchers of every replica, and the
messages published to topics.

A subscription's source is a queue or a topic: the methods that take ``queue`` take its source
key (``sources.py``: a queue's name, or ``topic/<name>``), as the store does.

Where a queue's subscriptions and deliveries are stored: with pooling, a queue placed on a pool
keeps them in that pool's notifier store (``pools.py``; the placement from queue_svc,
``placements.py``), every other queue and every topic in the own store. Subscriptions a pooled
queue got before this was so (or while it did not exist yet) stay in the own store and keep
working: the queue's reads look in both stores, a change goes to the store that holds the
subscription, and its deliveries are stored beside it.

Raised errors are ``services.common.errors`` classes, which the server's error interceptor
turns into statuses. Atomic work is the store's (``storage/base.py``).
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from zaqar_grpc.v2 import common_pb2, notifier_pb2

from services.common import bodies, limits, metrics, tracing
from services.common.errors import (
    InvalidArgument,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    Unavailable,
)
from services.common.message_keys import is_sealed
from services.common.signing import Keys
from services.notifier_svc import documents, fanout, sources, validation
from services.notifier_svc.filter_policy import Policies, Policy
from services.notifier_svc.placements import Placements
from services.notifier_svc.pools import NotifierStores
from services.notifier_svc.storage.base import (
    DeliveryKind,
    NewDelivery,
    NotifierStore,
    Subscription,
)
from services.notifier_svc.trusts import OPTION as TRUST_OPTION
from services.notifier_svc.trusts import Trusts, is_trust
from services.notifier_svc.watch_sharing import Announce, WatchSharing
from services.notifier_svc.watchers import WatchHub

log = logging.getLogger(__name__)

OpenBodies = Callable[[str, str, list[bytes]], Awaitable[list[bytes] | None]]

__all__ = ["Announce", "Confirmation", "NotifierService"]


@dataclass(frozen=True, slots=True)
class Confirmation:
    """How subscriptions are confirmed (settings ``require_confirmation``,
    ``signed_url_secret``, ``public_url``). ``keys.current`` signs the confirmation URLs; it
    is read at each use (it may be replaced)."""

    required: bool = False
    keys: Keys = field(default_factory=Keys)
    public_url: str = ""


class NotifierService:
    def __init__(
        self,
        store: NotifierStore,
        watches: WatchSharing,
        *,
        confirmation: Confirmation,
        announce: Announce,
        wake: Callable[[Iterable[str] | None], None],
        trusts: Trusts | None = None,
        clock: Callable[[], float] = time.time,
        open_bodies: OpenBodies | None = None,
        stores: NotifierStores | None = None,
        placements: Placements | None = None,
        max_subscriptions: int = 0,
    ) -> None:
        """``open_bodies(project, queue, bodies)``: the plaintext of sealed bodies (a queue
        with ``_enable_encrypt_messages``), opened by message_svc, for filter policies; None
        when they cannot be opened. Without it, sealed bodies cannot be filtered.

        ``stores``: the own store (``store``) and the pools' notifier stores; ``placements``:
        where queue_svc placed each queue. Without them every queue is in ``store``.

        ``max_subscriptions``: the live subscriptions a queue (or topic) may have
        (``queue_max_subscriptions``; 0: no limit); a new one beyond it is refused with
        :class:`services.common.errors.QuotaExceeded`."""
        self.store = store
        self.stores = stores
        self._placements = placements
        self.watches = watches
        self._trusts = Trusts(None) if trusts is None else trusts
        self._confirmation = confirmation
        self._announce = announce
        self._wake = wake
        self._clock = clock
        self._policies = Policies()
        self._open_bodies = open_bodies
        self._quota = max_subscriptions

    @property
    def hub(self) -> WatchHub:
        """This replica's watchers."""
        return self.watches.hub

    # subscriptions ---------------------------------------------------------------------------

    async def create(
        self,
        project: str,
        queue: str,
        subscriber: str,
        ttl: int | None,
        options: bytes,
        token: str | None = None,
    ) -> tuple[str, bool]:
        """Subscribe; the id, and whether it is new.

        The same subscriber again answers with the existing subscription while it is
        unconfirmed (re-sending the confirmation when confirmation is required), and
        :class:`SubscriptionAlreadyExists` once it is confirmed. A ``trust+`` subscriber gets
        a Keystone trust made with the caller's ``token`` (``trusts.py``).
        """
        sources.check(project, queue)
        uri = validation.subscriber(subscriber)
        lifetime = validation.ttl(ttl)
        parsed = validation.options(options)
        homes = await self._homes(project, queue, fresh=True)
        await fanout.check_no_loop(self._subscribers, project, queue, uri)
        made = None
        if is_trust(uri):
            parsed, made = await self._trusts.register(
                token, project, parsed, self._clock() + lifetime
            )
        try:
            home, subscription, created = await self._create(
                homes, project, queue, uri, lifetime, parsed
            )
        except BaseException:
            await self._trusts.discard(token, made)
            raise
        if made is not None and subscription.options.get(TRUST_OPTION) != made:
            await self._trusts.discard(token, made)  # the subscription existed already
        if not created and subscription.confirmed:
            raise SubscriptionAlreadyExists()
        if self._confirmation.required and fanout.is_queue(uri):
            # A queue of the caller's own project: nobody to ask, it is confirmed at once.
            await home.update(
                project, queue, subscription.id, subscriber=None, ttl=None, options=None,
                confirmed=True,
            )
        elif self._confirmation.required:
            await self._confirm_request(
                home, DeliveryKind.SUBSCRIPTION_CONFIRMATION, subscription, subscription.expires
            )
        if created:
            await self._announce(project, queue)
        return subscription.id, created

    async def _create(
        self,
        homes: Sequence[NotifierStore],
        project: str,
        queue: str,
        uri: str,
        lifetime: int,
        parsed: Any,
    ) -> tuple[NotifierStore, Subscription, bool]:
        """Create in the queue's store; a pooled queue's live subscription of the same
        subscriber made earlier in the own store is answered instead."""
        for legacy in homes[1:]:
            for existing in await legacy.subscribers(project, queue):
                if existing.subscriber == uri:
                    return legacy, existing, False
        subscription, created = await homes[0].create(
            project, queue, uri, lifetime, parsed, quota=self._quota
        )
        return homes[0], subscription, created

    async def get(self, project: str, queue: str, subscription_id: str) -> Subscription:
        sources.check(project, queue)
        _, found = await self._find(project, queue, subscription_id)
        return found

    async def _homes(
        self, project: str, queue: str, *, fresh: bool = False
    ) -> builtins.list[NotifierStore]:
        """The stores that may hold the queue's subscriptions: its pool's notifier store
        first (when it is on one), then the own store.

        Raises:
            Unavailable: queue_svc does not answer, or the pool's store cannot be opened.
        """
        if self._placements is None or self.stores is None:
            return [self.store]
        pool_uri = await self._placements.pool_uri(project, queue, fresh=fresh)
        if not self.stores.store_uri(pool_uri):
            return [self.store]
        return [await self.stores.of_pool(pool_uri), self.store]

    async def _find(
        self, project: str, queue: str, subscription_id: str
    ) -> tuple[NotifierStore, Subscription]:
        """The live subscription and the store that holds it. Not found where this replica's
        cached placement says: the placement is read again once (the queue may have been
        deleted and made again on another pool).

        Raises:
            SubscriptionNotFound: in none of the queue's stores.
        """
        homes = await self._homes(project, queue)
        for attempt in range(2):
            for store in homes:
                found = await store.get(project, queue, subscription_id)
                if found is not None:
                    return store, found
            if attempt or self._placements is None or not self._placements.pooling:
                break
            again = await self._homes(project, queue, fresh=True)
            if [id(s) for s in again] == [id(s) for s in homes]:
                break
            homes = again
        raise SubscriptionNotFound(subscription_id=subscription_id)

    async def _subscribers(self, project: str, queue: str) -> builtins.list[Subscription]:
        """Every live subscription of the queue, in all its stores."""
        found: builtins.list[Subscription] = []
        for store in await self._homes(project, queue):
            found.extend(await store.subscribers(project, queue))
        return found

    async def list(
        self, project: str, queue: str, *, limit: int | None, marker: str
    ) -> tuple[list[Subscription], str]:
        """A page in creation order, and the marker of the next page ('' when empty)."""
        sources.check(project, queue)
        size = limits.page_limit(limit)
        page: builtins.list[Subscription] = []
        for store in await self._homes(project, queue):
            page.extend(await store.list(project, queue, limit=size, marker=marker))
        page = sorted(page, key=lambda s: s.id)[:size]
        return page, page[-1].id if page else ""

    async def update(
        self,
        project: str,
        queue: str,
        subscription_id: str,
        *,
        subscriber: str | None,
        ttl: int | None,
        options: bytes,
        token: str | None = None,
    ) -> None:
        """Change subscriber, ttl and/or options (empty ``options`` = unchanged).

        With confirmation required, a new subscriber makes the subscription unconfirmed again
        and gets a confirmation request: a confirmed subscription never starts notifying an
        endpoint that did not confirm.

        A subscription that is (or becomes) ``trust+`` keeps its trust while its life does;
        it gets a new one, made with the caller's ``token``, when it had none or its ttl
        changes (the trust expires with the subscription), and the caller's own ``trust_id``
        when one is given (checked). Options given without ``trust_id`` keep the current one.
        """
        sources.check(project, queue)
        if subscriber is None and ttl is None and not options:
            raise InvalidArgument(validation.NOTHING_TO_UPDATE)
        uri = None if subscriber is None else validation.subscriber(subscriber)
        lifetime = None if ttl is None else validation.ttl(ttl)
        parsed = validation.options(options) if options else None
        home, current = await self._find(project, queue, subscription_id)
        if uri is not None:
            await fanout.check_no_loop(self._subscribers, project, queue, uri)
        reconfirm = (uri is not None and self._confirmation.required
                     and current.subscriber != uri and not fanout.is_queue(uri))
        made = None
        if is_trust(uri or current.subscriber):
            parsed, made = await self._trust_options(token, current, lifetime, parsed)
        try:
            updated = await home.update(
                project, queue, subscription_id, subscriber=uri, ttl=lifetime, options=parsed,
                confirmed=False if reconfirm else (
                    True if uri is not None and fanout.is_queue(uri) else None
                ),
            )
        except BaseException:
            await self._trusts.discard(token, made)
            raise
        if made is not None and is_trust(current.subscriber):
            await self._trusts.discard(token, current.options.get(TRUST_OPTION))
        if reconfirm:
            await self._confirm_request(
                home, DeliveryKind.SUBSCRIPTION_CONFIRMATION, updated, updated.expires
            )

    async def _trust_options(
        self,
        token: str | None,
        current: Subscription,
        lifetime: int | None,
        given: dict[str, Any] | None,
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The options to store for a ``trust+`` subscription being updated (None =
        unchanged), and the id of a trust created for it."""
        options = dict(current.options if given is None else given)
        kept = current.options.get(TRUST_OPTION) if is_trust(current.subscriber) else None
        wanted = options.get(TRUST_OPTION)
        if lifetime is None and kept is not None and wanted in (None, kept):
            if given is None:
                return None, None
            return {**given, TRUST_OPTION: kept}, None
        if wanted == kept:
            options.pop(TRUST_OPTION, None)  # a new life: a new trust
        expires = current.expires if lifetime is None else self._clock() + lifetime
        return await self._trusts.register(token, current.project, options, expires)

    async def delete(self, project: str, queue: str, subscription_id: str) -> None:
        """Delete the subscription and its pending deliveries. Absent: no error."""
        sources.check(project, queue)
        for store in await self._homes(project, queue):
            await store.delete(project, queue, subscription_id)

    async def confirm(
        self, project: str, queue: str, subscription_id: str, confirmed: bool
    ) -> None:
        """Confirm, or cancel (``confirmed`` false: an UnsubscribeConfirmation is sent when
        confirmation is required). Idempotent."""
        sources.check(project, queue)
        home, _ = await self._find(project, queue, subscription_id)
        subscription = await home.confirm(project, queue, subscription_id, confirmed)
        if not confirmed and self._confirmation.required:
            await self._confirm_request(
                home, DeliveryKind.UNSUBSCRIBE_CONFIRMATION, subscription,
                self._clock() + limits.SUBSCRIPTION_TTL_DEFAULT,
            )

    async def delete_queue(self, project: str, queue: str, pool_uri: str | None = None) -> None:
        """Delete every subscription of the queue and their deliveries, from the own store,
        from the store of ``pool_uri`` (the pool queue_svc had in the queue's record, when it
        says) and from that of the pool this replica has cached for the queue."""
        validation.queue_ref(project, queue)
        await self.store.delete_queue(project, queue)
        if self.stores is None or self._placements is None:
            return
        cached = self._placements.cached(project, queue)
        self._placements.forget(project, queue)
        for uri in dict.fromkeys(u for u in (pool_uri, cached) if u):
            if self.stores.store_uri(uri):
                await (await self.stores.of_pool(uri)).delete_queue(project, queue)

    async def _confirm_request(
        self,
        store: NotifierStore,
        kind: DeliveryKind,
        subscription: Subscription,
        expires: float,
    ) -> None:
        document = documents.confirmation(
            kind, subscription, secret=self._confirmation.keys.current, expires=expires,
            public_url=self._confirmation.public_url,
        )
        await store.enqueue([_delivery(subscription, kind, document)])
        self._wake(None)

    # topics ----------------------------------------------------------------------------------

    async def publish_topic(
        self, project: str, topic: str, messages: Sequence[tuple[bytes, int]]
    ) -> builtins.list[str]:
        """Deliver messages posted to a topic, given as (body, ttl), to its subscribers: one
        delivery per (subscriber, message) that the subscriber's filter policy passes, stored
        in one durable write before returning; then the topic's watchers get them. Unconfirmed
        subscribers get nothing when confirmation is required.

        Returns:
            The messages' new ids, in order.

        Raises:
            InvalidTopicName: the project or the topic name is not valid.
            InvalidBody: a body is not JSON (nothing was stored).
            Unavailable: the store failed (nothing was stored).
        """
        key = sources.topic_key(project, topic)
        documents_posted = [bodies.check_json(body) for body, _ttl in messages]
        accepted_at = self._clock()
        ids = [str(uuid.uuid4()) for _ in messages]
        subscriptions = await self.store.subscribers(project, key)
        targets = [
            s for s in subscriptions if s.confirmed or not self._confirmation.required
        ]
        if targets:
            rendered = [
                documents.topic_notification(topic, mid, body, ttl)
                for mid, (body, ttl) in zip(ids, messages, strict=True)
            ]
            policies = [self._policies.of(s.options) for s in targets]
            parsed = (
                documents_posted if any(policy is not None for policy in policies) else None
            )
            deliveries = self._filtered(targets, policies, parsed, rendered, ids)
            if deliveries:
                await self.store.enqueue(deliveries)
                self._wake({d.subscriber for d in deliveries})
        published = [
            common_pb2.Message(id=mid, body=body, ttl=ttl)
            for mid, (body, ttl) in zip(ids, messages, strict=True)
        ]
        self.hub.publish(project, key, published, accepted_at)
        try:
            await self.watches.share(project, key, [notifier_pb2.NotifyRequest(
                messages=published, accepted_at=accepted_at
            )])
        except Unavailable as exc:
            # The deliveries are stored: the post succeeded. Pushes are best effort.
            log.warning("messages of topic %s/%s not pushed to other replicas' watchers: %s",
                        project, topic, exc)
        return ids

    async def purge_topic(
        self, project: str, topic: str, *, deliveries: bool, subscriptions: bool
    ) -> None:
        """Remove the topic's subscriptions (with their deliveries), or only its pending
        deliveries. Idempotent."""
        key = sources.topic_key(project, topic)
        if subscriptions:
            await self.store.delete_queue(project, key)
        elif deliveries:
            await self.store.purge_deliveries(project, key)

    async def count_topic_deliveries(self, project: str, topic: str) -> int:
        """The deliveries the topic's live subscriptions are still owed."""
        key = sources.topic_key(project, topic)
        total = 0
        for subscription in await self.store.subscribers(project, key):
            total += await self.store.count_deliveries(subscription.id)
        return total

    # notifications ---------------------------------------------------------------------------

    async def notify(
        self,
        project: str,
        queue: str,
        messages: Sequence[common_pb2.Message],
        accepted_at: float = 0.0,
    ) -> bool:
        """:meth:`notify_many` of one post."""
        [listened] = await self.notify_many([notifier_pb2.NotifyRequest(
            project=project, queue=queue, messages=messages, accepted_at=accepted_at
        )])
        return listened is not False

    async def notify_many(
        self, posts: Sequence[notifier_pb2.NotifyRequest]
    ) -> builtins.list[bool | None]:
        """Stream each post's messages to its queue's watchers (those registered before its
        ``accepted_at``, when given): this replica's at once, other replicas' through the
        store's watch feed. Store one delivery per (subscriber, message), durably, before
        returning. Unconfirmed subscribers get nothing when confirmation is required.

        The posts of one queue share one read of its subscriptions and of its watchers, one
        write of their deliveries and one feed event, in the order given.

        Returns:
            Per post, whether anything listens to its queue (a subscription, or a watcher on
            any replica); None when its queue's store failed and nothing of it was done.

        A queue whose store fails (its pool is down) does not hold the others back: when
        some queues' posts were stored, the failed ones are answered None and message_svc
        hands them over again; only when every queue failed is the call refused. A post
        naming its pool (``pool_uri``) is looked up on that pool, whatever this replica's
        cached placement says.

        Raises:
            InvalidArgument: a post names an invalid queue, or holds a body that is neither
                JSON nor sealed (nothing is done).
            Unavailable: no queue's deliveries could be stored.
        """
        queues: dict[tuple[str, str], list[notifier_pb2.NotifyRequest]] = {}
        for post in posts:
            validation.queue_ref(post.project, post.queue)
            for message in post.messages:
                bodies.check_handed_over(message.body)
            queues.setdefault((post.project, post.queue), []).append(post)
        listened: dict[tuple[str, str], bool] = {}
        failed: dict[tuple[str, str], Unavailable] = {}
        for key, of_queue in queues.items():
            try:
                listened[key] = await self._notify_queue(*key, of_queue)
            except Unavailable as exc:
                failed[key] = exc
        if failed and not listened:
            raise next(iter(failed.values()))
        for (project, queue), error in failed.items():
            log.warning("messages of %s/%s not notified yet, their store failed: %s",
                        project, queue, error.description)
        return [listened.get((post.project, post.queue)) for post in posts]

    async def _notify_queue(
        self, project: str, queue: str, posts: Sequence[notifier_pb2.NotifyRequest]
    ) -> bool:
        placed = [post.pool_uri for post in posts if post.HasField("pool_uri")]
        if placed and self._placements is not None and self._placements.pooling:
            self._placements.remember(project, queue, placed[-1])
        # NOTE: one read after the other: gathering them costs more CPU than it saves.
        homes = await self._homes(project, queue)
        subscriptions: builtins.list[Subscription] = []
        home_of: dict[str, NotifierStore] = {}
        for store in homes:
            for subscription in await store.subscribers(project, queue):
                subscriptions.append(subscription)
                home_of[subscription.id] = store
        targets = [
            s for s in subscriptions if s.confirmed or not self._confirmation.required
        ]
        messages = [m for post in posts for m in post.messages]
        rendered = [documents.notification(queue, m) for m in messages]
        policies = [self._policies.of(s.options) for s in targets]
        bodies = (
            await self._judged_bodies(project, queue, messages)
            if any(policy is not None for policy in policies) else None
        )
        deliveries = self._filtered(
            targets, policies, bodies, rendered, [m.id for m in messages]
        )
        for store in homes:
            stored = [d for d in deliveries if home_of[d.subscription_id] is store]
            if stored:
                await store.enqueue(stored)
        if deliveries:
            self._wake({d.subscriber for d in deliveries})
        # Watchers are told once the deliveries are stored: a hand-over that fails before
        # (and is made again) pushes nothing twice.
        watched = await self.watches.share(project, queue, posts)
        for post in posts:
            self.hub.publish(project, queue, post.messages, post.accepted_at)
        return bool(subscriptions) or watched or self.hub.listened(project, queue)

    async def _judged_bodies(
        self, project: str, queue: str, messages: Sequence[common_pb2.Message]
    ) -> builtins.list[Any]:
        """The decoded bodies of ``messages`` for filter policies; sealed ones opened by
        message_svc first (their plaintext is only judged, never stored here).

        Raises:
            Unavailable: message_svc cannot open them now; the hand-over fails, and message_svc
                hands the messages over again later.
        """
        raw = [m.body for m in messages]
        sealed = [i for i, body in enumerate(raw) if is_sealed(body)]
        if sealed and self._open_bodies is not None:
            opened = await self._open_bodies(project, queue, [raw[i] for i in sealed])
            if opened is not None:
                for i, body in zip(sealed, opened, strict=True):
                    raw[i] = body
        return [_body(body) for body in raw]

    def _filtered(
        self,
        targets: Sequence[Subscription],
        policies: Sequence[Policy | None],
        bodies: Sequence[Any] | None,
        rendered: Sequence[bytes],
        message_ids: Sequence[str],
    ) -> builtins.list[NewDelivery]:
        """One delivery per (message, target) whose filter policy passes the message, in
        message order; the others are counted, and cost no outbox write. ``bodies``: the
        decoded bodies, when a target has a policy."""
        deliveries = []
        for i, document in enumerate(rendered):
            for subscription, policy in zip(targets, policies, strict=True):
                if policy is not None and bodies is not None:
                    body = bodies[i]
                    if body is not _UNREADABLE and not policy.matches(body):
                        scheme = subscription.subscriber.partition(":")[0]
                        metrics.FILTERED_MESSAGES.labels(scheme).inc()
                        continue
                deliveries.append(_delivery(
                    subscription, DeliveryKind.NOTIFICATION, document, message_ids[i]
                ))
        return deliveries


_UNREADABLE: Any = object()


def _body(body: bytes) -> Any:
    """A message's decoded body for filter policies, or :data:`_UNREADABLE`.

    A body is JSON unless it is still sealed (message_svc said it cannot be opened: its key
    is gone); a policy cannot judge it, and it is delivered unfiltered rather than lost (its
    delivery then fails to open it, and says why)."""
    try:
        return orjson.loads(body or b"null")
    except orjson.JSONDecodeError:
        return _UNREADABLE


def _delivery(
    subscription: Subscription, kind: DeliveryKind, document: bytes, message_id: str = ""
) -> NewDelivery:
    options: dict[str, Any] = dict(subscription.options)
    if message_id and fanout.target(subscription.subscriber) is not None:
        # A queue subscriber's post is keyed by the message, not by the delivery: a hand-over
        # made again (its answer lost) makes new deliveries of the same messages.
        options[fanout.MESSAGE_ID_OPTION] = message_id
    if tracing.ENABLED:
        # The delivery continues the trace of the call that handed the message over.
        traceparent = tracing.current_traceparent()
        if traceparent:
            options[tracing.DELIVERY_KEY] = traceparent
    return NewDelivery(
        subscription_id=subscription.id, project=subscription.project, queue=subscription.queue,
        subscriber=subscription.subscriber, options=options, kind=kind, document=document,
    )
