"""python -m bench.fuzz --cases 100000 --store sqlite|redis|redis-cluster|mongodb [--seed N]
[--workers 4] [--runs 1]

Starts ``zaqar-grpc up`` on the store (redis: its own redis-server on a free port;
redis-cluster: a Redis Cluster of three masters with a replica each; mongodb: the MongoDB wire
server the tests use), runs the cases, prints the summary table and every failure
with a reproducer, and exits 1 when an oracle was broken.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.fuzz.engine import WEIGHTS, run
from bench.fuzz.report import Report
from bench.fuzz.stack import own_stack, target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--store", choices=("sqlite", "redis", "redis-cluster", "mongodb"),
                    default="sqlite")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--runs", type=int, default=1,
                    help="runs of --cases each, with seeds --seed, --seed + 1, ..., each on a "
                         "fresh stack and store server, summed at the end (a long MongoDB run: "
                         "the test server slows as its data grows)")
    ap.add_argument("--workers", type=int, default=4, help="cases in flight at once")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds an answer may take")
    ap.add_argument("--families", default=",".join(WEIGHTS),
                    help="comma-separated families to run (default: all)")
    ap.add_argument("--json", type=Path, help="also write the counts to this file")
    ap.add_argument("--log", type=Path, help="write the stack's output (tracebacks) to this file")
    ap.add_argument("--failures", type=Path,
                    help="where the report goes when a case failed, with each failure's detail "
                         "and reproducer (default: zaqar-fuzz-<store>-seed<N>-<time>.txt in the "
                         "system's temporary folder), so that a failure seen once is not lost")
    ap.add_argument("--set", action="append", default=[], metavar="SETTING=VALUE",
                    help="a setting of the stack, e.g. project_max_queues=3 (repeatable)")
    args = ap.parse_args(argv)
    overrides = dict(item.split("=", 1) for item in args.set)
    chosen = set(args.families.split(","))
    weights = {f: w for f, w in WEIGHTS.items() if f in chosen}
    started = datetime.datetime.now(datetime.UTC)

    last: list[Report] = []

    def progress(report: Report) -> None:
        last[:] = [report]
        print(f"  ... {report.ran} cases, failures: {dict(report.failure_counts) or 0}",
              file=sys.stderr, flush=True)

    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    # SIGTERM (a timeout, a kill) stops the stack and the store server as Ctrl-C does.
    signal.signal(signal.SIGTERM, interrupted)
    reports: list[Report] = []
    outputs: list[str] = []
    stopped = 0
    for n in range(args.runs):
        seed = args.seed + n
        last.clear()  # the progress of this run only
        with tempfile.TemporaryDirectory(prefix="zaqar-fuzz-") as tmp, \
                own_stack(args.store, Path(tmp), overrides) as (stack, _server):
            try:
                reports.append(asyncio.run(run(
                    target(stack), seed=seed, cases=args.cases, workers=args.workers,
                    bound=args.timeout, weights=weights, progress=progress)))
            except KeyboardInterrupt:
                print("interrupted; the run so far:")
                if last:
                    print(Report.combined([*reports, last[0]]).summary())
                return 130
            finally:
                status = stack.stop()
                stopped = stopped or status
                outputs.append(f"--- seed {seed}\n" if args.runs > 1 else "")
                outputs.extend(stack.output)
                if args.log:
                    args.log.write_text("".join(outputs))
        if args.runs > 1:
            print(reports[-1].summary().split("\n", 1)[0], flush=True)
    report = Report.combined(reports)
    settings = "".join(f" --set {item}" for item in args.set)
    runs = f" --runs {args.runs}" if args.runs > 1 else ""
    print(f"python -m bench.fuzz --cases {args.cases} --store {args.store} --seed {args.seed} "
          f"--workers {args.workers}{runs}{settings} ({started:%Y-%m-%d %H:%M} UTC)")
    summary = report.summary()
    print(summary)
    print(f"zaqar-grpc up stopped with exit status {stopped}")
    if report.failures:
        kept = args.failures or Path(tempfile.gettempdir()) / (
            f"zaqar-fuzz-{args.store}-seed{args.seed}-{started:%Y%m%dT%H%M%S}.txt")
        kept.write_text(f"python -m bench.fuzz {' '.join(argv or sys.argv[1:])}\n{summary}\n")
        print(f"the report, with every failure's detail and reproducer, is also in {kept}")
    if args.json:
        args.json.write_text(json.dumps({
            "store": args.store, "seed": args.seed, "runs": args.runs, "cases": report.ran,
            "seconds": round(report.seconds, 1), "date": started.isoformat(),
            "families": report.families, "statuses": report.statuses,
            "failures": report.failure_counts, "dead": report.dead, "canary": report.canary,
        }, indent=2, default=dict))
    return 0 if report.ok and stopped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
