"""Fair queues: how long quiet groups' messages wait while one noisy group floods the queue.

A message store opened directly (no service, as ``store_hot_path.py``). Each scenario uses a
fresh standard queue: one *noisy* group posts a burst of ``--burst`` messages (batches of 10,
``--posters`` posts at a time, as fast as the store takes them), while ``--quiet`` quiet
groups each post one message every ``--interval`` seconds for ``--seconds``. ``--consumers``
consumers claim (limit 10), sleep ``--work`` seconds (the processing: the messages stay in
flight) and delete what they claimed with its claim (``delete_many``), until every message
is deleted. The dwell of a message is the time from just before its post to the claim that
took it. Scenarios, one after the other on each store in one run: fairness off (``claim``
without ``fair``), then fairness on with each ``--lookahead`` and each ``--backoff`` (default:
the ``FairPolicy`` defaults); as message_svc does, a futile fair claim (``ClaimResult.futile``)
makes the queue's claims plain for the back-off (``FairBackoff``).

Per scenario it prints p50/p99/max dwell of the quiet messages and of the noisy ones, the
noisy group's share of the messages claimed while the burst was being drained (from its first
post to the claim of its last message), the time to drain everything, the claims made with
``fair`` and how many of them were futile, and the ratios of the quiet dwell with fairness to
without::

    .venv/bin/python bench/fair_queues.py                                   # SQLite (temp file)
    .venv/bin/python bench/fair_queues.py --uri redis://127.0.0.1:6379/0 --uri sqlite:////tmp/f.db
    .venv/bin/python bench/fair_queues.py --lookahead 1000 --lookahead 200 --backoff 0 --backoff 1
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import redis.asyncio

sys.path.insert(0, os.getcwd())

from services.message_svc.fair_backoff import FairBackoff
from services.message_svc.storage.base import FairPolicy, MessageStore, NewMessage
from services.message_svc.storage.registry import open_store

PROJECT = "bench"
NOISY = "noisy"


@dataclasses.dataclass
class Outcome:
    name: str
    quiet: list[float]
    noisy: list[float]
    noisy_share: float
    drained: float
    claims: int
    fair_claims: int  # claims made with fair (the rest plain, or in a back-off)
    futile: int  # fair claims that were futile (ClaimResult.futile)
    script_usec: float = 0.0  # Redis: the server's mean time per script (EVALSHA), µs
    script_seconds: float = 0.0  # Redis: the server's time in scripts over the scenario


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


async def scenario(
    store: MessageStore, name: str, fair: FairPolicy | None, args: argparse.Namespace
) -> Outcome:
    # As message_svc does: plain claims of the queue for fair.backoff s after a futile one
    backoff = FairBackoff(0.0 if fair is None else fair.backoff)
    queue = f"fair-{uuid.uuid4().hex[:8]}"
    start = time.perf_counter()
    quiet_total = args.quiet * int(args.seconds / args.interval)
    expected = args.burst + quiet_total
    dwell: dict[str, list[float]] = {"quiet": [], "noisy": []}
    # (time of claim, group) of each claimed message, for the noisy share
    claimed: list[tuple[float, bool]] = []
    claims = fair_claims = futile = 0
    burst_started = 0.0

    def body(group: str) -> bytes:
        return json.dumps({"g": group, "t": time.perf_counter()}).encode()

    async def poster(first: int, step: int) -> None:
        for _ in range(first, args.burst // 10, step):
            await store.post(PROJECT, queue, "noisy", [
                NewMessage(body=body(NOISY), ttl=3600, group_id=NOISY) for _ in range(10)
            ])

    async def burst() -> None:
        nonlocal burst_started
        await asyncio.sleep(args.burst_at)
        burst_started = time.perf_counter()
        await asyncio.gather(*(poster(i, args.posters) for i in range(args.posters)))

    async def trickle(group: str, offset: float) -> None:
        await asyncio.sleep(offset)
        due = time.perf_counter()
        for _ in range(int(args.seconds / args.interval)):
            await store.post(PROJECT, queue, group, [
                NewMessage(body=body(group), ttl=3600, group_id=group)
            ])
            due += args.interval
            await asyncio.sleep(max(0.0, due - time.perf_counter()))

    async def consumer() -> None:
        nonlocal claims, fair_claims, futile
        while len(claimed) < expected:
            plain = fair is None or backoff.plain(PROJECT, queue)
            kwargs = {} if plain else {"fair": fair}
            result = await store.claim(PROJECT, queue, limit=10, ttl=300, grace=60, **kwargs)
            now = time.perf_counter()
            if result.futile:
                futile += 1
                backoff.futile(PROJECT, queue)
            if not plain:
                fair_claims += 1
            if result.claim is None:
                await asyncio.sleep(0.005)
                continue
            claims += 1
            for m in result.claim.messages:
                doc = json.loads(m.body)
                noisy = doc["g"] == NOISY
                dwell["noisy" if noisy else "quiet"].append(now - doc["t"])
                claimed.append((now, noisy))
            await asyncio.sleep(args.work)
            ids = [m.id for m in result.claim.messages]
            await store.delete_many(PROJECT, queue, ids, [result.claim.id])

    producers = [burst()] + [
        trickle(f"quiet{i}", i * args.interval / args.quiet) for i in range(args.quiet)
    ]
    await asyncio.gather(*producers, *(consumer() for _ in range(args.consumers)))
    drained = time.perf_counter() - start
    last_noisy = max(t for t, noisy in claimed if noisy)
    window = [noisy for t, noisy in claimed if burst_started <= t <= last_noisy]
    await store.delete_queue(PROJECT, queue)
    return Outcome(name, dwell["quiet"], dwell["noisy"],
                   sum(window) / len(window) if window else 0.0, drained, claims,
                   fair_claims, futile)


def row(o: Outcome) -> str:
    q, n = o.quiet, o.noisy
    return (f"| {o.name} | {statistics.median(q) * 1e3:.0f} / {_pct(q, 99) * 1e3:.0f} / "
            f"{max(q) * 1e3:.0f} | {statistics.median(n) * 1e3:.0f} / {_pct(n, 99) * 1e3:.0f} / "
            f"{max(n) * 1e3:.0f} | {o.noisy_share * 100:.1f} % | {o.drained:.1f} s | "
            f"{o.claims} | {o.fair_claims} / {o.futile} | "
            + (f"{o.script_usec:.0f} / {o.script_seconds:.2f} s |"
               if o.script_seconds else "- |"))


async def main(args: argparse.Namespace) -> None:
    uris = args.uri or [
        "sqlite:///" + os.path.join(tempfile.mkdtemp(prefix="fair-bench-"), "m.db")
    ]
    policies: list[tuple[str, FairPolicy | None]] = [("off", None)]
    for lookahead in args.lookahead:
        for backoff in args.backoff:
            policies.append((f"on, lookahead {lookahead}, back-off {backoff:g} s",
                             FairPolicy(lookahead=lookahead, backoff=backoff)))
    print(f"load average before: {os.getloadavg()[0]:.1f}; {args.burst} noisy messages, "
          f"{args.quiet} quiet groups x {1 / args.interval:.0f}/s for {args.seconds:.0f} s, "
          f"{args.consumers} consumers (limit 10, {args.work * 1e3:.0f} ms per claim)",
          flush=True)
    for uri in uris:
        store = await open_store(uri)
        parts = urlsplit(uri)
        server = (redis.asyncio.Redis(host=parts.hostname or "127.0.0.1",
                                      port=parts.port or 6379)
                  if parts.scheme == "redis" else None)
        outcomes: list[Outcome] = []
        try:
            for name, fair in policies:
                if server is not None:
                    await server.config_resetstat()
                outcomes.append(await scenario(store, name, fair, args))
                if server is not None:
                    stats = await server.info("commandstats")
                    evalsha = stats.get("cmdstat_evalsha", {})
                    outcomes[-1].script_usec = float(evalsha.get("usec_per_call", 0.0))
                    outcomes[-1].script_seconds = float(evalsha.get("usec", 0)) / 1e6
                print(f"  {uri.split(':')[0]} {name}: done in {outcomes[-1].drained:.1f} s",
                      flush=True)
        finally:
            await store.close()
            if server is not None:
                await server.aclose()
        print(f"\n{uri.split('://')[0]}: dwell, post -> claim, ms (p50 / p99 / max)\n")
        print("| fairness | quiet groups | noisy group | noisy share of claimed, burst window "
              "| all drained | claims | fair / futile | Redis: µs per script, mean / total |")
        print("|---|---|---|---|---|---|---|---|")
        for o in outcomes:
            print(row(o))
        off = outcomes[0]
        for o in outcomes[1:]:
            print(f"quiet dwell {o.name} / off: p50 "
                  f"{statistics.median(o.quiet) / statistics.median(off.quiet):.3f}, p99 "
                  f"{_pct(o.quiet, 99) / _pct(off.quiet, 99):.3f}, max "
                  f"{max(o.quiet) / max(off.quiet):.3f}; noisy p50 "
                  f"{statistics.median(o.noisy) / statistics.median(off.noisy):.3f}")
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--uri", action="append",
                        help="message store URI (repeat for several); default a temp SQLite")
    parser.add_argument("--burst", type=int, default=5000, help="noisy messages (x10)")
    parser.add_argument("--burst-at", type=float, default=1.0, help="seconds in")
    parser.add_argument("--posters", type=int, default=4)
    parser.add_argument("--quiet", type=int, default=5, help="quiet groups")
    parser.add_argument("--interval", type=float, default=0.1, help="s between quiet posts")
    parser.add_argument("--seconds", type=float, default=12.0, help="how long quiet groups post")
    parser.add_argument("--consumers", type=int, default=4)
    parser.add_argument("--work", type=float, default=0.05, help="s of processing per claim")
    parser.add_argument("--lookahead", type=int, action="append",
                        help="fair_lookahead of a fairness-on scenario (repeat; default 1000)")
    parser.add_argument("--backoff", type=float, action="append",
                        help="fair_backoff, s, of each fairness-on scenario (repeat; default "
                             "1; 0 = none)")
    args = parser.parse_args()
    args.lookahead = args.lookahead or [FairPolicy().lookahead]
    args.backoff = args.backoff or [FairPolicy().backoff]
    asyncio.run(main(args))
