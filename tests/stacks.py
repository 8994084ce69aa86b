"""``zaqar-grpc up`` process trees shared by a test session, one per store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import service_ports

# Every store on the session's Redis Cluster (``redis+cluster://``, 3 masters and 3 replicas).
REDIS_CLUSTER = "redis_cluster"
# Stores that ``zaqar-grpc up`` runs on in these tests: the gateway and e2e suites run whole
# on each.
UP_STORES = ["sqlite", "redis", "mongodb", REDIS_CLUSTER]
# The session's stacks (those of :func:`up_stacks`), by store: a failed test's report shows
# what they printed while it ran (:func:`output_marks`, :func:`output_since`).
SESSION_STACKS: dict[str, Stack] = {}
# Lines of a stack's output a failed test's report shows at most.
REPORTED_LINES = 200
# Secret of the pre-signed URLs the ``up`` stacks make and verify.
SIGNED_URL_SECRET = "test-signed-url-secret"


@pytest.fixture(scope="session")
def up_stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Stack]]:
    """``zaqar-grpc up`` process trees, started on first use, one per store, for the session."""
    yield SESSION_STACKS
    stop_session_stacks()


def stop_session_stacks() -> None:
    """Stops the session's stacks, all at once (each waits for its services' grace); a stack
    that did not stop cleanly fails the teardown with its output."""
    stacks = SESSION_STACKS
    for stack in stacks.values():
        stack.terminate()
    stopped = {store: stack.stop() for store, stack in stacks.items()}
    outputs = {store: "".join(stack.output) for store, stack in stacks.items()}
    stacks.clear()
    for store, status in stopped.items():
        assert status == 0, f"zaqar-grpc up on {store} did not stop cleanly:\n{outputs[store]}"


def output_marks() -> dict[str, int]:
    """How many lines each session stack has printed so far."""
    return {store: len(stack.output) for store, stack in SESSION_STACKS.items()}


def output_since(marks: dict[str, int]) -> str:
    """What the session stacks printed after ``marks`` (a stack started since: all of it),
    the last :data:`REPORTED_LINES` lines of each; empty if none printed anything."""
    parts = []
    for store, stack in SESSION_STACKS.items():
        lines = stack.output[marks.get(store, 0):]
        if lines:
            cut = f"({len(lines) - REPORTED_LINES} lines before these left out)\n" \
                if len(lines) > REPORTED_LINES else ""
            parts.append(f"--- up on {store}\n{cut}{''.join(lines[-REPORTED_LINES:])}")
    return "\n".join(parts)


def up_stack(request: pytest.FixtureRequest, store: str) -> Stack:
    stacks: dict[str, Stack] = request.getfixturevalue("up_stacks")
    if store not in stacks:
        data = request.config._tmp_path_factory.mktemp(f"up-{store}")  # type: ignore[attr-defined]
        stacks[store] = start_stack(stack_settings(request, store, data))
        # The stacks stop before the servers they use (the store's session fixture, set up
        # after ``up_stacks``, is torn down before it): a stack whose store is gone takes
        # seconds to stop, its services waiting for the store.
        request.session.addfinalizer(stop_session_stacks)
    return stacks[store]


def stack_settings(request: pytest.FixtureRequest, store: str, data: Path) -> Settings:
    overrides: dict[str, Any] = {
        "data_dir": str(data), **service_ports(),
        "gc_interval": 1.0, "signed_url_secret": SIGNED_URL_SECRET, "pooling": True,
    }
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        overrides["queue_store"] = f"redis://127.0.0.1:{server.port}/1"
        overrides["message_store"] = f"redis://127.0.0.1:{server.port}/2"
        overrides["notifier_store"] = f"redis://127.0.0.1:{server.port}/3"
    elif store == REDIS_CLUSTER:
        overrides.update(request.getfixturevalue("redis_cluster").stack_uris("up"))
    elif store == "mongodb":
        server = request.getfixturevalue("mongodb_server")
        overrides["queue_store"] = f"mongodb://127.0.0.1:{server.port}/up_queues"
        overrides["message_store"] = f"mongodb://127.0.0.1:{server.port}/up_messages"
        overrides["notifier_store"] = f"mongodb://127.0.0.1:{server.port}/up_notifier"
    return Settings.load(environ={}, overrides=overrides)


