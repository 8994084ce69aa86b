"""A fuzz :class:`~bench.fuzz.engine.Target` for a ``zaqar-grpc up`` stack
(``tests/e2e/harness.py``), and such a stack with its own store server for the long run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.fuzz.engine import Target
from services.common.config import Settings
from tests.e2e.harness import Stack, running, start_stack
from tests.servers import (
    RedisClusterProcesses,
    ServerProcess,
    mongodb_process,
    redis_process,
    service_ports,
    start_redis_cluster,
)


def target(stack: Stack, pool_dir: Path | None = None) -> Target:
    """The target of a running stack. ``pool_dir`` (created) holds the SQLite files of the
    pools the fuzzer registers; default: ``fuzz-pools`` in the stack's data folder."""
    settings = stack.settings
    folder = pool_dir or Path(settings.data_dir) / "fuzz-pools"
    folder.mkdir(parents=True, exist_ok=True)
    pids = stack.child_pids()

    def alive() -> dict[str, bool]:
        found = {"up": stack.proc.poll() is None}
        found.update({name: running(pid) for name, pid in pids.items()})
        return found

    return Target(
        host=settings.host,
        http_port=settings.http_port,
        ws_url=f"ws://{settings.host}:{settings.ws_port}/",
        settings=settings,
        alive=alive,
        pool_dir=str(folder.resolve()),
        output=lambda: stack.output,
    )


@contextlib.contextmanager
def own_stack(store: str, work: Path, overrides: dict[str, Any] | None = None) -> Iterator[
        tuple[Stack, ServerProcess | RedisClusterProcesses | None]]:
    """``zaqar-grpc up`` on ``store`` (sqlite, redis, redis-cluster or mongodb) in ``work``, with
    pooling and a signed-URL secret, and for the others than sqlite their own servers on free
    ports (redis-cluster: three masters with a replica each); stopped after."""
    server: ServerProcess | None = None
    cluster: RedisClusterProcesses | None = None
    values: dict[str, Any] = {
        "data_dir": str(work / "data"), **service_ports(),
        "gc_interval": 1.0, "signed_url_secret": "fuzz-signed-url-secret", "pooling": True,
        "log_level": "WARNING", **(overrides or {}),
    }
    if store == "redis":
        server = redis_process(work / "redis")
    elif store == "mongodb":
        server = mongodb_process(work / "mongodb")
    elif store == "redis-cluster":
        cluster = start_redis_cluster(work / "cluster")
        values.update(cluster.stack_uris("z"))
    elif store != "sqlite":
        raise ValueError(f"unknown store {store!r}: sqlite, redis, redis-cluster or mongodb")
    if server is not None:
        server.start()
        scheme = "redis" if store == "redis" else "mongodb"
        for i, name in enumerate(("queue", "message", "notifier")):
            suffix = str(i + 1) if store == "redis" else f"fuzz_{name}"
            values[f"{name}_store"] = f"{scheme}://127.0.0.1:{server.port}/{suffix}"
    stack = None
    try:
        stack = start_stack(Settings.load(environ={}, overrides=values))
        yield stack, server or cluster
    finally:
        if stack is not None:
            stack.stop()
        if server is not None:
            server.stop()
        if cluster is not None:
            cluster.stop()
