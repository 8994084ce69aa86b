"""Where the replicas of ``zaqar-grpc up --replicas N`` listen, and how they find each other.

Wired as on Kubernetes, where each replica is a pod of its own and callers balance over all of
them through one target (a headless Service):

- Replica ``i`` (0 … N-1) of the gateway serves HTTP on ``http_port + i`` and WebSocket on
  ``ws_port + i``; replica ``i`` of a gRPC service listens on ``<its port> + 10 * i``, and
  serves its metrics on ``<its metrics port> + 10 * i``. A port
  set to 0 ("any") gets a free port per replica, picked here, so that every caller can be
  told every address before anything starts (``up`` plans again when another process takes
  one before its replica binds it).
- Every process is told every replica of each service it calls as one comma-separated list
  (``ZAQAR_QUEUE_TARGET=127.0.0.1:50061,127.0.0.1:50071``): calls are balanced round robin
  over the replicas that answer (``services/common/grpc_server.py``, ``channel_target``).
  Replicas of one service share its store and never need to know of each other.

With one replica (the default) the settings are used as they are, but for a port set to 0:
that one is picked here as well, and the callers are told it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.common.config import ConfigurationError, Settings
from services.common.startup import CannotListen, bind, check_port, os_reason

# service -> its port settings (the first is the one its replicas are told apart by)
PORT_SETTINGS: Final = {
    "queue": ("queue_port", "queue_metrics_port"),
    "message": ("message_port", "message_metrics_port"),
    "notifier": ("notifier_port", "notifier_metrics_port"),
    "gateway": ("http_port", "ws_port"),
}
# service -> the setting that tells callers where it is
TARGET_SETTINGS: Final = {
    "queue": "queue_target",
    "message": "message_targets",
    "notifier": "notifier_target",
}
# Distance between the gRPC ports of two consecutive replicas of one service.
GRPC_PORT_STEP: Final = 10
MAX_REPLICAS: Final = 9


@dataclass(frozen=True, slots=True)
class Replica:
    """One process of ``up``: a service, its index, and the settings it runs with."""

    service: str
    index: int
    count: int
    settings: Settings

    @property
    def label(self) -> str:
        """``message`` with one replica, ``message.1`` with several."""
        return self.service if self.count == 1 else f"{self.service}.{self.index}"

    @property
    def grpc_target(self) -> str:
        """Where this very replica answers gRPC (its health check)."""
        port = getattr(self.settings, PORT_SETTINGS[self.service][0])
        return f"{connect_host(self.settings.host)}:{port}"


def port_settings(settings: Settings, service: str) -> tuple[str, ...]:
    """The settings of the ports ``service`` binds (its metrics port only with metrics on)."""
    return tuple(name for name in PORT_SETTINGS[service]
                 if settings.metrics or not name.endswith("_metrics_port"))


def connect_host(host: str) -> str:
    """The address a local caller reaches ``host`` at: an IP address (a list of replicas
    must name addresses), the loopback one for a wildcard."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:
            resolved = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        except OSError as exc:
            raise ConfigurationError(
                f"cannot resolve ZAQAR_HOST {host!r} to an address: {exc}"
            ) from None
        address = ipaddress.ip_address(resolved)
    return f"[{address}]" if address.version == 6 else str(address)


def plan(settings: Settings, services: Sequence[str], count: int) -> list[Replica]:
    """The processes of ``count`` replicas of each of ``services``, in start order (every
    replica of a service before the next service).

    Raises:
        ConfigurationError: ``count`` out of range, or a host that does not resolve.
        CannotListen: two replicas would share a port, or a port is beyond 65535.
    """
    if not 1 <= count <= MAX_REPLICAS:
        raise ConfigurationError(f"--replicas must be from 1 to {MAX_REPLICAS}, not {count}")
    if count == 1 and not any(getattr(settings, name) == 0
                              for service in services for name in port_settings(settings, service)):
        return [Replica(service, 0, 1, settings) for service in services]
    ports = _ports(settings, services, count)
    host = connect_host(settings.host)
    targets: dict[str, Any] = {
        TARGET_SETTINGS[service]: ",".join(
            f"{host}:{ports[service][i][0]}" for i in range(count)
        )
        for service in services if service in TARGET_SETTINGS
    }
    shared = dataclasses.replace(settings, **targets)
    replicas = []
    for service in services:
        for i in range(count):
            own: dict[str, Any] = dict(
                zip(port_settings(settings, service), ports[service][i], strict=True)
            )
            replicas.append(Replica(service, i, count, dataclasses.replace(shared, **own)))
    return replicas


def _ports(
    settings: Settings, services: Sequence[str], count: int
) -> dict[str, list[tuple[int, ...]]]:
    """service -> per replica, the values of its port settings."""
    taken: dict[int, str] = {}
    planned: dict[str, list[tuple[int, ...]]] = {}
    for service in services:
        grpc = service in TARGET_SETTINGS
        rows: list[tuple[int, ...]] = []
        for i in range(count):
            row = []
            for setting in port_settings(settings, service):
                base = getattr(settings, setting)
                if base == 0:
                    # The kernel may hand out a port it gave before, once that socket is
                    # closed: pick again until it is one no other replica has.
                    port = _free_port(settings.host)
                    while port in taken:
                        port = _free_port(settings.host)
                else:
                    port = base + (GRPC_PORT_STEP * i if grpc else i)
                what = f"{setting} of replica {i} of {service}"
                if port > 65535:
                    raise CannotListen(settings.host, port, f"the {what} is beyond 65535",
                                       setting)
                if port in taken:
                    raise CannotListen(
                        settings.host, port, f"the {what} is also the {taken[port]}", setting
                    )
                taken[port] = what
                row.append(port)
            rows.append(tuple(row))
        planned[service] = rows
    return planned


def _free_port(host: str) -> int:
    try:
        sockets = bind(host, 0)
    except OSError as exc:
        raise CannotListen(host, 0, os_reason(exc)) from None
    try:
        port: int = sockets[0].getsockname()[1]
        return port
    finally:
        for sock in sockets:
            sock.close()


def check_ports(replicas: Sequence[Replica]) -> None:
    """Each port of every replica but the first of each service can be bound now (the
    first ones are checked with the rest of the settings, ``services/preflight.py``).

    Raises:
        CannotListen: naming the first port that cannot be used.
    """
    for replica in replicas:
        if replica.index == 0:
            continue
        for setting in port_settings(replica.settings, replica.service):
            check_port(replica.settings.host, getattr(replica.settings, setting), setting)
