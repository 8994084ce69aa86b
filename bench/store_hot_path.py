"""The message store's hot path alone: post, claim and delete timed against a store, no service.

Each round posts ``--count`` messages one post at a time, then claims them one claim at a time
(limit 1) and deletes each with its claim, sequentially (one caller, so every call is one
round trip and one script). It prints the mean µs of a post and of a claim + delete for each
round, and the median and minimum over the rounds. A standard queue unless ``--fifo`` (then
``post_fifo`` / ``claim_fifo`` with a group per 10 messages); ``--fair`` makes the claims fair
(``claim(..., fair=FairPolicy())``, the default thresholds) on the same messages, which carry no
group (a tree from before fair queues refuses it). On a ``redis://`` store it also
prints the server's own time per script (``INFO commandstats``, EVALSHA ``usec_per_call``,
reset before each phase): what the scripts cost Redis, without the client's share, which
varies more with the machine's load.

The same script runs on an older tree, to compare (``services`` is imported from the current
directory)::

    git archive <commit> services | tar -x -C /tmp/before     # from the repository root
    (cd /tmp/before && python "$OLDPWD/bench/store_hot_path.py" --uri redis://127.0.0.1:6390/0)
    python bench/store_hot_path.py --uri redis://127.0.0.1:6390/0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit

import redis.asyncio

sys.path.insert(0, os.getcwd())

from services.message_svc.storage import base
from services.message_svc.storage.base import NewMessage
from services.message_svc.storage.registry import open_store

BODY = b'{"event": "bench", "n": 1}'


async def _script_usec(server: redis.asyncio.Redis | None) -> tuple[float, int]:
    """Mean µs the server spent per EVALSHA since the last reset, and how many commands the
    scripts ran (``redis.call``s, counted by the server); then reset. (0, 0) without one."""
    if server is None:
        return 0.0, 0
    stats = await server.info("commandstats")
    await server.config_resetstat()
    calls = sum(int(v["calls"]) for k, v in stats.items()
                if k not in ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config"))
    return float(stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0)), calls


async def main(uri: str, count: int, rounds: int, fifo: bool, fair: bool) -> None:
    policy = getattr(base, "FairPolicy", None)
    if fair and (policy is None or fifo):
        raise SystemExit("--fair needs a tree with fair queues (FairPolicy), and no --fifo")
    extra = {"fair": policy()} if fair and policy is not None else {}
    store = await open_store(uri)
    parts = urlsplit(uri)
    server = (redis.asyncio.Redis(host=parts.hostname or "127.0.0.1", port=parts.port or 6379)
              if parts.scheme == "redis" else None)
    posts: list[float] = []
    consumes: list[float] = []
    post_scripts: list[float] = []
    consume_scripts: list[float] = []
    commands = (0, 0)  # per post, per claim + delete (the same in every round)
    try:
        for r in range(rounds):
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            await _script_usec(server)
            started = time.perf_counter()
            for i in range(count):
                if fifo:
                    await store.post_fifo("bench", queue, "c", [
                        NewMessage(body=BODY, ttl=600, group_id=f"g{i // 10}")
                    ], dedup_window=300)
                else:
                    await store.post("bench", queue, "c", [NewMessage(body=BODY, ttl=600)])
            posts.append((time.perf_counter() - started) / count * 1e6)
            usec, post_calls = await _script_usec(server)
            post_scripts.append(usec)
            claim = store.claim_fifo if fifo else store.claim
            started = time.perf_counter()
            for _ in range(count):
                result = await claim("bench", queue, limit=1, ttl=60, grace=60, **extra)
                assert result.claim is not None
                for m in result.claim.messages:
                    await store.delete("bench", queue, m.id, result.claim.id)
            consumes.append((time.perf_counter() - started) / count * 1e6)
            usec, consume_calls = await _script_usec(server)
            consume_scripts.append(usec)
            commands = (post_calls // count, consume_calls // count)
            await store.delete_queue("bench", queue)
            print(f"round {r + 1}: post {posts[-1]:.0f} µs, claim + delete {consumes[-1]:.0f} µs"
                  f"; server per script: post {post_scripts[-1]:.2f} µs, claim or delete "
                  f"{consume_scripts[-1]:.2f} µs", flush=True)
    finally:
        await store.close()
        if server is not None:
            await server.aclose()
    print(f"post: median {statistics.median(posts):.0f} µs (min {min(posts):.0f}); "
          f"claim + delete: median {statistics.median(consumes):.0f} µs "
          f"(min {min(consumes):.0f})")
    if server is not None:
        print(f"server per script: post median {statistics.median(post_scripts):.2f} µs "
              f"(min {min(post_scripts):.2f}); claim or delete median "
              f"{statistics.median(consume_scripts):.2f} µs (min {min(consume_scripts):.2f}); "
              f"commands run by the scripts: {commands[0]} per post, {commands[1]} per "
              f"claim + delete")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", required=True, help="message store URI, e.g. redis://h:p/0")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fifo", action="store_true")
    parser.add_argument("--fair", action="store_true",
                        help="fair claims (FairPolicy's defaults) on messages without a group")
    args = parser.parse_args()
    asyncio.run(main(args.uri, args.count, args.rounds, args.fifo, args.fair))
