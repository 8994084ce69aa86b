"""The tests' own port picker never hands out a port that a test binds by number."""

from __future__ import annotations

import random

import pytest

from tests import servers


def test_a_reserved_port_drawn_at_random_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([27017, 6379, 27017 - 10000, 23456])
    monkeypatch.setattr(random, "randint", lambda low, high: next(draws))
    monkeypatch.setattr(servers, "_worker_share", lambda: (0, 1))
    monkeypatch.setattr(servers, "_GIVEN", set())  # not the ports earlier tests were given
    assert servers._pick(20000, 30000) == 23456


def test_worker_residue_cannot_land_on_a_reserved_port(monkeypatch: pytest.MonkeyPatch) -> None:
    # Worker 1 of 2 maps 27016 to 27017: that port is drawn again too.
    draws = iter([27016, 23456])
    monkeypatch.setattr(random, "randint", lambda low, high: next(draws))
    monkeypatch.setattr(servers, "_worker_share", lambda: (1, 2))
    monkeypatch.setattr(servers, "_GIVEN", set())
    assert servers._pick(20000, 30000) == 23457


def test_a_port_already_given_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws = iter([23456, 23458])
    monkeypatch.setattr(random, "randint", lambda low, high: next(draws))
    monkeypatch.setattr(servers, "_worker_share", lambda: (0, 1))
    monkeypatch.setattr(servers, "_GIVEN", {23456})
    assert servers._pick(20000, 30000) == 23458



@pytest.mark.parametrize("workers", [2, 3, 4, 6])
def test_workers_never_share_a_port_nor_a_cluster_bus_port(
    monkeypatch: pytest.MonkeyPatch, workers: int
) -> None:
    # Each worker's ports, and the bus ports (port + 10000) of the Redis Cluster nodes among
    # them, are its own: with 3 workers, a share by port % 3 would put the bus ports of worker
    # 0's nodes among worker 1's ports. Every draw in two ranges 10000 apart, for each worker
    # (each its own process: nothing given before).
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", str(workers))
    taken: dict[int, set[int]] = {}
    for worker in range(workers):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        mine = taken[worker] = set()
        for draw in [*range(20000, 20100), *range(30000, 30100)]:
            monkeypatch.setattr(servers, "_GIVEN", set())
            monkeypatch.setattr(random, "randint", lambda low, high, draw=draw: draw)
            port = servers._pick(20000, 40000)
            mine.update((port, port + 10000))
    for worker, mine in taken.items():
        for other in range(worker + 1, workers):
            assert not mine & taken[other], (worker, other, sorted(mine & taken[other])[:3])
