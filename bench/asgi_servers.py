"""Which ASGI server: the bare ASGI ceiling app (``hello_app.py --bare``) on uvicorn (httptools,
uvloop; what the gateway runs on), Granian and Hypercorn, under the same wrk load as
``wrk_compare.py`` (4 connections posting, 4 claiming and deleting) and one request at a time
(``latency.py``), in alternating rounds.

Granian and Hypercorn are not the project's dependencies: they are installed, with the app's
own imports, into a venv of their own (``bench/.venv-asgi``, made on the first run).

    .venv/bin/python bench/asgi_servers.py [--seconds 8] [--rounds 2] [--latency-rounds 1000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from wrk_compare import free_port, stop_group  # this folder is on the path of its scripts

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-asgi"
PACKAGES = ["uvicorn>=0.30", "httptools>=0.6", "uvloop>=0.19", "granian>=2.0", "hypercorn>=0.17",
            "falcon>=4.0", "orjson>=3.10"]
APP = "bench.hello_app:bare_app"


def servers(port: int) -> dict[str, list[str]]:
    py, bin_ = str(VENV / "bin" / "python"), VENV / "bin"
    return {
        "uvicorn (httptools, uvloop)": [py, str(HERE / "hello_app.py"), "--bare",
                                        "--port", str(port)],
        "granian (asgi, uvloop, 1 worker, single-threaded runtime)": [
            str(bin_ / "granian"), "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
            "--runtime-mode", "st", "--no-ws", "--log-level", "warning",
            "--host", "127.0.0.1", "--port", str(port), APP],
        "hypercorn (uvloop worker)": [str(bin_ / "hypercorn"), "-k", "uvloop",
                                      "-b", f"127.0.0.1:{port}", APP],
    }


def make_venv() -> None:
    if (VENV / "bin" / "granian").exists() and (VENV / "bin" / "hypercorn").exists():
        return
    print(f"asgi_servers: installing {' '.join(PACKAGES)} into {VENV}", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PACKAGES], check=True)


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=HERE.parent,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/queues/q/stats", timeout=1):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.2)
    stop_group(proc, 10)
    raise SystemExit(f"asgi_servers: {argv[0]} did not start:\n{log.read_text(errors='replace')}")


def wrk_result(text: str) -> dict[str, object]:
    line = next(line for line in text.splitlines() if line.startswith("WRK_RESULT "))
    return dict(json.loads(line.removeprefix("WRK_RESULT ")))


def load(port: int, seconds: float, queue: str) -> tuple[float, float, int]:
    """(producer req/s, consumer req/s, errors) of 4 + 4 connections for ``seconds``."""
    url = f"http://127.0.0.1:{port}"
    common = [f"-d{seconds:g}s", "--timeout", "5s"]
    procs = [subprocess.Popen(["wrk", f"-t{threads}", "-c4", *common,
                               "-s", str(HERE / "wrk" / script), url, "--", f"queue={queue}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for script, threads in (("post.lua", 1), ("claim_delete.lua", 4))]
    results = [wrk_result(p.communicate()[0].decode()) for p in procs]
    errors = sum(int(r["errors"]) for r in results)  # type: ignore[call-overload]
    return float(results[0]["req_per_s"]), float(results[1]["req_per_s"]), errors  # type: ignore[arg-type]


def latency(port: int, rounds: int) -> dict[str, float]:
    """p50 in ms of post, claim and delete, one request at a time (``latency.py``)."""
    out = subprocess.run([sys.executable, str(HERE / "latency.py"), "--url",
                          f"http://127.0.0.1:{port}", "--rounds", str(rounds)],
                         check=True, capture_output=True, text=True).stdout
    p50 = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in ("post", "claim", "delete"):
            p50[cells[0]] = float(cells[1])
    return p50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--latency-rounds", type=int, default=1000)
    args = ap.parse_args()
    make_venv()
    work = Path(tempfile.mkdtemp(prefix="asgi-servers-"))
    names = list(servers(0))
    rates: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    p50s: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for n in range(args.rounds):
        for i, name in enumerate(names):
            port = free_port()
            proc = start(servers(port)[name], port, work / f"{i}.log")
            try:
                produced, consumed, errors = load(port, args.seconds, f"r{n}")
                if errors:
                    raise SystemExit(f"asgi_servers: {errors} errors against {name}")
                rates[name].append((produced, consumed))
                p50s[name].append(latency(port, args.latency_rounds))
            finally:
                stop_group(proc, 10)
            print(f"round {n + 1}: {name}: {produced:.0f} / {consumed:.0f} req/s", flush=True)
    print(f"\nwrk 4 + 4 connections, {args.seconds:g} s, median of {args.rounds} rounds; "
          f"one request at a time, p50 of {args.latency_rounds} rounds (median of runs):\n")
    print("| server | producer req/s | consumer req/s | post p50 ms | claim p50 ms "
          "| delete p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        prod = statistics.median(r[0] for r in rates[name])
        cons = statistics.median(r[1] for r in rates[name])
        lat = {k: statistics.median(p[k] for p in p50s[name]) for k in ("post", "claim", "delete")}
        print(f"| {name} | {prod:.0f} | {cons:.0f} | {lat['post']:.2f} | {lat['claim']:.2f} "
              f"| {lat['delete']:.2f} |")


if __name__ == "__main__":
    main()
