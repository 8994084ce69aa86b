"""notifier_svc's composition root: store, senders, dispatcher, sweeper, servicers, server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from functools import partial

from zaqar_grpc.v2 import admin_pb2

from services.common import health, rate_limit, signing
from services.common.config import ConfigurationError, Settings, check_limits
from services.common.grpc_auth import server_interceptors
from services.common.grpc_server import (
    STORE_CHECK_TIMEOUT,
    Running,
    create_server,
    service_main,
    start_server,
)
from services.common.keystone import KeystoneAuth, keystone_for, keystone_parts
from services.common.request_bytes import Receiving
from services.common.secret_files import SecretFiles, check_interval
from services.common.store_probe import answers
from services.common.sweeper import Sweeper
from services.common.tls import load_tls
from services.notifier_svc import health as store_health
from services.notifier_svc.delivery.dispatcher import (
    DEPTH_INTERVAL,
    Dispatcher,
    OutboxDepth,
    Sender,
)
from services.notifier_svc.delivery.mail import MailSender, SmtpSettings
from services.notifier_svc.delivery.queue import QueueSender
from services.notifier_svc.delivery.trust import TrustSender
from services.notifier_svc.delivery.webhook import WebhookSender
from services.notifier_svc.placements import Placements
from services.notifier_svc.pools import NotifierStores, notifier_uri
from services.notifier_svc.sealed import SealedBodies
from services.notifier_svc.service import Confirmation, NotifierService
from services.notifier_svc.servicer import INTERNAL_SERVICE, SUBSCRIPTIONS_SERVICE, registrar
from services.notifier_svc.storage.base import NotifierStore
from services.notifier_svc.storage.registry import open_notifier_store
from services.notifier_svc.trusts import Trusts
from services.notifier_svc.upstream import MessageReplicas, QueuePolicies
from services.notifier_svc.watch_sharing import WatchSharing
from services.notifier_svc.watchers import WatchHub

WHAT_EXPIRES = "expired subscriptions and deliveries"

SERVICE_NAMES = (SUBSCRIPTIONS_SERVICE, INTERNAL_SERVICE, health.SERVICE_NAME)
# A pool's notifier store unused this long (and holding no pending delivery) is closed.
POOL_IDLE = 600.0
# Seconds running deliveries get to finish on shutdown; the rest stay pending, due at once.
DELIVERY_GRACE = 1.0


def check(settings: Settings) -> None:
    """Raises: ConfigurationError for settings notifier_svc cannot run with."""
    _check_secret(settings.require_confirmation, settings.signed_url_secret)
    if (settings.delivery_concurrency < 1 or settings.delivery_timeout <= 0
            or settings.delivery_lease_margin <= 0):
        raise ConfigurationError(
            "delivery_concurrency must be at least 1, and delivery_timeout and "
            "delivery_lease_margin positive"
        )
    check_limits(settings, "notifier")
    check_interval(settings)


def _check_secret(require_confirmation: bool, secret: str) -> None:
    if require_confirmation and not secret:
        raise ConfigurationError(
            "require_confirmation needs signed_url_secret (ZAQAR_SIGNED_URL_SECRET): the "
            "confirmation requests are pre-signed URLs"
        )


def _secret_files(
    settings: Settings, keys: signing.Keys, mail: MailSender, auth: KeystoneAuth | None
) -> SecretFiles | None:
    """The files of the secrets the service takes anew while it runs (those that come from
    files): the secret that signs confirmation URLs (a new one signs from then on), the SMTP
    password and the Keystone password."""

    def apply(values: Mapping[str, str]) -> None:
        _check_secret(settings.require_confirmation, values["signed_url_secret"])
        keys.take(values)

    return SecretFiles.of(
        settings, [(("signed_url_secret",), apply), mail.secret_part(), *keystone_parts(auth)]
    )


async def start(
    settings: Settings,
    auth: KeystoneAuth | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Running:
    """Open the store (``settings.store_uri("notifier")``), bind ``host:notifier_port``
    (0 = any), serve ``zaqar.v2.Subscriptions``, ``zaqar.v2.NotifierInternal`` and
    ``zaqar.v2.StoreHealth``, and start delivering pending notifications (those left by an
    earlier run first) and sweeping. With the ``tls_*`` settings the server and the channels
    to queue_svc and message_svc use TLS.

    In keystone mode every call to ``Subscriptions`` needs a token and ``NotifierInternal`` a
    service token (``services/common/grpc_auth.py``), the calls to the other services carry
    this process's own, and ``trust+`` subscribers get Keystone trusts (``trusts.py``).
    ``auth`` is the Keystone client to use (closed by its owner), else the service makes one.

    Replicas (several processes on one store, behind one balanced target) share the store's
    subscriptions and outbox, and their watchers through it (``watch_sharing.py``). ``clock``
    is the time of the store, the dispatcher and the service (Unix seconds; tests move it).

    Raises:
        ConfigurationError: bad settings (TLS files included), an unknown or malformed store
            URI.
        Unavailable: the store cannot be opened.
        CannotListen: the port cannot be bound (services/common/startup.py).
    """
    check(settings)
    tls = await asyncio.to_thread(load_tls, settings)
    limit = rate_limit.for_service(settings, "notifier_svc")
    owned = keystone_for(settings) if auth is None else None
    auth = auth or owned
    store = await open_notifier_store(settings.store_uri("notifier"), now=clock)
    placements = Placements(settings, tls=tls, auth=auth)

    async def open_pool(pool_uri: str) -> NotifierStore:
        uri = notifier_uri(pool_uri)
        assert uri is not None  # NotifierStores.store_uri keeps such pools in the own store
        return await open_notifier_store(uri, now=clock)

    stores = NotifierStores(
        store, open_pool, idle=max(POOL_IDLE, 2 * settings.metadata_cache_ttl),
        pools=placements.pool_uris if settings.pooling else None,
    )

    def outbox() -> list[NotifierStore]:
        return [s for _, s in stores.every()]

    policies = QueuePolicies(settings, tls=tls, auth=auth)
    replicas = MessageReplicas(settings, tls, auth)
    webhook = WebhookSender(settings.delivery_timeout, settings.delivery_concurrency)
    trust = TrustSender(webhook, auth)
    mail = MailSender(SmtpSettings(
        host=settings.smtp_host, port=settings.smtp_port, starttls=settings.smtp_starttls,
        user=settings.smtp_user, password=settings.smtp_password, sender=settings.smtp_sender,
        timeout=settings.delivery_timeout,
    ))
    senders: dict[str, Sender] = {
        "http": webhook, "https": webhook, "mailto": mail,
        "trust+http": trust, "trust+https": trust, "queue": QueueSender(replicas),
    }
    sealed = SealedBodies(replicas)
    dispatcher = Dispatcher(
        store, senders, policies.retry_policy,
        concurrency=settings.delivery_concurrency, timeout=settings.delivery_timeout,
        lease_margin=settings.delivery_lease_margin, clock=clock,
        opener=sealed.open_delivery, stores=outbox,
    )
    sweeper = Sweeper(stores, settings.gc_interval, WHAT_EXPIRES)
    depth = OutboxDepth(store, DEPTH_INTERVAL if settings.metrics else 0, stores=outbox)
    watches = WatchSharing(store, WatchHub(), replicas.listened)

    keys = signing.Keys(settings.signed_url_secret)
    secret_files = _secret_files(settings, keys, mail, auth)

    async def close() -> None:
        try:
            if secret_files is not None:
                await secret_files.close()
            await watches.close()
            await sweeper.stop()
            await depth.stop()
            await dispatcher.stop(grace=min(DELIVERY_GRACE, settings.shutdown_grace))
        finally:  # even when a clean-up deadline cut the dispatcher's stop short
            await webhook.close()
            if owned is not None:
                await owned.aclose()
            if limit is not None:
                await limit.close()
        await replicas.close()
        await policies.close()
        await placements.close()
        await stores.close()
        await store.close()

    service = NotifierService(
        store, watches,
        confirmation=Confirmation(
            required=settings.require_confirmation, keys=keys, public_url=settings.public_url,
        ),
        announce=replicas.listened,
        wake=dispatcher.wake,
        trusts=Trusts(auth),
        clock=clock,
        open_bodies=replicas.open_bodies,
        stores=stores,
        placements=placements if settings.pooling else None,
        max_subscriptions=settings.queue_max_subscriptions,
    )

    async def check_health(
        request: admin_pb2.CheckStoresRequest, seconds: float
    ) -> admin_pb2.StoresHealth:
        return await store_health.check_stores(store, seconds, request.pools, stores)

    try:
        server, port, health_servicer = create_server(
            [registrar(service, replicas.listened, sealed), health.registrar(check_health)],
            SERVICE_NAMES, host=settings.host, port=settings.notifier_port, tls=tls,
            receiving=Receiving(settings.grpc_max_receiving_bytes), process="notifier_svc",
            interceptors=server_interceptors(
                auth, [SUBSCRIPTIONS_SERVICE, health.SERVICE_NAME], admin=[health.SERVICE_NAME],
                limit=limit,
            ),
        )
        running = await start_server(Running(
            server, port, health_servicer, SERVICE_NAMES, close,
            store_check=partial(answers, settings.store_uri("notifier"), "notifier store",
                                STORE_CHECK_TIMEOUT),
            store_name="the notifier store", stopping=service.watches.hub.end,
        ))
    except BaseException:
        await close()
        raise
    dispatcher.start()
    sweeper.start()
    depth.start()
    if secret_files is not None:
        secret_files.watch()
    return running


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, announcing ``READY notifier_svc <host>:<port>`` on stdout;
    then drain, stop, and close the dispatcher (running deliveries stay pending), channels
    and store."""
    running = await start(settings)
    await running.serve_until_signal(
        settings.shutdown_grace, announce=f"READY notifier_svc {settings.host}:{running.port}"
    )


def main() -> None:
    service_main("notifier_svc", run)


if __name__ == "__main__":
    main()
