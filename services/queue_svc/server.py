"""queue_svc's composition root: store, upstream channels, servicer, gRPC server."""

from __future__ import annotations

import asyncio

import grpc
from zaqar.v2 import queues_pb2_grpc

from services.common.config import Settings
from services.common.grpc_server import (
    Running,
    create_server,
    service_main,
    start_server,
)
from services.common.tls import load_tls
from services.queue_svc.service import QueueService
from services.queue_svc.servicer import SERVICE_NAME, QueuesServicer
from services.queue_svc.storage.registry import open_queue_store
from services.queue_svc.upstream import MessageService, NotifierService


async def start(settings: Settings) -> Running:
    """Open the store (``settings.store_uri("queue")``), bind ``host:queue_port`` (0 = any)
    and serve ``zaqar.v2.Queues``; ``Running.port`` is the bound port. With the ``tls_*``
    settings the server and the channels to message_svc and notifier_svc use TLS.

    Raises:
        ConfigurationError: bad TLS settings or files, the store URI is unknown or malformed,
            or the store cannot be opened.
        RuntimeError: the port cannot be bound (grpc's error; OSError on older grpc).
    """
    tls = await asyncio.to_thread(load_tls, settings)
    store = await open_queue_store(settings.store_uri("queue"))
    messages = MessageService(settings, tls)
    notifier = NotifierService(settings, tls)

    async def close() -> None:
        await messages.close()
        await notifier.close()
        await store.close()

    servicer = QueuesServicer(QueueService(store, messages, notifier))

    def register(server: grpc.aio.Server) -> None:
        queues_pb2_grpc.add_QueuesServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, server
        )

    try:
        server, port, health = create_server(
            [register], [SERVICE_NAME], host=settings.host, port=settings.queue_port, tls=tls
        )
        return await start_server(Running(server, port, health, [SERVICE_NAME], close))
    except BaseException:
        await close()
        raise


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
