"""One request at a time: post, claim (limit 1) and delete latency at the client, and where the
time goes inside, from the services' own Prometheus histograms.

    .venv/bin/python bench/latency.py --url http://127.0.0.1:8888 [--rounds 1000]
        [--metrics http://127.0.0.1:8888/metrics,http://127.0.0.1:9182/metrics]

Against any Zaqar v2 endpoint (ours, Zaqar itself, ``bench/hello_app.py`` for the HTTP floor):
one keep-alive connection with ``TCP_NODELAY``, ``--rounds`` rounds of post → claim → delete on a
fresh queue, p50 / p90 / p99 of each at the client. With ``--metrics`` (the gateway's
``/metrics`` and message_svc's metrics port), the histograms are read before and after and the
mean of every ``*_seconds`` histogram that the rounds moved is printed: the gateway's HTTP
handling, its call on the ``Exchange`` stream, message_svc's handling of each item and the
store's operation. Loopback only: it loads what it is pointed at.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid

HEADERS = {"Client-ID": "3381af92-2b9e-11e3-b191-71861300734c", "X-Project-ID": "latency",
           "Content-Type": "application/json"}
_SAMPLE = re.compile(r"^(\w+)(\{.*\})? (\S+)$")


def scrape(urls: list[str]) -> dict[tuple[str, str, str], float]:
    """(url, metric name, labels) -> value of every ``*_seconds_sum``/``_count`` sample."""
    values = {}
    for url in urls:
        request = urllib.request.Request(url, headers={"Client-ID": HEADERS["Client-ID"]})
        with urllib.request.urlopen(request, timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                m = _SAMPLE.match(line)
                if m and m[1].endswith(("_seconds_sum", "_seconds_count")):
                    values[(url, m[1], m[2] or "")] = float(m[3])
    return values


def hop_means(before: dict[tuple[str, str, str], float],
              after: dict[tuple[str, str, str], float],
              least: int) -> list[tuple[str, int, float]]:
    """(histogram with its labels, count, mean ms) of each histogram the rounds moved at
    least ``least`` times (not the scrapes themselves, nor a background sweep)."""
    rows = []
    for (url, name, labels), total in after.items():
        if not name.endswith("_sum"):
            continue
        count_key = (url, name[:-4] + "_count", labels)
        count = after.get(count_key, 0) - before.get(count_key, 0)
        if count >= least:
            seconds = total - before.get((url, name, labels), 0)
            rows.append((f"{name[:-4]}{labels}", round(count), 1000 * seconds / count))
    return sorted(rows)


class Client:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("latency: loopback URLs only")
        self._conn = http.client.HTTPConnection(parsed.hostname, parsed.port or 80, timeout=30)
        self._conn.connect()
        assert self._conn.sock is not None
        self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def call(self, method: str, path: str, body: object = None) -> tuple[float, int, bytes]:
        data = None if body is None else json.dumps(body)
        start = time.perf_counter()
        self._conn.request(method, path, body=data, headers=HEADERS)
        answer = self._conn.getresponse()
        content = answer.read()
        return time.perf_counter() - start, answer.status, content


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8888")
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50, help="rounds first, not measured (50)")
    ap.add_argument("--metrics", default="", help="comma-separated /metrics URLs to read")
    args = ap.parse_args()
    client = Client(args.url)
    queue = "lat-" + uuid.uuid4().hex[:8]
    _, status, content = client.call("PUT", f"/v2/queues/{queue}")
    if status not in (201, 204):
        raise SystemExit(f"latency: PUT queue answered {status}: {content[:200]!r}")
    times: dict[str, list[float]] = {"post": [], "claim": [], "delete": []}

    def one_round(keep: bool) -> None:
        took, status, content = client.call(
            "POST", f"/v2/queues/{queue}/messages", {"messages": [{"body": 1, "ttl": 300}]})
        if status != 201:
            raise SystemExit(f"latency: post answered {status}: {content[:200]!r}")
        post = took
        took, status, content = client.call(
            "POST", f"/v2/queues/{queue}/claims?limit=1", {"ttl": 60, "grace": 60})
        if status != 201:
            raise SystemExit(f"latency: claim answered {status}: {content[:200]!r}")
        claim = took
        claimed = json.loads(content)
        messages = claimed["messages"] if isinstance(claimed, dict) else claimed
        took, status, content = client.call("DELETE", messages[0]["href"])
        if status != 204:
            raise SystemExit(f"latency: delete answered {status}: {content[:200]!r}")
        if keep:
            times["post"].append(post)
            times["claim"].append(claim)
            times["delete"].append(took)

    for _ in range(args.warmup):
        one_round(False)
    metric_urls = [u for u in args.metrics.split(",") if u]
    before = scrape(metric_urls)
    for _ in range(args.rounds):
        one_round(True)
    after = scrape(metric_urls)
    client.call("DELETE", f"/v2/queues/{queue}")

    print(f"{args.url}, {args.rounds} rounds, one request at a time (ms at the client):")
    print("| request | p50 | p90 | p99 | mean |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        print(f"| {name} | {1000 * quantile(values, 0.5):.2f} | {1000 * quantile(values, 0.9):.2f}"
              f" | {1000 * quantile(values, 0.99):.2f} | {1000 * statistics.fmean(values):.2f} |")
    if metric_urls:
        print("\nHistograms the rounds moved (count, mean ms):")
        for name, count, mean in hop_means(before, after, max(1, args.rounds // 2)):
            print(f"- {name}: {count}, {mean:.3f} ms")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
