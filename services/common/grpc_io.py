"""Which of gRPC's two I/O paths the processes use; set before anything imports gRPC.

Since grpcio 1.80, Python's gRPC does its socket I/O on EventEngine threads, and each message
then crosses one more thread before the event loop sees it: an EventEngine thread reads it,
gRPC's poller thread takes the completion, the event loop gets it. On the older path (iomgr,
gRPC's only one for Python until 1.80) the poller thread reads the socket itself. Here, where
every thread hand-off wakes another core, the older path is faster: a bare ``grpc.aio``
stream round trip 0.17 against 0.23 ms, and under the 4 + 4 wrk load 12 % more requests per
second at 8 % less CPU per request (docs/benchmarks.md, 2026-12-04).

The choice is gRPC's own switch, the ``GRPC_EXPERIMENTS`` environment variable, which it
reads once, when it is imported. :func:`prefer_iomgr` sets it as a default (an operator's
own value, even empty, wins) only for the grpcio versions known to have these experiments:
a later gRPC that has removed them would log an error line for each name at start-up.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import MutableMapping

VARIABLE = "GRPC_EXPERIMENTS"
OLDER_PATH = "-event_engine_client,-event_engine_listener,-event_engine_for_all_other_endpoints"
# grpcio versions [from, to) that have these three experiments (checked: 1.85).
VERSIONS = ((1, 80), (1, 87))


def _minor(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def prefer_iomgr(
    environ: MutableMapping[str, str] = os.environ, grpcio: str | None = None
) -> bool:
    """Put gRPC on its older I/O path unless ``environ`` says otherwise or ``grpcio`` (the
    installed version by default) is not one known to have the switch. Whether it did."""
    if VARIABLE in environ:
        return False
    if grpcio is None:
        try:
            grpcio = importlib.metadata.version("grpcio")
        except importlib.metadata.PackageNotFoundError:
            return False
    minor = _minor(grpcio)
    if minor is None or not VERSIONS[0] <= minor < VERSIONS[1]:
        return False
    environ[VARIABLE] = OLDER_PATH
    return True
