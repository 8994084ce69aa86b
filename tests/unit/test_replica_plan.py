"""How ``services/replicas.py`` plans the ports of ``up --replicas N``."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from services import replicas
from services.common.config import Settings
from services.replicas import PORT_SETTINGS, plan

SERVICES = ("queue", "message", "notifier", "gateway")
PORTS = {name: 0 for names in PORT_SETTINGS.values() for name in names}


def all_ports(planned: list[replicas.Replica]) -> list[int]:
    return [getattr(replica.settings, name) for replica in planned
            for name in replicas.port_settings(replica.settings, replica.service)]


def test_free_ports_are_distinct_even_when_the_kernel_hands_one_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A kernel gives a port again once the socket that held it is closed; here every
    # port comes twice in a row, the worst case
    handed: Iterator[int] = itertools.chain.from_iterable(
        (port, port) for port in itertools.count(41000)
    )
    monkeypatch.setattr(replicas, "_free_port", lambda host: next(handed))
    planned = plan(Settings.load(environ={}, overrides=PORTS), SERVICES, 3)
    ports = all_ports(planned)
    assert len(ports) == len(set(ports)) > 3 * len(SERVICES)


def test_free_ports_from_the_kernel_are_distinct() -> None:
    planned = plan(Settings.load(environ={}, overrides=PORTS), SERVICES, 4)
    ports = all_ports(planned)
    assert len(ports) == len(set(ports))
    assert all(port > 0 for port in ports)
