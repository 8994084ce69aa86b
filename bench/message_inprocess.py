"""message_svc's own cost per item, in process: batches of the 4 + 4 wrk load (posts; claims
of 5 and the deletes of what they took) run through ``BatchRunner.fill`` — the servicer, the
service, the store and its scripts — on a real redis-server, without gRPC and without the
metadata call to queue_svc (the queue's policy is the defaults, as cached). The hand-off to
notifier_svc is left out.

    PYTHONPATH=.:services/common/gen .venv/bin/python -m bench.message_inprocess \\
        --store redis://127.0.0.1:6379/0 [--batches 5000] [--items 4] [--profile]

It also prints what the measured rounds cost Redis, from its ``INFO commandstats`` (reset
before them, so use a redis-server of its own): the commands the scripts ran per round, by
command, and Redis's own time in the scripts per round. The command counts do not depend on
the machine's speed; the times do.
"""

from __future__ import annotations

import argparse

import redis.asyncio as aioredis
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
    async with aioredis.from_url(store_uri) as admin:
        await admin.config_resetstat()
        items, cpu, wall = await measure(batches, one_round, profile)
        stats = await admin.info("commandstats")
    print(f"{items} items in batches of {size}: {1e6 * cpu / items:.1f} µs of CPU per item "
          f"in this process ({1e6 * wall / items:.1f} µs wall)")
    print(redis_report(stats, batches))
    await store.close()


def redis_report(stats: dict[str, dict[str, float]], rounds: int) -> str:
    """Per round: the scripts' calls and Redis's time in them, then the commands they ran."""
    scripts = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    inner = {name.removeprefix("cmdstat_"): row["calls"] for name, row in stats.items()
             if name not in ("cmdstat_evalsha", "cmdstat_config|resetstat", "cmdstat_info")}
    by_command = ", ".join(f"{name} {calls / rounds:.2f}" for name, calls in sorted(inner.items()))
    return (f"Redis per round: {scripts['calls'] / rounds:.2f} script calls, "
            f"{scripts['usec'] / rounds:.1f} µs in them; "
            f"{sum(inner.values()) / rounds:.2f} commands inside them ({by_command})")


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
