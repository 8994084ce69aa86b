"""How the cost of a request grows with the work, for zaqar-grpc and real Zaqar 23, in one run:

    .venv/bin/python bench/scaling.py [--systems ours,zaqar] [--messages 10,10000,1000000]
                                      [--queues 10,100000] [--connections 1,4,16,64,256]
                                      [--samples 300] [--seconds 15] [--rounds 3]
                                      [--fill direct|http] [--json FILE]

Every system runs on its own redis-server (as in ``bench/wrk_compare.py``, whose start-up code
this reuses: zaqar-grpc is ``zaqar-grpc up --store redis://…`` with default settings, Zaqar is
23.0.1 under gunicorn with 2 sync workers, its best configuration on this machine). For each:

- **Messages in one queue.** For each count N, a queue is filled with N messages, then one
  request at a time, on one keep-alive connection (Zaqar's sync workers close it after every
  answer, as they serve), ``--samples`` times each: post one message; claim one message and
  delete it with its claim id. The queue keeps N messages.
- **Queues in one project.** For each count Q, a project gets Q queues, then one request at a
  time: post one message and claim + delete it on the last queue made, and list the queues
  (``GET /v2/queues?limit=20``, the first page and a page from a marker in the middle).

The prefill (``--fill``): ``direct`` (the default) makes the queue with a first HTTP post of 20
messages (the last of Q queues with an HTTP PUT), and writes the rest straight into the
system's store through the system's own storage API, in big batches: ours through
``RedisMessageStore.post`` (1000 messages a call) and ``RedisQueueStore.create``, 16 calls in
flight; Zaqar through its ``MessageController.post`` and ``QueueController.create``
(``bench/zaqar_fill.py``, run in the reference venv). Over HTTP, 100k queues took 15-20
minutes for each system on this machine. ``http`` fills over HTTP only (batches of 20, 8
requests in flight). The measured requests are the same either way.
- **Connections.** ``wrk`` posts one message per request on C connections for ``--seconds``
  (``bench/wrk/post.lua``): requests/s and p50/p99 for each C.

Every size is measured in ``--rounds`` rounds (default 3), each with its share of the samples
(or of the seconds), the sizes in turn and each round in the opposite order of the last, after
every size was prefilled (and warmed up with 20 requests): on a machine whose load drifts,
every size sees the same drift. Percentiles are over all the rounds' samples (wrk's: merged
from its percentiles). The systems run one at a time, each stopped before the next starts.

Printed as Markdown tables (p50 / p99 in milliseconds, measured at the client), and as JSON
with ``--json``. A flat row means the cost does not grow with the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.wrk_compare import (  # noqa: E402
    HEADERS,
    ZAQAR_WSGI,
    Session,
    System,
    log,
    merge_latency,
    prepare_reference,
    require_tools,
    start_ours,
    start_zaqar,
    uptime,
)

BATCH = 20          # messages per prefill post: Zaqar's largest batch
IN_FLIGHT = 8       # prefill requests at once
BULK = 1000         # messages per store call of the direct prefill (ours)
BULK_IN_FLIGHT = 16  # store calls at once in the direct prefill (ours)
BODY = {"event": "scaling", "payload": "0123456789abcdef"}
ZAQAR_VENV = Path(os.environ.get("ZAQAR_REF_VENV", HERE / ".venv-zaqar"))


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered) * 1000, 2),
            "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2)}


async def fill_queue(url: str, queue: str, count: int) -> None:
    """``count`` messages into ``queue``, ``BATCH`` per post, ``IN_FLIGHT`` posts at once."""
    posts = [min(BATCH, count - i) for i in range(0, count, BATCH)]
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, limits=limits,
                                 timeout=60) as http:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def post(n: int) -> None:
            body = {"messages": [{"body": BODY, "ttl": 86400} for _ in range(n)]}
            async with gate:
                for _ in range(5):
                    answer = await http.post(f"/v2/queues/{queue}/messages", json=body)
                    if answer.status_code == 201:
                        return
                raise SystemExit(f"scaling: prefill post answered {answer.status_code}: "
                                 f"{answer.text[:200]}")

        started, done = time.monotonic(), 0
        for start in range(0, len(posts), 1000):
            await asyncio.gather(*(post(n) for n in posts[start:start + 1000]))
            done += sum(posts[start:start + 1000])
            if done % 100_000 < BATCH * 1000:
                log(f"  {queue}: {done} of {count} messages ({time.monotonic() - started:.0f} s)")


async def make_queues(url: str, project: str, names: list[str]) -> None:
    count = len(names)
    headers = {**HEADERS, "X-Project-ID": project}
    limits = httpx.Limits(max_connections=IN_FLIGHT)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=60) as http:
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def put(name: str) -> None:
            async with gate:
                answer = await http.put(f"/v2/queues/{name}", content=b"{}")
                if answer.status_code not in (201, 204):
                    raise SystemExit(f"scaling: PUT queue answered {answer.status_code}")

        for start in range(0, count, 2000):
            await asyncio.gather(*(put(n) for n in names[start:start + 2000]))


async def fill_ours_store(uri: str, project: str, queue: str, count: int) -> None:
    """``count`` messages into ``queue`` through zaqar-grpc's message store, as message_svc
    stores a post (the gateway hands the body over as ``orjson.dumps`` of it)."""
    import orjson

    from services.message_svc.storage.base import NewMessage
    from services.message_svc.storage.redis.store import RedisMessageStore

    store = RedisMessageStore.from_uri(uri)
    await store.open()
    try:
        body, gate = orjson.dumps(BODY), asyncio.Semaphore(BULK_IN_FLIGHT)

        async def post(n: int) -> None:
            async with gate:
                await store.post(project, queue, HEADERS["Client-ID"],
                                 [NewMessage(body=body, ttl=86400) for _ in range(n)])

        started = time.monotonic()
        for start in range(0, count, 100_000):
            part = min(100_000, count - start)
            await asyncio.gather(*(post(min(BULK, part - i)) for i in range(0, part, BULK)))
            log(f"  {queue}: {start + part} of {count} messages "
                f"({time.monotonic() - started:.0f} s)")
    finally:
        await store.close()


async def make_queues_store(uri: str, project: str, names: list[str]) -> None:
    """``names`` as queues with empty metadata, through zaqar-grpc's queue store."""
    from services.queue_svc.storage.redis.queues import RedisQueueStore

    store = RedisQueueStore.from_uri(uri)
    await store.open()
    try:
        gate = asyncio.Semaphore(BULK_IN_FLIGHT)

        async def create(name: str) -> None:
            async with gate:
                await store.create(project, name, {})

        started = time.monotonic()
        for start in range(0, len(names), 10_000):
            await asyncio.gather(*(create(n) for n in names[start:start + 10_000]))
            log(f"  {project}: {min(len(names), start + 10_000)} of {len(names)} queues "
                f"({time.monotonic() - started:.0f} s)")
    finally:
        await store.close()


def zaqar_fill(system: System, *args: str) -> None:
    """``bench/zaqar_fill.py`` with ``args``; its progress lines are logged (osprofiler's
    complaint that oslo.messaging is missing, logged when Zaqar's storage starts, is not)."""
    proc = subprocess.Popen([str(ZAQAR_VENV / "bin" / "python"), str(HERE / "zaqar_fill.py"),
                             system.store, *args], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("fill: "):
            log("  " + line.rstrip().removeprefix("fill: "))
    if proc.wait():
        raise SystemExit("scaling: zaqar_fill.py failed:\n" + "".join(lines[-30:]))


def prefill_queue(system: System, fill: str, queue: str, count: int) -> None:
    """``count`` messages in ``queue``: the first ``BATCH`` over HTTP (which makes the queue),
    the rest as ``fill`` says."""
    url, project = system.urls[0], HEADERS["X-Project-ID"]
    first = count if fill == "http" else min(BATCH, count)
    asyncio.run(fill_queue(url, queue, first))
    if count > first:
        if system.key == "ours":
            asyncio.run(fill_ours_store(system.store, project, queue, count - first))
        else:
            zaqar_fill(system, "messages", project, queue, str(count - first),
                       HEADERS["Client-ID"])


def prefill_queues(system: System, fill: str, project: str, count: int) -> list[str]:
    """``count`` queues in ``project``; the last one is made over HTTP in any case."""
    names = [f"q{i:06d}" for i in range(count)]
    if fill == "http" or count == 1:
        asyncio.run(make_queues(system.urls[0], project, names))
        return names
    if system.key == "ours":
        asyncio.run(make_queues_store(system.store, project, names[:-1]))
    else:
        zaqar_fill(system, "queues", project, "0", str(count - 1))
    asyncio.run(make_queues(system.urls[0], project, names[-1:]))
    return names


def timed(samples: int, call: Callable[[], None]) -> list[float]:
    """Seconds each of ``samples`` calls took."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def post_and_claim(http: httpx.Client, queue: str, samples: int) -> dict[str, list[float]]:
    """Post one message, ``samples`` times; then claim one and delete it, as often."""
    body = {"messages": [{"body": BODY, "ttl": 86400}]}

    def post() -> None:
        answer = http.post(f"/v2/queues/{queue}/messages", json=body)
        if answer.status_code != 201:
            raise SystemExit(f"scaling: post answered {answer.status_code}")

    def claim_delete() -> None:
        answer = http.post(f"/v2/queues/{queue}/claims?limit=1",
                           json={"ttl": 300, "grace": 60})
        if answer.status_code != 201:
            raise SystemExit(f"scaling: claim answered {answer.status_code}")
        href = answer.json()["messages"][0]["href"]
        deleted = http.delete(href)
        if deleted.status_code != 204:
            raise SystemExit(f"scaling: delete answered {deleted.status_code}")

    return {"post": timed(samples, post), "claim_delete": timed(samples, claim_delete)}


def listings(http: httpx.Client, names: list[str], samples: int) -> dict[str, list[float]]:
    """``GET /v2/queues?limit=20``: the first page, then a page from the middle name."""

    def listing(marker: str | None) -> Callable[[], None]:
        params = {"limit": "20", **({"marker": marker} if marker else {})}

        def call() -> None:
            answer = http.get("/v2/queues", params=params)
            if answer.status_code != 200 or not answer.json()["queues"]:
                raise SystemExit(f"scaling: listing answered {answer.status_code}")
        return call

    return {"list_first_page": timed(samples, listing(None)),
            "list_from_middle": timed(samples, listing(names[len(names) // 2]))}


def client(url: str, project: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={**HEADERS, "X-Project-ID": project}, timeout=30)


def round_orders(counts: list[int], rounds: int) -> list[list[int]]:
    """The order of the sizes in each round: as given, then reversed, and so on."""
    return [counts if r % 2 == 0 else counts[::-1] for r in range(rounds)]


def share(samples: int, rounds: int) -> int:
    return max(1, -(-samples // rounds))


def in_rounds(system: System, what: str, counts: list[int], samples: int, rounds: int,
              measure: Callable[[int, int], dict[str, list[float]]]) -> dict[int, Any]:
    """``measure(count, n)`` for every size, in ``rounds`` rounds of ``samples / rounds``
    samples each (the sizes in turn, each round in the opposite order of the last), so that
    every size sees the same drift in the machine's load; percentiles over all the rounds."""
    pooled: dict[int, dict[str, list[float]]] = {n: {} for n in counts}
    for r, order in enumerate(round_orders(counts, rounds), 1):
        for count in order:
            for key, times in measure(count, share(samples, rounds)).items():
                pooled[count].setdefault(key, []).extend(times)
        log(f"{system.label}: {what}, round {r} of {rounds} done")
    results = {n: {key: percentiles(times) for key, times in rows.items()}
               for n, rows in pooled.items()}
    for n in counts:
        log(f"  {n} {what}: {results[n]}")
    return results


def by_messages(system: System, counts: list[int], samples: int, rounds: int,
                fill: str) -> dict[int, Any]:
    url = system.urls[0]
    for count in counts:
        log(f"{system.label}: {count} messages in one queue")
        prefill_queue(system, fill, f"messages-{count}", count)
    with client(url, HEADERS["X-Project-ID"]) as http:
        for count in counts:
            post_and_claim(http, f"messages-{count}", 20)   # warm-up
        return in_rounds(system, "messages", counts, samples, rounds,
                         lambda count, n: post_and_claim(http, f"messages-{count}", n))


def by_queues(system: System, counts: list[int], samples: int, rounds: int,
              fill: str) -> dict[int, Any]:
    url, names = system.urls[0], {}
    for count in counts:
        log(f"{system.label}: {count} queues in one project")
        names[count] = prefill_queues(system, fill, f"scaling-queues-{count}", count)
    clients = {count: client(url, f"scaling-queues-{count}") for count in counts}
    try:
        for count, http in clients.items():
            post_and_claim(http, names[count][-1], 20)   # warm-up
            listings(http, names[count], 20)
        return in_rounds(system, "queues", counts, samples, rounds, lambda count, n: {
            **post_and_claim(clients[count], names[count][-1], n),
            **listings(clients[count], names[count], n)})
    finally:
        for http in clients.values():
            http.close()


def wrk_post(session: Session, system: System, connections: int, seconds: float,
             tag: str) -> dict[str, Any]:
    name = f"{system.key}-wrk-c{connections}-{tag}"
    proc = session.start(name, [
        "wrk", f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds:g}s",
        "--timeout", "10s", "-s", str(HERE / "wrk" / "post.lua"), system.urls[0], "--",
        "queue=connections", f"project={HEADERS['X-Project-ID']}",
        f"client_id={HEADERS['Client-ID']}"])
    proc.wait(seconds + 60)
    lines = [x for x in session.output(name).splitlines() if x.startswith("WRK_RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"scaling: wrk -c{connections} failed:\n"
                         + session.output(name)[-2000:])
    result: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    return result


def by_connections(session: Session, system: System, counts: list[int], seconds: float,
                   rounds: int) -> dict[int, Any]:
    """wrk at each connection count for ``seconds / rounds`` per round, in rounds as
    ``in_rounds``: requests/s over all the rounds, p50/p99 merged from wrk's percentiles."""
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    for r, order in enumerate(round_orders(counts, rounds), 1):
        for connections in order:
            runs[connections].append(wrk_post(session, system, connections,
                                              max(1, round(seconds / rounds)), f"r{r}"))
        log(f"{system.label}: connections, round {r} of {rounds} done")
    results = {}
    for connections, done in runs.items():
        latency = merge_latency(done)
        results[connections] = {
            "rps": round(sum(x["requests"] for x in done)
                         / sum(x["duration_us"] / 1e6 for x in done), 1),
            "p50": latency["p50"], "p99": latency["p99"],
            "errors": sum(x["errors"] for x in done),
        }
        log(f"  {connections} connections: {results[connections]}")
    return results


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ms(cell: dict[str, float]) -> str:
    return f"{cell['p50']} / {cell['p99']}"


SHORT = {"zaqar-grpc": "ours"}


def short(label: str) -> str:
    """A system's name in a column heading: "ours", or "Zaqar" for any Zaqar."""
    return SHORT.get(label, "Zaqar" if label.startswith("Zaqar") else label)


def side_by_side(report: dict[str, Any], part: str, title: str, first: str,
                 cells: list[tuple[str, Callable[[dict[str, Any]], str]]]) -> str | None:
    """One table of ``part`` for every system, a column per cell and system, a row per size
    that every system measured."""
    systems = {label: r[part] for label, r in report["systems"].items() if r.get(part)}
    if not systems:
        return None
    sizes = [n for n in next(iter(systems.values())) if all(n in r for r in systems.values())]
    header = [first] + [f"{name}, {short(label)}" for name, _ in cells for label in systems]
    rows = [[f"{n:,}"] + [cell(r[n]) for _, cell in cells for r in systems.values()]
            for n in sizes]
    return table(title, header, rows)


def markdown(report: dict[str, Any]) -> str:
    names = ", ".join(f"{short(label)} = {label}" for label in report["systems"])
    one, rounds = "p50 / p99 ms, one request at a time", report.get("rounds", 1)
    tables = [
        side_by_side(report, "messages", f"Messages in one queue ({one})", "messages",
                     [("post", lambda r: ms(r["post"])),
                      ("claim + delete", lambda r: ms(r["claim_delete"]))]),
        side_by_side(report, "queues", f"Queues in one project: post and claim on the last "
                     f"queue ({one})", "queues",
                     [("post", lambda r: ms(r["post"])),
                      ("claim + delete", lambda r: ms(r["claim_delete"]))]),
        side_by_side(report, "queues", f"Queues in one project: listing, limit 20 ({one})",
                     "queues",
                     [("first page", lambda r: ms(r["list_first_page"])),
                      ("from the middle", lambda r: ms(r["list_from_middle"]))]),
        side_by_side(report, "connections", f"Posting one message per request on C "
                     f"connections (wrk, {report['seconds']:g} s each in {rounds} "
                     f"round{'s' * (rounds != 1)})", "connections",
                     [("req/s", lambda r: str(r["rps"])),
                      ("p50 / p99 ms", lambda r: f"{r['p50']} / {r['p99']}"),
                      ("errors", lambda r: str(r["errors"]))]),
    ]
    return f"Systems: {names}.\n\n" + "\n".join(t for t in tables if t)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="ours,zaqar")
    parser.add_argument("--messages", type=ints, default=[10, 10_000, 1_000_000])
    parser.add_argument("--queues", type=ints, default=[10, 100_000])
    parser.add_argument("--connections", type=ints, default=[1, 4, 16, 64, 256])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--zaqar-workers", type=int, default=2)
    parser.add_argument("--fill", choices=("direct", "http"), default="direct")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    require_tools("scaling")
    systems = [s for s in args.systems.split(",") if s]
    report: dict[str, Any] = {"argv": sys.argv[1:], "uptime_before": uptime(),
                              "seconds": args.seconds, "rounds": args.rounds, "systems": {}}
    with tempfile.TemporaryDirectory(prefix="scaling-") as work:
        if "zaqar" in systems:
            prepare_reference(ZAQAR_VENV)
        for key in systems:   # one at a time: each is stopped before the next one starts
            session = Session(Path(work) / key)
            session.work.mkdir()
            (session.work / "zaqar_ref_wsgi.py").write_text(ZAQAR_WSGI)   # start_zaqar's
            try:
                system = (start_ours(session, 1) if key == "ours" else
                          start_zaqar(session, ZAQAR_VENV, args.zaqar_workers))
                report["systems"][system.label] = {
                    "messages": by_messages(system, args.messages, args.samples, args.rounds,
                                            args.fill),
                    "queues": by_queues(system, args.queues, args.samples, args.rounds,
                                        args.fill),
                    "connections": by_connections(session, system, args.connections,
                                                  args.seconds, args.rounds),
                }
            finally:
                left = session.close()
                if left:
                    log(f"still running: {', '.join(left)}")
    report["uptime_after"] = uptime()
    print(markdown(report))
    print(f"uptime before: {report['uptime_before']}\nuptime after: {report['uptime_after']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
