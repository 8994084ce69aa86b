"""What message filters cost message_svc's hot path: post and claim through MessageService.

MessageService runs over a real SQLite message store and reads queue metadata from a real
queue_svc (in this process, over gRPC; cached after the first call, as in production). Each
round posts ``--count`` messages one post at a time, then claims and deletes them one at a time
(a consumer's loop), and prints the mean µs per post and per claim + delete. ``--schema`` gives
the queue a ``_message_schema`` (the built-in filter then checks every post).

The same script runs on a tree without filters, to compare (``services`` is imported from the
current directory)::

    git archive <commit> services | tar -x -C /tmp/before     # from the repository root
    (cd /tmp/before && python "$OLDPWD/bench/message_filters.py")
    python bench/message_filters.py [--schema]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

import grpc
import orjson
from zaqar_grpc.v2 import queues_pb2, queues_pb2_grpc

from services.common.config import Settings
from services.message_svc.metadata import QueueMetadata
from services.message_svc.service import MessageService, Posted
from services.message_svc.storage.registry import open_store
from services.queue_svc import server as queue_server

SCHEMA = {"type": "object", "properties": {"event": {"type": "string"}, "n": {"type": "integer"}},
          "required": ["event", "n"]}


async def main(count: int, rounds: int, schema: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.load(environ={}, overrides={
            "data_dir": folder, "queue_port": 0, "metrics": False,
        })
        queues = await queue_server.start(settings)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{queues.port}")
        store = await open_store("sqlite:///:memory:")
        try:
            extra = {}
            try:
                from services.message_svc.filters.pipeline import Filters
            except ImportError:
                tree = "without filters"
            else:
                filters = Filters.load("")
                extra = {"filters": filters}
                tree = "with filters"
            metadata = QueueMetadata(
                channel, 5.0, 30.0, lambda uri, p, q: store.queue_version(p, q), **extra
            )
            service = MessageService(store, metadata, None, None, **extra)
            stub = queues_pb2_grpc.QueuesStub(channel)
            try:
                await stub.CreateQueue(queues_pb2.CreateQueueRequest(
                    project="bench", queue="q",
                    metadata=orjson.dumps({"_message_schema": SCHEMA} if schema else {}),
                ))
            except grpc.aio.AioRpcError as exc:
                # Stored; only the announcement to message_svc failed: no message_svc server
                # runs here, the service below reads the metadata on first use.
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            body = orjson.dumps({"event": "created", "n": 1, "payload": "x" * 200})
            for round_ in range(rounds):
                start = time.perf_counter()
                for _ in range(count):
                    await service.post("bench", "q", "client", [Posted(body)])
                posted = time.perf_counter() - start
                start = time.perf_counter()
                for _ in range(count):
                    claim = await service.claim("bench", "q", limit=1)
                    assert claim is not None
                    await service.delete("bench", "q", claim.messages[0].id, claim.id)
                claimed = time.perf_counter() - start
                print(f"{tree}{' + schema' if schema else ''} round {round_}: "
                      f"post {posted / count * 1e6:.1f} µs, "
                      f"claim+delete {claimed / count * 1e6:.1f} µs", flush=True)
        finally:
            await channel.close()
            await store.close()
            await queues.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--schema", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.count, args.rounds, args.schema))
