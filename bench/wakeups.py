"""What a hop between two processes costs on this machine: two processes pass one byte back
and forth over a socket pair, pinned to two different CPUs, then to the same one; the CPU time
and wall time of one round trip, seen from the first process.

    python bench/wakeups.py [--rounds 20000]

On a virtual machine a process woken on an idle CPU costs its waker a trip through the
hypervisor; a process woken on its own CPU does not. Each hop of a request (wrk to the
gateway, the gateway to message_svc, message_svc to Redis, and gRPC's poller threads to the
event loops) is such a wake-up when the other side is idle.
"""

from __future__ import annotations

import argparse
import os
import socket
import time


def round_trips(rounds: int, mine: int, theirs: int) -> tuple[float, float]:
    """CPU µs and wall µs per round trip, this process on CPU ``mine``, its peer on
    ``theirs``."""
    here, there = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the peer: answers each byte
        os.sched_setaffinity(0, {theirs})
        here.close()
        for _ in range(rounds):
            there.recv(1)
            there.send(b"x")
        os._exit(0)
    os.sched_setaffinity(0, {mine})
    there.close()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        here.send(b"x")
        here.recv(1)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    os.waitpid(pid, 0)
    here.close()
    return cpu / rounds * 1e6, wall / rounds * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20000, help="round trips per run (20000)")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("wakeups: needs two CPUs")
    print("| peers | CPU µs per round trip | wall µs per round trip |")
    print("|---|---:|---:|")
    for _ in range(2):
        for label, theirs in (("on two CPUs", cpus[1]), ("on one CPU", cpus[0])):
            cpu, wall = round_trips(args.rounds, cpus[0], theirs)
            print(f"| {label} | {cpu:.1f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
