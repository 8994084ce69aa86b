"""CPU placement (``<service>_cpus``, ``services/common/affinity.py``) as an operator sees it:
every thread of a placed service process runs on the CPUs named, and a list it cannot use
stops ``up`` before anything starts, and ``serve``, in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest

from services.common.config import Settings
from tests.e2e.test_startup_failures import environment, nothing_started, the_line, zaqar_grpc

pytestmark = pytest.mark.e2e


def _threads_cpus(pid: int) -> dict[int, str]:
    """Thread id -> its ``Cpus_allowed_list``."""
    placed = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as fh:
            for line in fh:
                if line.startswith("Cpus_allowed_list:"):
                    placed[int(tid)] = line.split(":", 1)[1].strip()
    return placed


@pytest.mark.parametrize(("service", "setting"), [("queue", "ZAQAR_QUEUE_CPUS"),
                                                  ("gateway", "ZAQAR_GATEWAY_CPUS")])
def test_every_thread_of_a_placed_service_runs_on_its_cpus(
    make_settings: Callable[..., Settings], service: str, setting: str
) -> None:
    # Given the last CPU this machine lets us use
    cpu = max(os.sched_getaffinity(0))
    env = environment(make_settings(), **{setting: str(cpu)})
    # When the service is started on it
    with subprocess.Popen([sys.executable, "-m", "services.cli", "serve", service], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            ready = proc.stdout.readline()
            assert ready.startswith("READY"), ready + (proc.stderr.read() if proc.stderr else "")
            placed = _threads_cpus(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    # Then every thread, the ones it started once serving included (gRPC's poller, metrics),
    # may run on that CPU only
    assert len(placed) > 1, placed
    assert set(placed.values()) == {str(cpu)}, placed
    assert proc.returncode == 0


def test_up_with_a_cpu_it_may_not_use_starts_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    beyond = max(os.sched_getaffinity(0)) + 1
    env = environment(make_settings(), ZAQAR_MESSAGE_CPUS=str(beyond))
    line = nothing_started(zaqar_grpc(env, "up"))
    assert line.startswith(
        f"zaqar-grpc: configuration error: message_cpus (ZAQAR_MESSAGE_CPUS='{beyond}'): "
        f"CPU {beyond} is not available to this process (it may use "
    ), line


def test_serve_with_a_malformed_cpu_list_fails_in_one_line(
    make_settings: Callable[..., Settings],
) -> None:
    env = environment(make_settings(), ZAQAR_GATEWAY_CPUS="0-x")
    line = the_line(zaqar_grpc(env, "serve", "gateway"))
    assert line == ("zaqar-grpc: configuration error: gateway_cpus (ZAQAR_GATEWAY_CPUS='0-x'): "
                    "'0-x' is not a CPU number or a range like 0-3.")
