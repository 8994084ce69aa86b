"""message_svc's own cost per item, in process: batches of the 4 + 4 wrk load (posts; claims
of 5 and the deletes of what they took) run through ``BatchRunner.fill`` — the servicer, the
service, the store and its scripts — on a real redis-server, without gRPC and without the
metadata call to queue_svc (the queue's policy is the defaults, as cached). The hand-off to
notifier_svc is left out.

    PYTHONPATH=.:services/common/gen .venv/bin/python -m bench.message_inprocess \\
        --store redis://127.0.0.1:6379/0 [--batches 5000] [--items 4] [--profile]
"""

from __future__ import annotations

import argparse

import uvloop
from zaqar_grpc.v2 import messages_pb2

from bench._measure import measure
from services.message_svc.batch import BatchRunner
from services.message_svc.metadata import QueuePolicy
from services.message_svc.service import MessageService
from services.message_svc.servicer import MessagesServicer, Packer
from services.message_svc.storage.registry import open_store

PROJECT, QUEUE, CLIENT = "bench", "inprocess", "3381af92-2b9e-11e3-b191-71861300734c"
BODY = b'{"event": "BackupStarted", "n": 1}'


class CachedPolicy:
    """The metadata cache with every queue's policy in it: the defaults."""

    policy = QueuePolicy(exists=True)

    async def get(self, project: str, queue: str) -> QueuePolicy:
        return self.policy

    async def ensure(self, project: str, queue: str, place_on: str = "") -> QueuePolicy:
        return self.policy

    def invalidate(self, project: str, queue: str) -> None:
        pass


def post_item() -> messages_pb2.BatchItem:
    item = messages_pb2.BatchItem()
    item.post_messages.project = PROJECT
    item.post_messages.queue = QUEUE
    item.post_messages.client_id = CLIENT
    item.post_messages.messages.add(body=BODY, ttl=300)
    return item


async def run(store_uri: str, batches: int, size: int, profile: bool) -> None:
    store = await open_store(store_uri)
    service = MessageService(store, CachedPolicy())  # type: ignore[arg-type]
    runner = BatchRunner(MessagesServicer(service, Packer(checksum=False)))
    ids: list[str | None] = [None] * size
    posts = [post_item() for _ in range(size)]

    async def one_round() -> int:
        """A batch of posts, then claims of 5 and batches of the deletes: items run."""
        done = 0
        response = messages_pb2.ExchangeResponse()
        await runner.fill(posts, response.results, ids, None)
        done += size
        claim = messages_pb2.BatchItem()
        claim.create_claim.project, claim.create_claim.queue = PROJECT, QUEUE
        claim.create_claim.limit, claim.create_claim.ttl = 5, 60
        response = messages_pb2.ExchangeResponse()
        await runner.fill([claim], response.results, [None], None)
        done += 1
        claimed = response.results[0].claim
        deletes = []
        for message in claimed.messages:
            item = messages_pb2.BatchItem()
            d = item.delete_message
            d.project, d.queue, d.message_id, d.claim_id = PROJECT, QUEUE, message.id, claimed.id
            deletes.append(item)
        for start in range(0, len(deletes), size):
            part = deletes[start:start + size]
            response = messages_pb2.ExchangeResponse()
            await runner.fill(part, response.results, [None] * len(part), None)
            done += len(part)
        return done

    for _ in range(200):
        await one_round()
    items, cpu, wall = await measure(batches, one_round, profile)
    print(f"{items} items in batches of {size}: {1e6 * cpu / items:.1f} µs of CPU per item "
          f"in this process ({1e6 * wall / items:.1f} µs wall)")
    await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True, help="a redis:// message store URI")
    ap.add_argument("--batches", type=int, default=3000, help="rounds: posts, claim, deletes")
    ap.add_argument("--items", type=int, default=4, help="items per batch (4)")
    ap.add_argument("--profile", action="store_true", help="cProfile the measured rounds")
    args = ap.parse_args()
    uvloop.run(run(args.store, args.batches, args.items, args.profile))


if __name__ == "__main__":
    main()
