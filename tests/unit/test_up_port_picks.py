"""``up --replicas N`` picks a free port for each port set to 0; another process may take one
between the pick and the bind of the replica it is for (a connection's own port is one of those
the kernel hands out). up then picks again and starts over, rather than failing to start.

``up`` runs in the test's process, its replicas as real child processes; the port "taken
since" is one the test holds, handed out as up's first pick.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from services import cli, replicas
from services.common.config import Settings
from tests.servers import free_port
from tests.waiting import until


@pytest.fixture
def held() -> Iterator[int]:
    """A port another process would have taken: bound and listening here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def picks_starting_with(port: int, at: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """up's picks: ``port`` as its pick number ``at`` (0 = the first), free ports otherwise.
    Returns the list of every port handed out."""
    given: list[int] = []

    def pick(host: str) -> int:
        given.append(port if len(given) == at else free_port())
        return given[-1]

    monkeypatch.setattr(replicas, "_free_port", pick)
    return given


async def run_up(tmp_path: Path) -> tuple[int, str, str]:
    """up with 2 replicas of queue_svc, every port picked by up, stopped (SIGINT) once up;
    its status, stdout and stderr."""
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "queue_port": 0, "queue_metrics_port": 0,
    })
    out, err = io.StringIO(), io.StringIO()
    loop = asyncio.get_running_loop()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            task = asyncio.ensure_future(cli.up(settings, services=("queue",), replicas=2))
            await until(lambda: "zaqar-grpc is up" in out.getvalue() or task.done(), 90,
                        "up is up")
            if not task.done():
                os.kill(os.getpid(), signal.SIGINT)
            status = await asyncio.wait_for(task, 60)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return status, out.getvalue(), err.getvalue()


async def test_a_picked_port_taken_before_its_replica_binds_it_is_picked_again(
    tmp_path: Path, held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given up's first pick (replica 0's gRPC port) taken by the time the replica binds it
    # (the check before the start does not look at the first replica's ports)
    given = picks_starting_with(held, 0, monkeypatch)

    status, out, err = await run_up(tmp_path)

    # Then up picked again, started both replicas and stopped cleanly
    assert status == 0, err
    assert err.count("picking the ports again") == 1, err
    assert f":{held} " in err  # the line names the port
    # (the first plan's other replica may have said it served before that plan was stopped:
    # the last plan's two lines come last)
    serving = [line for line in out.splitlines() if line.strip().startswith("queue.")][-2:]
    assert sorted(line.split(":")[0].strip() for line in serving) == ["queue.0", "queue.1"], out
    assert all(f":{held} " not in line for line in serving), out
    assert len(given) == 8  # two plans of two replicas with two ports each


async def test_a_picked_port_found_taken_by_the_check_before_the_start_is_picked_again(
    tmp_path: Path, held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given up's third pick (replica 1's gRPC port) taken before the start
    given = picks_starting_with(held, 2, monkeypatch)

    status, out, err = await run_up(tmp_path)

    assert status == 0, err
    assert err.count("picking the ports again") == 1, err
    assert f":{held} " not in out
    assert len(given) == 8


async def test_a_port_taken_on_every_pick_fails_the_start_after_the_last(
    tmp_path: Path, held: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given every plan's first pick taken: up gives up after its last plan, with the line
    def pick(host: str, given: list[Any] = []) -> int:  # noqa: B006 - counts the calls
        given.append(None)
        return held if len(given) % 4 == 1 else free_port()

    monkeypatch.setattr(replicas, "_free_port", pick)

    status, _, err = await run_up(tmp_path)

    assert status == 1
    assert err.count("picking the ports again") == cli.PORT_PICKS - 1, err
    assert err.splitlines()[-1].startswith(f"zaqar-grpc: cannot listen on 127.0.0.1:{held} ")

