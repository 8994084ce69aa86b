"""Fixtures shared by every test: free ports, settings, in-process services."""

from __future__ import annotations

import os
import resource
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from services.common.config import Settings
from tests import keystone as test_keystone
from tests import stacks
from tests.certs import pki  # noqa: F401 - shared fixture
from tests.keystone import keystone, keystone_settings  # noqa: F401 - shared fixtures
from tests.receivers import receiver, receiver_factory  # noqa: F401 - shared fixtures
from tests.servers import (  # noqa: F401 - shared fixtures
    close_sockets_of_cancelled_connects,
    free_port,
    free_ports,
    mongodb_server,
    redis_cluster,
    redis_sentinel,
    redis_server,
    redis_tls_cluster,
    redis_tls_sentinel,
    redis_tls_server,
    service_ports,
)
from tests.stacks import up_stacks  # noqa: F401 - shared fixture

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
close_sockets_of_cancelled_connects()

# Seconds within which a call that must fail fast (a refused connection, a timeout the test
# configured short) has failed, however busy the machine: far below the waits these bounds are
# there to catch (the drivers' own defaults, such as pymongo's 30 s server selection, a gRPC
# call waiting for its deadline, or no timeout at all).
FAIL_FAST = 10.0


# Files that take long for their number of tests: seconds per file, from runs of 2026-12 (the
# e2e files measured on a loaded machine and divided by 2.5; the others summed from the slowest
# tests of the full runs). Any other file counts SECONDS_PER_TEST per test.
SLOW_FILES = {
    "tests/e2e/test_store_restart.py": 185, "tests/gateway/test_keystone.py": 170,
    "tests/unit/test_k8s.py": 170, "tests/services/test_trusts.py": 150,
    "tests/services/test_grpc_auth.py": 120, "tests/gateway/test_access.py": 115,
    "tests/e2e/test_replicas_up.py": 90, "tests/e2e/test_openapi_fuzz.py": 95,
    "tests/unit/test_image.py": 70, "tests/e2e/test_example_plugin.py": 65,
    "tests/e2e/test_startup_failures.py": 65, "tests/e2e/test_up.py": 60,
    "tests/e2e/test_topics.py": 60, "tests/e2e/test_long_polling.py": 50,
    "tests/services/test_topics.py": 45, "tests/e2e/test_notifications.py": 40,
    "tests/unit/test_scripts.py": 40, "tests/e2e/test_redis_cluster_up.py": 36,
    "tests/e2e/test_logs.py": 36, "tests/e2e/test_queue_subscribers.py": 32,
    "tests/e2e/test_tls_up.py": 30, "tests/e2e/test_fuzz.py": 30,
    "tests/contract/test_message_store_fifo.py": 30, "tests/e2e/test_pools_up.py": 22,
    "tests/e2e/test_store_failure.py": 22, "tests/e2e/test_tracing.py": 20,
    "tests/e2e/test_redis_sentinel_up.py": 25, "tests/contract/test_redis_sentinel.py": 30,
    "tests/contract/test_redis_tls.py": 12, "tests/e2e/test_password_files_up.py": 28,
}
SECONDS_PER_TEST = 0.25


def _unique_node_ids(items: list[pytest.Item]) -> None:
    """Give every test a node id of its own, and refuse a collection where two share one.

    pytest-xdist runs tests by node id: of tests that share one, all but one never run, with
    nothing said. schemathesis 4.32 under pytest 9.2 makes one test per operation whose name
    has the operation (``test_x[GET /v2/queues]``) but gives each the function's node id; such
    a test gets the node id of its name, as pytest makes it for any other test.
    """
    shared = Counter(item.nodeid for item in items)
    for item in items:
        parent = item.parent
        if shared[item.nodeid] > 1 and parent is not None and "[" in item.name:
            item._id = parent.id.child(item.name)
    twice = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twice:
        raise pytest.UsageError(f"tests share a node id, so some would not run: {twice[:5]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test with a node id of its own (:func:`_unique_node_ids`); then the longest files
    first (each file's tests in their order): pytest-xdist hands whole files out in this order
    (scripts/test.sh: --dist loadfile --no-loadscope-reorder), so the run ends on short files
    instead of a long one left for a single worker."""
    _unique_node_ids(items)
    files = Counter(item.nodeid.split("::")[0] for item in items)
    weight = {path: SLOW_FILES.get(path, count * SECONDS_PER_TEST)
              for path, count in files.items()}
    items.sort(key=lambda item: -weight[item.nodeid.split("::")[0]])


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """The first test of a process that needs the Keystone builds it (or waits for another
    worker's build): its time limit has the build's on top (before pytest-timeout reads it).
    The CPU used so far, and how much the session's ``up`` stacks printed, are noted for
    :func:`pytest_runtest_makereport`."""
    item.stash[_CPU_AT_START] = _cpu_seconds()
    item.stash[_STACK_OUTPUT_AT_START] = stacks.output_marks()
    if "keystone" in getattr(item, "fixturenames", ()) and not test_keystone.made:
        # (pytest-timeout's own setting: --timeout, PYTEST_TIMEOUT or the ini file's)
        limit = getattr(item.config, "_env_timeout", None)
        marker = item.get_closest_marker("timeout")
        if marker is not None and marker.args:
            limit = marker.args[0]
        if limit:  # (none, or 0: no time limit)
            item.add_marker(pytest.mark.timeout(float(limit) + test_keystone.BUILD_SECONDS))
    yield


_CPU_AT_START = pytest.StashKey[float]()
_STACK_OUTPUT_AT_START = pytest.StashKey[dict[str, int]]()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """The CPU a test took, setup and teardown included, with that of its processes once they
    ended (a fixture's processes count for the test whose teardown ended them): the property
    ``cpu_seconds`` of its test case in --junitxml's report, to see where the suite's CPU goes
    (docs/benchmarks.md, "The test suite's time").

    A failed test's report also shows what the session's ``up`` stacks printed while it ran
    (their services' warnings and errors say why a call failed)."""
    if call.when == "teardown" and _CPU_AT_START in item.stash:
        spent = _cpu_seconds() - item.stash[_CPU_AT_START]
        item.user_properties.append(("cpu_seconds", round(spent, 3)))
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and _STACK_OUTPUT_AT_START in item.stash:
        printed = stacks.output_since(item.stash[_STACK_OUTPUT_AT_START])
        if printed:
            report.sections.append(("up stacks' output during the test", printed))


def _cpu_seconds() -> float:
    """User and system CPU of this process and of its children that ended, in seconds."""
    own, ended = (resource.getrusage(who)
                  for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def pytest_sessionfinish(session: pytest.Session) -> None:
    """The pytest-xdist controller stops the Keystone its workers shared, once they ended."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        test_keystone.stop_shared_keystone(session.config._tmp_path_factory.getbasetemp())


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for one test: its own data folder and free ports for every service."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "data_dir": str(tmp_path / "data"),
            **service_ports(),
            "gc_interval": 0.5,
        }
        values.update(overrides)
        (tmp_path / "data").mkdir(exist_ok=True)
        return Settings.load(environ={}, overrides=values)

    return make


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> AsyncIterator[Settings]:
    yield make_settings()
