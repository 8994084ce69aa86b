"""A smoke test of an installed zaqar-grpc: `zaqar-grpc up` on free ports, then a queue, a post,
a claim, a delete and a WebSocket-free read-back over HTTP, then a clean stop.

Needs nothing but the standard library and the installed project, so it runs in any venv
(scripts/lowest_deps.sh runs it in one made with the lowest versions the project allows).

    python scripts/smoke.py [--store URI]      # exit 0 when every step answered as expected
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from typing import Any

HEADERS = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": "smoke",
           "Content-Type": "application/json"}


def free_ports(count: int) -> list[int]:
    """``count`` different free ports: each socket is held until all are bound, or the kernel
    may hand the same port out twice (it did: two services were given one port)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def call(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method, headers=HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def expect(what: str, got: int, wanted: int, body: Any) -> None:
    if got != wanted:
        raise SystemExit(f"smoke: {what} answered {got}, expected {wanted}: {body}")
    print(f"smoke: {what}: {got}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URI of every service (default: SQLite)")
    args = parser.parse_args()
    names = ("HTTP", "WS", "QUEUE", "MESSAGE", "NOTIFIER", "QUEUE_METRICS", "MESSAGE_METRICS",
             "NOTIFIER_METRICS")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {**os.environ, **{f"ZAQAR_{name}_PORT": str(port) for name, port in ports.items()}}
    with tempfile.TemporaryDirectory() as data:
        argv = [sys.executable, "-m", "services.cli", "up", "--data-dir", data]
        if args.store:
            argv += ["--queue-store", args.store, "--message-store", args.store,
                     "--notifier-store", args.store]
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            for line in proc.stdout:
                print("up:", line.rstrip())
                if line.startswith("zaqar-grpc is up"):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit("smoke: zaqar-grpc up did not come up in 60 s")
            else:
                raise SystemExit(f"smoke: zaqar-grpc up exited with {proc.wait()}")
            base = f"http://127.0.0.1:{ports['HTTP']}"
            status, body = call(base, "PUT", "/v2/queues/smoke", {"description": "smoke"})
            expect("create queue", status, 201, body)
            status, body = call(base, "POST", "/v2/queues/smoke/messages",
                                {"messages": [{"body": {"n": 1}, "ttl": 300}]})
            expect("post", status, 201, body)
            status, body = call(base, "POST", "/v2/queues/smoke/claims?limit=5",
                                {"ttl": 60, "grace": 60})
            expect("claim", status, 201, body)
            if [m["body"] for m in body["messages"]] != [{"n": 1}]:
                raise SystemExit(f"smoke: claimed {body}")
            href = body["messages"][0]["href"]
            status, body = call(base, "DELETE", href)
            expect("delete", status, 204, body)
            status, body = call(base, "GET", "/v2/queues/smoke/stats")
            expect("stats", status, 200, body)
            if body["messages"]["total"] != 0:
                raise SystemExit(f"smoke: stats after delete {body}")
            for url, series in ((f"{base}/metrics", "zaqar_http_requests_total"),
                                (f"http://127.0.0.1:{ports['MESSAGE_METRICS']}/metrics",
                                 "zaqar_store_operations_total")):
                with urllib.request.urlopen(url, timeout=15) as answer:
                    text = answer.read().decode()
                if series not in text:
                    raise SystemExit(f"smoke: {url} has no {series}")
                print(f"smoke: metrics {url}: {answer.status}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(30)
        if code != 0:
            raise SystemExit(f"smoke: zaqar-grpc up stopped with {code}")
    print("smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
