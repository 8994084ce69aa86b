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
