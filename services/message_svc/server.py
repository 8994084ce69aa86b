"""message_svc's composition root: store, queue metadata cache, servicers, sweeper, server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from functools import partial

from zaqar_grpc.v2 import admin_pb2, notifier_pb2_grpc

from services.common import health, metrics, rate_limit
from services.common.config import ConfigurationError, Settings, check_limits
from services.common.grpc_auth import server_interceptors
from services.common.grpc_server import (
    STORE_CHECK_TIMEOUT,
    Running,
    create_server,
    open_channel,
    service_main,
    start_server,
)
from services.common.keystone import KeystoneAuth, keystone_for, keystone_parts
from services.common.message_keys import parse_keys
from services.common.request_bytes import Receiving
from services.common.secret_files import SecretFiles, check_interval
from services.common.store_probe import answers
from services.common.sweeper import Sweeper
from services.common.tls import load_tls
from services.message_svc import health as store_health
from services.message_svc.encryption import Sealer
from services.message_svc.filters.pipeline import Filters
from services.message_svc.handoff import Handoff
from services.message_svc.metadata import QueueMetadata
from services.message_svc.polling import Polling, notifier_watch
from services.message_svc.pools import PoolStores
from services.message_svc.redrive import Redrives, queue_sources
from services.message_svc.service import MessageService
from services.message_svc.servicer import INTERNAL_SERVICE, MESSAGES_SERVICE, Packer, registrar
from services.message_svc.storage.base import FairPolicy
from services.message_svc.storage.redrives import open_redrive_store
from services.message_svc.storage.registry import open_store
from services.message_svc.waiters import WaitRoom

WHAT_EXPIRES = "expired messages and claims"
# A pool's store unused this long (and at least twice the metadata cache's time limit) is closed.
POOL_IDLE = 600.0

SERVICE_NAMES = (MESSAGES_SERVICE, INTERNAL_SERVICE, health.SERVICE_NAME)


async def start(settings: Settings, auth: KeystoneAuth | None = None) -> Running:
    """Open the store (``settings.store_uri("message")``), bind ``host:message_port`` (0 = any),
    serve ``zaqar.v2.Messages``, ``zaqar.v2.MessagesInternal`` and ``zaqar.v2.StoreHealth``
    and start the expiry sweeper.
    Posted messages are handed to notifier_svc (``settings.target("notifier")``, connected on
    first use) in the background. With the ``tls_*`` settings the server and both channels
    use TLS.

    ``Running.port`` is the bound port; ``Running.stop`` stops the server, then the sweeper,
    the channel to queue_svc and the store.

    In keystone mode every call to ``Messages`` needs a token and ``MessagesInternal`` a
    service token (``services/common/grpc_auth.py``); the calls to the other services carry
    this process's own. ``auth`` is the Keystone client to use (closed by its owner), else the
    service makes one.

    Raises:
        ConfigurationError: bad TLS settings or files; the store URI is unknown or malformed;
            a key of ``message_encryption_keys`` is malformed;
            a message filter of ``message_filters`` is not installed or cannot be loaded;
            a ``fair_*`` threshold is out of its range (checked first, fairness on or off);
            ``message_max_waiting`` is negative.
        Unavailable: the store cannot be opened.
        CannotListen: the port cannot be bound (services/common/startup.py).
    """
    fair = fair_policy(settings)
    check_interval(settings)
    check_limits(settings, "message")
    tls = await asyncio.to_thread(load_tls, settings)
    filters = Filters.load(settings.message_filters)
    keys = parse_keys(settings.message_encryption_keys)
    limit = rate_limit.for_service(settings, "message_svc")
    owned = keystone_for(settings) if auth is None else None
    auth = auth or owned
    store = await open_store(settings.store_uri("message"))
    pools = PoolStores(store, open_store, idle=max(POOL_IDLE, 2 * settings.metadata_cache_ttl))
    channel = open_channel(settings.target("queue"), tls, auth)
    sweeper = Sweeper(pools, settings.gc_interval, WHAT_EXPIRES)
    handoff = Handoff(
        settings.target("notifier"), timeout=settings.rpc_timeout,
        cache_ttl=settings.metadata_cache_ttl, tls=tls, linger=settings.notify_linger,
        auth=auth,
    )

    redrive_jobs = None
    secret_files: SecretFiles | None = None

    async def close() -> None:
        if secret_files is not None:
            await secret_files.close()
        if redrives is not None:
            await redrives.close()
        if redrive_jobs is not None:
            await redrive_jobs.close()
        await polling.room.close()
        await notifier_channel.close()
        await sweeper.stop()
        await handoff.close()
        await channel.close()
        await pools.close()
        await store.close()
        if owned is not None:
            await owned.aclose()
        if limit is not None:
            await limit.close()

    async def version_of(pool_uri: str, project: str, queue: str) -> int:
        return await (await pools.get(pool_uri)).queue_version(project, queue)

    metadata = QueueMetadata(
        channel, settings.rpc_timeout, settings.metadata_cache_ttl,
        version_of=version_of, on_load=handoff.invalidate, filters=filters,
    )
    service = MessageService(
        store, metadata, handoff, pools if settings.pooling else None, filters=filters,
        sealer=None if keys is None else Sealer(keys), fair=fair,
    )

    def new_keys(values: Mapping[str, str]) -> None:
        keys = parse_keys(values["message_encryption_keys"])
        service.bodies.sealer = None if keys is None else Sealer(keys)

    secret_files = SecretFiles.of(
        settings, [(("message_encryption_keys",), new_keys), *keystone_parts(auth)]
    )
    packer = Packer(checksum=settings.message_checksum)
    # Carries the long polls' Watch streams, cancelled when each poll ends.
    notifier_channel = open_channel(settings.target("notifier"), tls, auth, eject_hung=False)
    polling = Polling(service, WaitRoom(notifier_watch(
        notifier_pb2_grpc.NotifierInternalStub(notifier_channel)
    ), most=settings.message_max_waiting))
    metrics.LONG_POLLS_WAITING.set_function(polling.room.waiting)  # counted when scraped
    redrives: Redrives | None = None
    try:
        redrive_jobs = await open_redrive_store(settings.store_uri("message"))
    except BaseException:
        await close()
        raise
    redrives = Redrives(
        service, redrive_jobs, queue_sources(channel, settings.rpc_timeout),
        hint=polling.room.hint,
    )

    async def check_health(
        request: admin_pb2.CheckStoresRequest, seconds: float
    ) -> admin_pb2.StoresHealth:
        return await store_health.check_stores(store, request.pools, open_store, seconds)

    # Called in order when the process begins to stop: long polls and streaming pulls end,
    # then the Exchange streams' callers are told to move (registrar adds their drain).
    stopping: list[Callable[[], None]] = [polling.end]

    def begin_stopping() -> None:
        for step in stopping:
            step()

    try:
        server, port, health_servicer = create_server(
            [registrar(service, packer, polling, redrives, stopping),
             health.registrar(check_health)],
            SERVICE_NAMES,
            host=settings.host, port=settings.message_port, tls=tls,
            receiving=Receiving(settings.grpc_max_receiving_bytes), process="message_svc",
            interceptors=server_interceptors(
                auth, [MESSAGES_SERVICE, health.SERVICE_NAME], admin=[health.SERVICE_NAME],
                limit=limit,
            ),
        )
        running = await start_server(Running(
            server, port, health_servicer, SERVICE_NAMES, close,
            store_check=partial(answers, settings.store_uri("message"), "message store",
                                STORE_CHECK_TIMEOUT),
            store_name="the message store", stopping=begin_stopping,
        ))
    except BaseException:
        await close()
        raise
    sweeper.start()
    redrives.start_scanning()
    if secret_files is not None:
        secret_files.watch()
    return running


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, announcing ``READY message_svc <host>:<port>`` on stdout;
    then drain, stop, and close the sweeper, channel and store."""
    running = await start(settings)
    await running.serve_until_signal(
        settings.shutdown_grace, announce=f"READY message_svc {settings.host}:{running.port}"
    )


def main() -> None:
    service_main("message_svc", run)


def fair_policy(settings: Settings) -> FairPolicy | None:
    """The fair claims the settings ask for (``fair_*``), or None when they are off.

    The thresholds are checked whether fairness is on or off, so that a bad value is refused
    when it is set, not when fairness is next turned on.

    Raises:
        ConfigurationError: a threshold is out of its range.
    """
    share, least, lookahead = (
        settings.fair_share_percent, settings.fair_min_in_flight, settings.fair_lookahead
    )
    if not 1 <= share <= 100:
        raise ConfigurationError(f"fair_share_percent must be 1 to 100, not {share}.")
    if least < 1:
        raise ConfigurationError(f"fair_min_in_flight must be at least 1, not {least}.")
    if not 0 <= lookahead <= 100_000:
        raise ConfigurationError(f"fair_lookahead must be 0 to 100000, not {lookahead}.")
    backoff = settings.fair_backoff
    if not 0 <= backoff <= 60:  # NaN included
        raise ConfigurationError(f"fair_backoff must be 0 to 60, not {backoff:g}.")
    if not settings.fair_queues:
        return None
    return FairPolicy(share_percent=share, min_in_flight=least, lookahead=lookahead,
                      backoff=backoff)


if __name__ == "__main__":
    main()
