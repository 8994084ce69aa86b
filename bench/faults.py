"""A fault campaign under load: no message acknowledged with a 201 is lost when any process
of the stack, or its store, is killed.

    python bench/faults.py [--store redis|redis-cluster|redis-sentinel|mongodb|sqlite]
        [--minutes 10]
        [--faults N] [--fault-every 3] [--store-down 1]
        [--kinds gateway,message,queue,notifier,redis]
        [--producers 4] [--consumers 4] [--seed 1] [--no-aof] [--no-wait] [--json FILE]
        [--stop-with kill|term|freeze] [--freeze-for 8] [--quiet]

It starts a durable redis-server (AOF, ``appendfsync always``) and ``zaqar-grpc up
--replicas 2`` on it (two processes of every service, each gateway on its own port, as on
Kubernetes). Producers post one message per request, each with a body of its own
(``{"p": producer, "n": n}``), through one gateway, and go to the other when a post fails
(a transport error or a 5xx), as a client behind a load balancer would; consumers claim up to
5 messages and delete each with its claim id, retried the same way.

Every ``--fault-every`` seconds one fault, drawn in turn from a seeded shuffle of the kinds
(``--kinds``):
``SIGKILL`` of one replica of the gateway, message_svc, queue_svc or notifier_svc (``up``
starts a new one in its place; the next fault waits for it), or ``SIGKILL`` of redis-server,
started again on the same AOF after ``--store-down`` seconds. With ``--stop-with term`` the
services' replicas get ``SIGTERM`` instead, as a rolling update on Kubernetes stops a pod
(with ``--kinds gateway,message,queue,notifier``, every 503 and transport error is then one
of a graceful stop).
With ``--stop-with freeze`` a replica of a service, or the one redis-server or MongoDB server,
is stopped with ``SIGSTOP`` for ``--freeze-for`` seconds (8 by default, more than the gateway's
5 s deadline) and let go on with ``SIGCONT``: a process that hangs, or a host that stalls, and
then answers the calls it had taken (a Redis Cluster's or a Sentinel group's faults are kills
still).

Then the faults stop, the stack is left to settle, the load stops, and every message still in
the queue is listed (``include_claimed``). The campaign fails (exit status 1) when

- **lost**: a message acknowledged with a 201 was neither claimed by a consumer nor is still
  in the queue, or a claimed one was neither deleted nor is still in the queue;
- **came back**: a message whose delete was answered 204 is in the queue again;
- **held twice**: a claim took a message that an earlier claim still held: the second claim's
  answer came before the first claim's request was sent plus its TTL (the first claim's
  expiry is at least that, by the one clock of this machine), so both held it at once;
- a request got a 5xx other than 503 (the answer while a store or replica is away), or a 4xx
  a correct client never gets.

``--store redis-cluster`` runs it on a Redis Cluster of three masters with a replica each
(``wait=1`` in the URIs unless ``--no-wait``); its fault (``redis-master``) kills the master
serving the campaign's queue, waits for its replica to take over, and starts it again (it comes
back as that replica's replica). ``--store redis-sentinel`` runs it on a master with two
replicas watched by three Sentinels (``redis+sentinel://``, ``wait=1`` unless ``--no-wait``),
which the services find through the Sentinels and are never told of; its faults are
``redis-failover``, which kills the master the Sentinels name, waits until they all name one of
its replicas, and starts it again (it comes back as the new master's replica), and
``sentinel``, which kills one of the Sentinels for ``--store-down`` seconds. ``--store
mongodb`` runs it on one MongoDB wire server (the test suite's, a one-member replica set,
writes ``w=majority, j=true``) holding every store, on disk; its fault (``mongodb``) kills it
and starts it again on the same files after ``--store-down`` seconds. There the queue is listed
25 s after the last fault: a post cut short by a kill of message_svc leaves its seq range
pending, and listings stop below a pending range (claims do not) until a sweep finds its writer
has not noted itself alive for ``WRITER_GONE`` (docs/architecture.md). ``--store sqlite``
runs the stack on its default stores (SQLite files in the data folder, shared by both replicas
of a service), and kills only the services' processes.

``--no-aof`` runs redis-server without its AOF, so that each of its kills loses what it held:
the campaign then reports those messages as lost, which shows that it can tell.

Also counted, and not failures: a message stored without a 201 and a body stored twice (a
post whose answer was lost, retried by the client, which cannot tell it from a post that
failed), a message claimed twice (its delete failed, and its claim expired), 503s and
transport errors.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.common.config import Settings  # noqa: E402
from services.message_svc.storage.mongodb._documents import WRITER_GONE  # noqa: E402
from tests.e2e.harness import Stack, start_stack  # noqa: E402
from tests.servers import (  # noqa: E402
    RedisClusterProcesses,
    RedisSentinelProcesses,
    ServerProcess,
    mongodb_process,
    mongodb_uri,
    redis_process,
    start_redis_cluster,
    start_redis_sentinel,
    wait_mongodb_primary,
)

QUEUE = "faults"
SERVICES = ("gateway", "message", "queue", "notifier")
KINDS = (*SERVICES, "redis", "redis-master", "redis-failover", "sentinel", "mongodb")
# How --stop-with stops a service's replica.
STOP_SIGNALS = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "freeze": signal.SIGSTOP}
# The store kinds each --store can kill.
STORE_KINDS = {"redis": ("redis",), "redis-cluster": ("redis-master",),
               "redis-sentinel": ("redis-failover", "sentinel"), "mongodb": ("mongodb",),
               "sqlite": ()}
# The replicas of the Sentinels' master: with two, a write still finds one to confirm it
# (wait=1) while the master killed by the last failover is away.
SENTINEL_REPLICAS = 2
# How a fault of the one store server is named in the campaign's report.
SERVER_LABELS = {"redis": "redis-server", "mongodb": "mongodb"}
REPLICAS = 2
# A message outlives the campaign; a claim lasts the least Zaqar allows.
MESSAGE_TTL, CLAIM_TTL, CLAIM_GRACE = 3600, 60, 60
RETRY_PAUSE = 0.05
# Seconds a replaced process or the restarted store may take to be back.
RECOVERY_TIMEOUT = 120
# Seconds past WRITER_GONE (after the last fault) before the queue is listed on MongoDB: a
# sweep of message_svc (gc_interval, 5 s) and then some.
LISTING_MARGIN = 10.0


@dataclass
class Tally:
    acknowledged: dict[str, str] = field(default_factory=dict)  # id -> body key
    seen: dict[str, str] = field(default_factory=dict)  # id -> body key, of every id read
    claimed: collections.Counter[str] = field(default_factory=collections.Counter)
    # id -> (when the claim's request was sent, when its answer came) of each claim taking it
    holds: dict[str, list[tuple[float, float]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    deleted: set[str] = field(default_factory=set)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    transport_errors: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)

    def status(self, what: str, reply: httpx.Response) -> None:
        self.statuses[f"{what} {reply.status_code}"] += 1
        if reply.status_code >= 500 and reply.status_code != 503:
            self.unexpected.append(f"{what} {reply.status_code} {reply.text[:200]}")


class Gateways:
    """HTTP clients of every gateway replica; a worker moves to the next on a failure."""

    def __init__(self, urls: list[str], project: str) -> None:
        headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": project,
                   "Content-Type": "application/json"}
        self.clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=30)
                        for u in urls]

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


async def send(
    gateways: Gateways, start: int, tally: Tally, what: str, method: str, url: str,
    stop: asyncio.Event | None, **kwargs: Any,
) -> httpx.Response | None:
    """The first answer that is not a failure (transport error or 5xx), trying the gateways
    in turn from ``start``; None once ``stop`` is set first."""
    n = start
    while stop is None or not stop.is_set():
        http = gateways.clients[n % len(gateways.clients)]
        try:
            reply = await http.request(method, url, **kwargs)
        except httpx.TransportError:
            tally.transport_errors += 1
        else:
            tally.status(what, reply)
            if reply.status_code < 500:
                return reply
        n += 1
        await asyncio.sleep(RETRY_PAUSE)
    return None


async def produce(gateways: Gateways, p: int, tally: Tally, stop: asyncio.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        reply = await send(
            gateways, p, tally, "post", "POST", f"/v2/queues/{QUEUE}/messages", stop,
            json={"messages": [{"body": {"p": p, "n": n}, "ttl": MESSAGE_TTL}]},
        )
        if reply is None:
            return
        if reply.status_code != 201:
            tally.unexpected.append(f"post {reply.status_code} {reply.text[:200]}")
            continue
        mid = reply.json()["resources"][0].rsplit("/", 1)[1]
        tally.acknowledged[mid] = f"{p}:{n}"


async def consume(gateways: Gateways, c: int, tally: Tally, stop: asyncio.Event) -> None:
    while not stop.is_set():
        sent = time.time()  # wall time, as the servers' claim expiries are
        reply = await send(
            gateways, c, tally, "claim", "POST", f"/v2/queues/{QUEUE}/claims?limit=5", stop,
            json={"ttl": CLAIM_TTL, "grace": CLAIM_GRACE},
        )
        answered = time.time()
        if reply is None:
            return
        if reply.status_code == 204:
            await asyncio.sleep(RETRY_PAUSE)
            continue
        if reply.status_code != 201:
            tally.unexpected.append(f"claim {reply.status_code} {reply.text[:200]}")
            continue
        for message in reply.json()["messages"]:
            mid = message["href"].split("?", 1)[0].rsplit("/", 1)[1]
            tally.claimed[mid] += 1
            tally.holds[mid].append((sent, answered))
            tally.seen[mid] = body_key(message["body"])
            # Deleted even after the load stops: a claimed message is the consumer's to finish.
            done = await send(gateways, c, tally, "delete", "DELETE", message["href"], None)
            assert done is not None
            if done.status_code == 204:
                tally.deleted.add(mid)
            elif done.status_code not in (400, 403):
                # 400 or 403: its claim expired meanwhile, and it may be another's claim now
                tally.unexpected.append(f"delete {done.status_code} {done.text[:200]}")


def body_key(body: Any) -> str:
    """``p:n`` of a body ``{"p": p, "n": n}``."""
    return f"{body['p']}:{body['n']}"


async def remaining(gateways: Gateways, tally: Tally) -> list[str]:
    """Every message id in the queue, claimed ones included."""
    ids: list[str] = []
    params: dict[str, Any] = {"limit": 20, "echo": "true", "include_claimed": "true"}
    while True:
        reply = await send(gateways, 0, tally, "list", "GET", f"/v2/queues/{QUEUE}/messages",
                           None, params=params)
        assert reply is not None
        if reply.status_code == 204:
            return ids
        if reply.status_code != 200:
            raise SystemExit(f"faults: listing the queue failed: {reply.status_code} {reply.text}")
        if not reply.json()["messages"]:
            return ids
        for m in reply.json()["messages"]:
            ids.append(m["id"])
            tally.seen[m["id"]] = body_key(m["body"])
        href = reply.json()["links"][0]["href"]
        params["marker"] = href.split("marker=", 1)[1].split("&", 1)[0]


def wait_until(predicate: Any, what: str, timeout: float = RECOVERY_TIMEOUT) -> float:
    """Seconds it took ``predicate`` to hold; SystemExit after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"faults: {what} not within {timeout:g} s")
        time.sleep(0.05)
    return time.monotonic() - started


def answers(server: ServerProcess) -> bool:
    """Whether redis-server answers PING (it may still be loading its AOF)."""
    client = redis.Redis(port=server.port, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def serving(cluster: RedisClusterProcesses, key: str) -> int | None:
    """The port of the node serving ``key``'s slot, as the live nodes say; None while they
    cannot say."""
    try:
        return cluster.master_of(key).port
    except (redis.RedisError, StopIteration):
        return None


@dataclass
class Store:
    """What the campaign may kill of the store: one redis-server or MongoDB wire server, a
    Redis Cluster's master of the campaign's queue, or the master or a Sentinel of a Sentinel
    group; none of them for SQLite."""

    server: ServerProcess | None = None
    cluster: RedisClusterProcesses | None = None
    group: RedisSentinelProcesses | None = None
    queue_key: str = ""


def inject(kind: str, rng: random.Random, stack: Stack, store: Store,
           store_down: float, stop_with: signal.Signals = signal.SIGKILL,
           freeze_for: float = 0.0) -> dict[str, Any]:
    """One fault, and the wait until what it killed (or, ``stop_with`` SIGTERM, stopped) is
    back; with ``stop_with`` SIGSTOP, a replica of a service or the one store server is
    frozen for ``freeze_for`` seconds and then let go on (SIGCONT)."""
    started = time.monotonic()
    if stop_with == signal.SIGSTOP and kind not in ("redis-master", "redis-failover", "sentinel"):
        if kind in ("redis", "mongodb"):
            assert store.server is not None and store.server.proc is not None
            pid = store.server.proc.pid
            label = SERVER_LABELS[kind]
        else:
            label = f"{kind}.{rng.randrange(REPLICAS)}"
            pid = stack.child_pids()[label]
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(freeze_for)
        finally:
            os.kill(pid, signal.SIGCONT)
        label += " (frozen)"
    elif kind == "redis-master":
        cluster = store.cluster
        assert cluster is not None
        master = cluster.master_of(store.queue_key)
        master.kill()
        wait_until(lambda: serving(cluster, store.queue_key) not in (None, master.port),
                   "a replica taking over")
        cluster.wait_healthy(RECOVERY_TIMEOUT)
        master.start()
        cluster.wait_healthy(RECOVERY_TIMEOUT)  # it is back, as the new master's replica
        label = "redis-master"
    elif kind == "redis-failover":
        group = store.group
        assert group is not None
        old = group.master_port()
        assert old is not None, "the Sentinels name no master"
        master = group.server(old)
        master.kill()
        # Started again only once every Sentinel names another master: one that still named
        # it would make it the master again, empty.
        group.wait_healthy(RECOVERY_TIMEOUT, not_on=old)
        master.start()
        group.wait_healthy(RECOVERY_TIMEOUT)  # it is back, as the new master's replica
        label = "redis-failover"
    elif kind == "sentinel":
        group = store.group
        assert group is not None
        sentinel = rng.choice(group.sentinels)
        sentinel.kill()
        time.sleep(store_down)
        sentinel.start()
        group.wait_healthy(RECOVERY_TIMEOUT)
        label = "sentinel"
    elif kind in ("redis", "mongodb"):
        server = store.server
        assert server is not None
        server.kill()
        time.sleep(store_down)
        server.start()
        if kind == "redis":
            wait_until(lambda: answers(server), "redis-server back")
        else:
            wait_mongodb_primary(server, RECOVERY_TIMEOUT)
        label = SERVER_LABELS[kind]
    else:
        label = f"{kind}.{rng.randrange(REPLICAS)}"
        old = stack.child_pids()[label]
        os.kill(old, stop_with)
        wait_until(lambda: stack.child_pids().get(label, old) != old, f"a new {label}")
    return {"fault": label, "at": round(started, 2),
            "back_after_s": round(time.monotonic() - started, 2)}


async def load(urls: list[str], project: str, args: argparse.Namespace, tally: Tally,
               faults_done: asyncio.Event) -> list[str]:
    gateways = Gateways(urls, project)
    stop = asyncio.Event()
    workers = [asyncio.create_task(produce(gateways, p, tally, stop))
               for p in range(args.producers)]
    workers += [asyncio.create_task(consume(gateways, c, tally, stop))
                for c in range(args.consumers)]
    await faults_done.wait()
    await asyncio.sleep(args.settle)
    stop.set()
    await asyncio.gather(*workers)
    if args.store == "mongodb":
        # A message_svc killed in the middle of a post leaves its seq range pending, and
        # listings stop below a pending range (claims do not) until a sweep finds its writer
        # gone: not heard from for WRITER_GONE.
        await asyncio.sleep(max(0.0, WRITER_GONE + LISTING_MARGIN - args.settle))
    left = await remaining(gateways, tally)
    await gateways.aclose()
    return left


def campaign(args: argparse.Namespace) -> dict[str, Any]:
    """Run the campaign ``args`` describe (``parser()``'s options); its summary."""
    rng = random.Random(args.seed)
    tally = Tally()
    kinds_drawn = args.kinds or (*SERVICES, *STORE_KINDS[args.store])
    foreign = [k for k in kinds_drawn if k not in (*SERVICES, *STORE_KINDS[args.store])]
    if foreign:
        raise SystemExit(f"faults: --store {args.store} cannot kill {', '.join(foreign)}")
    project = f"faults-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as cleanup:
        if args.keep is None:
            work = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        else:
            work = args.keep
            work.mkdir(parents=True, exist_ok=True)
        ports = {name: 0 for name in (
            "http_port", "ws_port", "queue_port", "message_port", "notifier_port",
            "queue_metrics_port", "message_metrics_port", "notifier_metrics_port")}
        overrides: dict[str, Any] = {
            "data_dir": str(work / "data"), "log_level": "WARNING", **ports}
        store = Store(queue_key=f"{{{project}/{QUEUE}}}")
        if args.store == "redis":
            store.server = redis_process(work / "redis", durable=not args.no_aof)
            store.server.start()
            uri = f"redis://127.0.0.1:{store.server.port}/0"
            overrides.update(queue_store=uri, message_store=uri, notifier_store=uri)
        elif args.store == "redis-cluster":
            store.cluster = start_redis_cluster(work / "cluster")
            overrides.update(store.cluster.stack_uris("f", "" if args.no_wait else "&wait=1"))
        elif args.store == "redis-sentinel":
            store.group = start_redis_sentinel(work / "sentinel", replicas=SENTINEL_REPLICAS)
            overrides.update(store.group.stack_uris("f", "" if args.no_wait else "&wait=1"))
        elif args.store == "mongodb":
            store.server = mongodb_process(work / "mongodb")
            store.server.start()
            wait_mongodb_primary(store.server, RECOVERY_TIMEOUT)
            overrides.update({f"{s}_store": mongodb_uri(store.server, f"faults_{s}")
                              for s in ("queue", "message", "notifier")})
        # else every store is the default: SQLite files in the data folder
        settings = Settings.load(environ={}, overrides=overrides)
        stack = start_stack(settings, ["--replicas", str(REPLICAS)], timeout=240)
        try:
            line = next(x for x in stack.output if x.startswith("zaqar-grpc is up"))
            urls = [u.removesuffix("/v2/") for u in line.split() if u.startswith("http://")]
            loop = asyncio.new_event_loop()
            faults_done = asyncio.Event()
            result: list[list[str]] = []
            failed: list[BaseException] = []

            def run_load() -> None:
                asyncio.set_event_loop(loop)
                try:
                    result.append(
                        loop.run_until_complete(load(urls, project, args, tally, faults_done)))
                except BaseException as exc:  # raised again in the main thread, below
                    failed.append(exc)

            runner = threading.Thread(target=run_load)
            runner.start()
            began = time.monotonic()
            try:
                wait_until(lambda: len(tally.acknowledged) > 0, "a first acknowledged post")
                time.sleep(args.fault_every)
                kinds: list[str] = []
                while (time.monotonic() - began < args.minutes * 60
                       and (args.faults is None or len(tally.faults) < args.faults)):
                    if not kinds:
                        kinds = list(kinds_drawn)
                        rng.shuffle(kinds)
                    fault = inject(kinds.pop(), rng, stack, store, args.store_down,
                                   STOP_SIGNALS[args.stop_with], args.freeze_for)
                    fault["at"] = round(fault["at"] - began, 2)
                    fault["acknowledged_so_far"] = len(tally.acknowledged)
                    tally.faults.append(fault)
                    if args.verbose:
                        print(json.dumps(fault), flush=True)
                    time.sleep(args.fault_every)
                after = len(tally.acknowledged)
                wait_until(lambda: len(tally.acknowledged) > after,
                           "a post acknowledged after the last fault")
            finally:
                loop.call_soon_threadsafe(faults_done.set)
                runner.join()
                loop.close()
            if failed:
                raise failed[0]
            left = result[0]
        finally:
            stack.stop()
            if args.log is not None:
                args.log.write_text("".join(stack.output))
            if store.server is not None:
                store.server.stop()
            if store.cluster is not None:
                store.cluster.stop()
            if store.group is not None:
                store.group.stop()
    return summarize(tally, left, args)


def kinds_list(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(
            f"{text!r}: name some of {', '.join(KINDS)}, comma-separated"
        )
    return kinds


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="how long faults go on")
    ap.add_argument("--faults", type=int, help="stop after this many faults (default: none)")
    ap.add_argument("--fault-every", type=float, default=3.0,
                    help="seconds between one fault's recovery and the next fault")
    ap.add_argument("--store-down", type=float, default=1.0,
                    help="seconds redis-server or the MongoDB server stays down")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds of load after the last fault")
    ap.add_argument("--store", choices=tuple(STORE_KINDS), default="redis",
                    help="redis: one durable redis-server for every store (default); "
                         "redis-cluster: a Redis Cluster of three masters with a replica each "
                         "(the URIs with wait=1); redis-sentinel: a master with two replicas "
                         "and three Sentinels (the message store with wait=1); mongodb: one "
                         "MongoDB wire server on disk for "
                         "every store; sqlite: the default stores, SQLite files shared by the "
                         "replicas")
    ap.add_argument("--no-wait", action="store_true",
                    help="on a Redis Cluster or a Sentinel group, without wait=1: writes "
                         "acknowledged before a replica has them")
    ap.add_argument("--kinds", type=kinds_list,
                    help="the faults to draw from, comma-separated: gateway, message, queue, "
                         "notifier, and the store's (redis, redis-master on a Redis Cluster, "
                         "redis-failover and sentinel on a Sentinel group, mongodb); default "
                         "all of them")
    ap.add_argument("--no-aof", action="store_true",
                    help="redis-server without its AOF, which loses what it held at each kill: "
                         "to see the campaign catch a loss")
    ap.add_argument("--stop-with", choices=tuple(STOP_SIGNALS), default="kill",
                    help="how a service's replica is stopped: kill (SIGKILL, a crash; the "
                         "default), term (SIGTERM, as a rolling update stops a pod) or freeze "
                         "(SIGSTOP, then SIGCONT after --freeze-for seconds: a process that "
                         "hangs, or a host that stalls; also the one redis-server or MongoDB "
                         "server)")
    ap.add_argument("--freeze-for", type=float, default=8.0,
                    help="with --stop-with freeze, seconds a process stays frozen (more than "
                         "the gateway's 5 s deadline by default)")
    ap.add_argument("--producers", type=int, default=4)
    ap.add_argument("--consumers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--log", type=Path, help="write the services' output here")
    ap.add_argument("--keep", type=Path,
                    help="run in this folder (made if missing) and leave it: the stores' "
                         "files and the services' data, to look into after a failure")
    ap.add_argument("--quiet", dest="verbose", action="store_false",
                    help="do not print each fault as it happens")
    return ap


def main() -> None:
    args = parser().parse_args()
    summary = campaign(args)
    print(json.dumps({k: v for k, v in summary.items() if k != "fault_log"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print("faults: ok" if summary["ok"] else "faults: FAILED", flush=True)
    raise SystemExit(0 if summary["ok"] else 1)


def summarize(tally: Tally, left: list[str], args: argparse.Namespace) -> dict[str, Any]:
    in_queue = set(left)
    # Acknowledged and never claimed, or claimed and neither deleted nor back in the queue.
    lost = sorted((set(tally.acknowledged) - set(tally.claimed) - in_queue)
                  | (set(tally.claimed) - tally.deleted - in_queue))
    came_back = sorted(tally.deleted & in_queue)
    held_twice = sorted(mid for mid, holds in tally.holds.items() if _overlap(holds))
    # Bodies stored under more than one id: a post whose answer was lost, retried.
    ids_of: dict[str, set[str]] = collections.defaultdict(set)
    for mid, key in (*tally.acknowledged.items(), *tally.seen.items()):
        ids_of[key].add(mid)
    kinds = collections.Counter(f["fault"].split(".")[0] for f in tally.faults)
    return {
        "ok": not lost and not came_back and not held_twice and not tally.unexpected,
        "store": args.store, "minutes": args.minutes, "seed": args.seed,
        "faults": len(tally.faults),
        "faults_by_kind": dict(sorted(kinds.items())),
        "acknowledged": len(tally.acknowledged), "claimed": len(tally.claimed),
        "deleted": len(tally.deleted), "left_in_queue": len(in_queue),
        "lost": len(lost), "came_back_after_delete": len(came_back),
        "held_twice": len(held_twice),
        "stored_twice": sum(1 for ids in ids_of.values() if len(ids) > 1),
        "stored_without_201": len(set(tally.seen) - set(tally.acknowledged)),
        "claimed_twice": sum(1 for n in tally.claimed.values() if n > 1),
        "transport_errors": tally.transport_errors,
        "statuses": dict(sorted(tally.statuses.items())),
        "unexpected": tally.unexpected[:20], "unexpected_count": len(tally.unexpected),
        "lost_ids": lost[:20], "came_back_ids": came_back[:20],
        "held_twice_ids": held_twice[:20],
        "lost_by_fault": _lost_by_fault(tally, lost),
        "longest_recovery_s": max((f["back_after_s"] for f in tally.faults), default=0),
        "fault_log": tally.faults,
    }


def _lost_by_fault(tally: Tally, lost: list[str]) -> dict[str, int]:
    """How many of the lost messages were acknowledged after each fault (``"before any"``
    for those acknowledged before the first): where to look for what lost them."""
    order = {mid: n for n, mid in enumerate(tally.acknowledged)}
    counts: collections.Counter[str] = collections.Counter()
    for mid in lost:
        n = order.get(mid)
        if n is None:
            counts["claimed, never acknowledged"] += 1
            continue
        last = "before any"
        for i, fault in enumerate(tally.faults):
            if fault["acknowledged_so_far"] <= n:
                last = f"{i + 1}: {fault['fault']}"
        counts[last] += 1
    return dict(counts)


def _overlap(holds: list[tuple[float, float]]) -> bool:
    """Whether a claim in ``holds`` (sent, answered) was answered while the claim sent before
    it still held the message: before that one was sent plus CLAIM_TTL."""
    ordered = sorted(holds)
    return any(later[1] < earlier[0] + CLAIM_TTL
               for earlier, later in itertools.pairwise(ordered))


if __name__ == "__main__":
    main()
