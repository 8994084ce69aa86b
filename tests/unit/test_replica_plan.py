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


def test_one_replica_is_planned_as_set_when_no_port_is_left_to_pick() -> None:
    settings = Settings.load(environ={})
    planned = plan(settings, SERVICES, 1)
    assert [r.label for r in planned] == list(SERVICES)
    assert all(r.settings is settings for r in planned)


def test_one_replica_gets_a_port_picked_for_a_port_set_to_0_and_its_callers_are_told() -> None:
    # Given one replica each, message_svc's port and the gateway's HTTP port set to 0 ("any")
    settings = Settings.load(environ={}, overrides={"message_port": 0, "http_port": 0})
    planned = {r.service: r for r in plan(settings, SERVICES, 1)}

    # Then each gets a port of its own, and every caller's target names message_svc's
    message = planned["message"].settings.message_port
    assert message > 0 and planned["gateway"].settings.http_port > 0
    assert planned["message"].grpc_target == f"127.0.0.1:{message}"
    for replica in planned.values():
        assert replica.settings.message_targets == f"127.0.0.1:{message}"
    # and the ports set stay as they were
    assert planned["queue"].settings.queue_port == settings.queue_port
    assert [r.label for r in planned.values()] == list(SERVICES)
