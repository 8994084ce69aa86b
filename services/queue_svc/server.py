"""queue_svc's composition root: store, upstream channels, servicer, gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial

import grpc
from zaqar_grpc.v2 import admin_pb2, queues_pb2_grpc

from services.common import health, rate_limit
from services.common.config import Settings, check_limits
from services.common.grpc_auth import server_interceptors
from services.common.grpc_server import (
    STORE_CHECK_TIMEOUT,
    Running,
    create_server,
    service_main,
    start_server,
)
from services.common.keystone import KeystoneAuth, keystone_for, keystone_parts
from services.common.message_keys import parse_keys
from services.common.request_bytes import Receiving
from services.common.secret_files import SecretFiles, check_interval
from services.common.store_probe import answers
from services.common.tls import load_tls
from services.queue_svc import catalog_servicer, topics_servicer
from services.queue_svc.catalog import CatalogService
from services.queue_svc.health import check_stores
from services.queue_svc.service import QueueService
from services.queue_svc.servicer import SERVICE_NAME, QueuesServicer
from services.queue_svc.storage.registry import open_queue_store
from services.queue_svc.topics import TopicService
from services.queue_svc.upstream import MessageService, NotifierService

# What a project's own token may call only with the admin role (Zaqar's admin endpoints);
# flavors are read by any project, in its own scope.
ADMIN_CALLS = (
    catalog_servicer.POOLS_SERVICE, health.SERVICE_NAME, "/zaqar.v2.Flavors/PutFlavor",
    "/zaqar.v2.Flavors/UpdateFlavor", "/zaqar.v2.Flavors/DeleteFlavor",
)


async def start(settings: Settings, auth: KeystoneAuth | None = None) -> Running:
    """Open the store (``settings.store_uri("queue")``), bind ``host:queue_port`` (0 = any)
    and serve ``zaqar.v2.Queues``, ``zaqar.v2.Topics``, ``zaqar.v2.Pools``, ``zaqar.v2.Flavors``
    and ``zaqar.v2.StoreHealth``; ``Running.port`` is the bound port. With the ``tls_*`` settings
    the server and the channels to message_svc and notifier_svc use TLS.

    In keystone mode every call needs a token (``services/common/grpc_auth.py``) and the
    calls to the other services carry this process's own; ``auth`` is the Keystone client to
    use (closed by its owner), else the service makes one.

    Raises:
        ConfigurationError: bad TLS settings or files, a malformed message encryption key, a
            negative quota,
            the store URI is unknown or malformed, or the store cannot be opened.
        CannotListen: the port cannot be bound (services/common/startup.py).
    """
    check_limits(settings, "queue")
    check_interval(settings)
    tls = await asyncio.to_thread(load_tls, settings)
    encryption = parse_keys(settings.message_encryption_keys) is not None
    limit = rate_limit.for_service(settings, "queue_svc")
    owned = keystone_for(settings) if auth is None else None
    auth = auth or owned
    store = await open_queue_store(settings.store_uri("queue"))
    messages = MessageService(settings, tls, auth)
    notifier = NotifierService(settings, tls, auth)
    secret_files: SecretFiles | None = None

    async def close() -> None:
        if secret_files is not None:
            await secret_files.close()
        await messages.close()
        await notifier.close()
        await store.close()
        if owned is not None:
            await owned.aclose()
        if limit is not None:
            await limit.close()

    # A pool's store must answer well within the deadline of the call registering it.
    catalog = CatalogService(
        store.catalog, probe_seconds=settings.rpc_timeout / 2,
        count_queues=store.count_on_pool if settings.pooling else None,
    )
    queues = QueueService(store, messages, notifier, catalog if settings.pooling else None,
                          encryption=encryption, max_queues=settings.project_max_queues)
    servicer = QueuesServicer(queues)

    def new_keys(values: Mapping[str, str]) -> None:
        queues.encryption = parse_keys(values["message_encryption_keys"]) is not None

    secret_files = SecretFiles.of(
        settings, [(("message_encryption_keys",), new_keys), *keystone_parts(auth)]
    )

    def register(server: grpc.aio.Server) -> None:
        queues_pb2_grpc.add_QueuesServicer_to_server(servicer, server)

    async def check_health(
        request: admin_pb2.CheckStoresRequest, seconds: float
    ) -> admin_pb2.StoresHealth:
        return await check_stores(store, settings.pooling, seconds)

    names = [SERVICE_NAME, topics_servicer.SERVICE_NAME, catalog_servicer.POOLS_SERVICE,
             catalog_servicer.FLAVORS_SERVICE, health.SERVICE_NAME]
    topics = TopicService(store.topics, notifier, settings.project_max_topics)
    try:
        server, port, health_servicer = create_server(
            [register, topics_servicer.registrar(topics), catalog_servicer.registrar(catalog),
             health.registrar(check_health)],
            names, host=settings.host, port=settings.queue_port, tls=tls,
            receiving=Receiving(settings.grpc_max_receiving_bytes), process="queue_svc",
            interceptors=server_interceptors(auth, names, ADMIN_CALLS, limit),
        )
        running = await start_server(Running(
            server, port, health_servicer, names, close,
            store_check=partial(answers, settings.store_uri("queue"), "queue store",
                                STORE_CHECK_TIMEOUT),
            store_name="the queue store",
        ))
    except BaseException:
        await close()
        raise
    if secret_files is not None:
        secret_files.watch()
    return running


async def run(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, announcing ``READY queue_svc <host>:<port>`` on stdout;
    then drain, stop, and close the store and channels."""
    running = await start(settings)
    await running.serve_until_signal(
        settings.shutdown_grace, announce=f"READY queue_svc {settings.host}:{running.port}"
    )


def main() -> None:
    service_main("queue_svc", run)


if __name__ == "__main__":
    main()
