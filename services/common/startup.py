"""Start-up failures an operator can fix, each reported as one line and an exit status.

Every way of starting a process (``zaqar-grpc up``, ``zaqar-grpc serve <service>``,
``python -m services.<svc>.server``) ends a failed start through :func:`report`: one line on
stderr that starts with ``zaqar-grpc:`` and names what to change, and a non-zero status, never
a traceback. ``zaqar-grpc up`` recognises that line in a child's stderr and repeats it as its
own (``services/cli.py``).

- a :class:`ConfigurationError` (a setting, a store URI, a TLS file): status 2,
  ``zaqar-grpc: configuration error: ...``;
- a :class:`StartupError` (a port that cannot be bound, an unusable data folder, a service that
  did not start): its status (1 unless it says otherwise), e.g. ``zaqar-grpc: cannot listen
  on ...``;
- a :class:`ServiceError` at start (a store that cannot be reached or opened): status 3,
  ``zaqar-grpc: <process>: ...``.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from typing import Final

from services.common.config import ENV_PREFIX, ConfigurationError
from services.common.errors import ServiceError

PREFIX: Final = "zaqar-grpc: "
BACKLOG: Final = 2048  # uvicorn's and asyncio's default
# Exit status of a start that failed because a store cannot be reached or opened.
STORE_DOWN: Final = 3

# setting of a port -> (what it is, the process listening on it, the command-line flag for it)
PORTS: Final[dict[str, tuple[str, str, str]]] = {
    "queue_port": ("gRPC port", "queue_svc", "serve queue --grpc-port"),
    "message_port": ("gRPC port", "message_svc", "serve message --grpc-port"),
    "notifier_port": ("gRPC port", "notifier_svc", "serve notifier --grpc-port"),
    "http_port": ("HTTP port", "api_gateway", "--port"),
    "ws_port": ("WebSocket port", "api_gateway", ""),
    "queue_metrics_port": ("metrics port", "queue_svc", ""),
    "message_metrics_port": ("metrics port", "message_svc", ""),
    "notifier_metrics_port": ("metrics port", "notifier_svc", ""),
}
# process -> setting of its metrics port
METRICS_PORT: Final = {process: setting for setting, (kind, process, _) in PORTS.items()
                       if kind == "metrics port"}
# process -> setting of its gRPC port
GRPC_PORT: Final = {process: setting for setting, (kind, process, _) in PORTS.items()
                    if kind == "gRPC port"}


class StartupError(Exception):
    """A process cannot start for a reason outside the code; the message is the whole line
    (without ``zaqar-grpc:``), ``status`` the exit status."""

    def __init__(self, line: str, status: int = 1) -> None:
        super().__init__(line)
        self.status = status


# The port in a line of :class:`CannotListen` (``cannot listen on 127.0.0.1:50061 ...``).
_LINE_PORT: Final = re.compile(r"cannot listen on (?:\[[^\]]*\]|[^\s\[\]]+?):(\d+)\b")


class CannotListen(StartupError):
    """A port cannot be bound (in use, not allowed, an address this host does not have).

    ``setting`` names the setting of the port (see :data:`PORTS`); empty when the code that
    binds does not know it, and then :func:`report` fills in the gRPC port of its process.
    """

    def __init__(self, host: str, port: int, reason: str, setting: str = "") -> None:
        self.host, self.port, self.reason, self.setting = host, port, reason, setting
        super().__init__(self.line())

    def line(self) -> str:
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if self.setting not in PORTS:
            return f"cannot listen on {address}: {self.reason}"
        kind, process, flag = PORTS[self.setting]
        change = ENV_PREFIX + self.setting.upper() + (f" or {flag}" if flag else "")
        return (f"cannot listen on {address} ({kind} of {process}; change it with {change}): "
                f"{self.reason}")

    @staticmethod
    def port_in(line: str) -> int | None:
        """The port a :meth:`line` names (as ``up`` reads a child's line); None for another
        line."""
        found = _LINE_PORT.match(line)
        return int(found.group(1)) if found else None

    def of(self, setting: str) -> CannotListen:
        """The same failure, naming ``setting`` unless it names one already."""
        return self if self.setting else CannotListen(self.host, self.port, self.reason, setting)


def os_reason(exc: OSError) -> str:
    """What the system said, in lower case (``address already in use``)."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return (exc.strerror or str(exc)).lower()


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` at ``port``, made the way asyncio and
    gRPC make theirs (``SO_REUSEADDR``; IPv6 sockets IPv6 only). They listen because with
    ``SO_REUSEADDR`` a port can be bound twice and only ``listen`` finds out.

    Raises:
        OSError: an address cannot be bound, or ``host`` does not resolve.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def check_port(host: str, port: int, setting: str = "") -> None:
    """Listen on ``host:port`` for a moment, to find out before a server tries.

    Raises:
        CannotListen: it cannot be bound.
    """
    if port == 0:
        return
    try:
        sockets = bind(host, port)
    except OSError as exc:
        raise CannotListen(host, port, os_reason(exc), setting) from None
    for sock in sockets:
        sock.close()


def failure(exc: BaseException, process: str = "") -> tuple[int, str] | None:
    """The exit status and the line (without ``zaqar-grpc:``) of a failed start of
    ``process`` (``queue_svc``); None when ``exc`` is not one: a bug, whose traceback shows."""
    if isinstance(exc, ConfigurationError):
        return 2, f"configuration error: {exc}"
    if isinstance(exc, CannotListen):
        return exc.status, exc.of(GRPC_PORT.get(process, "")).line()
    if isinstance(exc, StartupError):
        return exc.status, str(exc)
    if isinstance(exc, ServiceError):
        # A store that cannot be reached or opened at start.
        where = f"{process}: " if process else ""
        return STORE_DOWN, f"{where}{exc.description}"
    return None


def report(exc: BaseException, process: str = "") -> int | None:
    """Print the line of a failed start on stderr; its exit status (None: not a failed start,
    print nothing)."""
    found = failure(exc, process)
    if found is None:
        return None
    status, line = found
    print(PREFIX + " ".join(line.split()), file=sys.stderr, flush=True)
    return status
