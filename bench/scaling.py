"""How the cost of a request grows with the work, for zaqar-grpc and real Zaqar 23, in one run:

    .venv/bin/python bench/scaling.py [--systems ours,zaqar] [--messages 10,10000,1000000]
                                      [--queues 10,100000] [--connections 1,4,16,64,256]
                                      [--samples 300] [--seconds 10] [--json FILE]

Every system runs on its own redis-server (as in ``bench/wrk_compare.py``, whose start-up code
this reuses: zaqar-grpc is ``zaqar-grpc up --store redis://…`` with default settings, Zaqar is
23.0.1 under gunicorn with 2 sync workers, its best configuration on this machine). For each:

- **Messages in one queue.** For each count N, a queue is filled with N messages (batches of
  20, 8 requests in flight), then one request at a time, on one keep-alive connection (Zaqar's
  sync workers close it after every answer, as they serve), ``--samples`` times each: post one
  message; claim one message and delete it with its claim id. The queue keeps N messages.
- **Queues in one project.** For each count Q, a project gets Q queues (8 PUTs in flight),
  then one request at a time: post one message and claim + delete it on the last queue made,
  and list the queues (``GET /v2/queues?limit=20``, the first page and a page from a marker
  in the middle).
- **Connections.** ``wrk`` posts one message per request on C connections for ``--seconds``
  (``bench/wrk/post.lua``): requests/s and p50/p99 for each C.

Printed as Markdown tables (p50 / p99 in milliseconds, measured at the client), and as JSON
with ``--json``. A flat row means the cost does not grow with the work.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
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
    Session,
    System,
    log,
    prepare_reference,
    start_ours,
    start_zaqar,
    uptime,
)

BATCH = 20          # messages per prefill post: Zaqar's largest batch
IN_FLIGHT = 8       # prefill requests at once
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


async def make_queues(url: str, project: str, count: int) -> list[str]:
    names = [f"q{i:06d}" for i in range(count)]
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
    return names


def timed(samples: int, call: Callable[[], None]) -> dict[str, float]:
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return percentiles(times)


def post_and_claim(http: httpx.Client, queue: str, samples: int) -> dict[str, Any]:
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


def client(url: str, project: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={**HEADERS, "X-Project-ID": project}, timeout=30)


def by_messages(system: System, counts: list[int], samples: int) -> dict[int, Any]:
    url, results = system.urls[0], {}
    for count in counts:
        queue = f"messages-{count}"
        log(f"{system.label}: {count} messages in one queue")
        asyncio.run(fill_queue(url, queue, count))
        with client(url, HEADERS["X-Project-ID"]) as http:
            post_and_claim(http, queue, 20)   # warm-up
            results[count] = post_and_claim(http, queue, samples)
        log(f"  {results[count]}")
    return results


def by_queues(system: System, counts: list[int], samples: int) -> dict[int, Any]:
    url, results = system.urls[0], {}
    for count in counts:
        project = f"scaling-queues-{count}"
        log(f"{system.label}: {count} queues in one project")
        names = asyncio.run(make_queues(url, project, count))
        with client(url, project) as http:
            post_and_claim(http, names[-1], 20)
            row = post_and_claim(http, names[-1], samples)

            def listing(marker: str | None) -> Callable[[], None]:
                params = {"limit": "20", **({"marker": marker} if marker else {})}

                def call() -> None:
                    answer = http.get("/v2/queues", params=params)
                    if answer.status_code != 200 or not answer.json()["queues"]:
                        raise SystemExit(f"scaling: listing answered {answer.status_code}")
                return call

            row["list_first_page"] = timed(samples, listing(None))
            row["list_from_middle"] = timed(samples, listing(names[len(names) // 2]))
        results[count] = row
        log(f"  {row}")
    return results


def by_connections(session: Session, system: System, counts: list[int],
                   seconds: float) -> dict[int, Any]:
    url, results = system.urls[0], {}
    for connections in counts:
        threads = min(connections, 2)
        name = f"{system.key}-wrk-c{connections}"
        proc = session.start(name, [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
            "-s", str(HERE / "wrk" / "post.lua"), url, "--", "queue=connections",
            f"project={HEADERS['X-Project-ID']}", f"client_id={HEADERS['Client-ID']}"])
        proc.wait(seconds + 60)
        lines = [x for x in session.output(name).splitlines() if x.startswith("WRK_RESULT ")]
        if proc.returncode or not lines:
            raise SystemExit(f"scaling: wrk -c{connections} failed:\n"
                             + session.output(name)[-2000:])
        result = json.loads(lines[-1].split(" ", 1)[1])
        results[connections] = {
            "rps": round(result["req_per_s"], 1),
            "p50": round(result["latency_us"]["p50"] / 1000, 2),
            "p99": round(result["latency_us"]["p99"] / 1000, 2),
            "errors": result["errors"],
        }
        log(f"{system.label}: {connections} connections: {results[connections]}")
    return results


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    lines = [f"**{title}**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def ms(cell: dict[str, float]) -> str:
    return f"{cell['p50']} / {cell['p99']}"


def markdown(report: dict[str, Any]) -> str:
    out = []
    for label, result in report["systems"].items():
        if result.get("messages"):
            out.append(table(
                f"{label}: messages in one queue (p50 / p99 ms, one request at a time)",
                ["messages", "post", "claim + delete"],
                [[f"{n:,}", ms(r["post"]), ms(r["claim_delete"])]
                 for n, r in result["messages"].items()]))
        if result.get("queues"):
            out.append(table(
                f"{label}: queues in one project (p50 / p99 ms, one request at a time)",
                ["queues", "post", "claim + delete", "list, first page", "list, from middle"],
                [[f"{n:,}", ms(r["post"]), ms(r["claim_delete"]), ms(r["list_first_page"]),
                  ms(r["list_from_middle"])] for n, r in result["queues"].items()]))
        if result.get("connections"):
            out.append(table(
                f"{label}: posting on C connections (wrk, {report['seconds']:g} s each)",
                ["connections", "req/s", "p50 / p99 ms", "errors"],
                [[n, r["rps"], f"{r['p50']} / {r['p99']}", r["errors"]]
                 for n, r in result["connections"].items()]))
    return "\n".join(out)


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", default="ours,zaqar")
    parser.add_argument("--messages", type=ints, default=[10, 10_000, 1_000_000])
    parser.add_argument("--queues", type=ints, default=[10, 100_000])
    parser.add_argument("--connections", type=ints, default=[1, 4, 16, 64, 256])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--zaqar-workers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    systems = [s for s in args.systems.split(",") if s]
    report: dict[str, Any] = {"uptime_before": uptime(), "seconds": args.seconds, "systems": {}}
    with tempfile.TemporaryDirectory(prefix="scaling-") as work:
        session = Session(Path(work))
        try:
            if "zaqar" in systems:
                prepare_reference(ZAQAR_VENV)
            started = {"ours": lambda: start_ours(session, 1),
                       "zaqar": lambda: start_zaqar(session, ZAQAR_VENV, args.zaqar_workers)}
            for key in systems:
                system = started[key]()
                report["systems"][system.label] = {
                    "messages": by_messages(system, args.messages, args.samples),
                    "queues": by_queues(system, args.queues, args.samples),
                    "connections": by_connections(session, system, args.connections,
                                                  args.seconds),
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
