"""Real backing servers for the tests: redis-server (alone, or six of them as a Redis Cluster)
and a MongoDB wire-protocol server.

Each runs as its own OS process on a free loopback port, so tests can also kill and restart
it. Locally a missing server skips the tests that need it; in CI (``CI=true``) it fails them.

    python tests/servers.py mongodb PORT [STORAGE]   run the MongoDB wire server in the foreground
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from asyncio import selector_events
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from redis.cluster import ClusterNode, RedisCluster

if TYPE_CHECKING:  # this file also runs as a script (the MongoDB wire server), outside tests
    from tests.certs import Leaf, Pki

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _worker_share() -> tuple[int, int]:
    """(index, stride) of this pytest-xdist worker, (0, 1) without workers. Worker i picks
    only ports P with P % stride == i, so two workers never pick the same port; the stride is
    the smallest divisor of 10000 not below the number of workers (4 for 3 workers), so that
    the cluster bus port P + 10000 of a Redis Cluster node is in its worker's share too."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if count <= 1:
        return 0, 1
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker.removeprefix("gw") or 0) if worker.startswith("gw") else 0
    stride = next(d for d in range(count, 10001) if 10000 % d == 0)
    return index % count, stride


# Ports that tests bind by their well-known number, never handed out at random: the
# MongoDB wire server python-zaqarclient's pool tests name (tests/e2e/test_admin_mode.py),
# and the service's own default ports.
RESERVED_PORTS = frozenset({27017, 6379, 8888, 9000, 5000})


# Ports this process has handed out (and the bus ports of the cluster ports among them): a
# port picked but not bound yet is not free for the next pick. Say a stack's ports are picked,
# then a Redis Cluster is started for it: a node's bus port (port + 10000) must not be one of
# the stack's. Forgotten when many have gathered (their tests are long over).
_GIVEN: set[int] = set()
_GIVEN_AT_MOST = 2000


def _pick(low: int, high: int) -> int:
    index, stride = _worker_share()
    if len(_GIVEN) > _GIVEN_AT_MOST:
        _GIVEN.clear()
    while True:
        port = random.randint(low, high)
        port = port - (port % stride) + index
        if (port not in RESERVED_PORTS and port + 10000 not in RESERVED_PORTS
                and port not in _GIVEN and port + 10000 not in _GIVEN):
            return port


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+ here), so that an
    outgoing connection made between this pick and the bind cannot take it."""
    low, high = 20000, _ephemeral_start() - 1
    for _ in range(200):
        port = _pick(low, high - 8)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


def free_cluster_port() -> int:
    """A free loopback port P whose cluster bus port P + 10000 is free too, both below the
    kernel's ephemeral range."""
    low, high = 20000, _ephemeral_start() - 10001
    for _ in range(400):
        port = _pick(low, high - 8)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bus:
            try:
                s.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
            _GIVEN.update((port, port + 10000))
            return port
    raise RuntimeError(f"no free port pair between {low} and {high}")


def free_ports(count: int) -> list[int]:
    """``count`` different free ports (:func:`free_port` may pick one port twice)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


# Settings of every port a stack binds (gRPC, HTTP, WebSocket, metrics).
PORT_SETTINGS = (
    "queue_port", "message_port", "notifier_port", "http_port", "ws_port",
    "queue_metrics_port", "message_metrics_port", "notifier_metrics_port",
)


def service_ports() -> dict[str, int]:
    """A different free port for each of :data:`PORT_SETTINGS`."""
    return dict(zip(PORT_SETTINGS, free_ports(len(PORT_SETTINGS)), strict=True))


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return max(21000, int(fh.read().split()[0]))
    except (OSError, ValueError, IndexError):
        return 32768


def missing(what: str) -> None:
    """Skip locally, fail in CI: a missing server is never a silent pass."""
    if IN_CI:
        pytest.fail(f"{what} is not available in CI (scripts/bootstrap.sh --test installs it)")
    pytest.skip(f"{what} is not available here")


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


@dataclass
class ServerProcess:
    """A server process that a test may stop, kill and start again on the same port/data."""

    argv: list[str]
    port: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = field(default=None)

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / "server.log", "ab") as log:
            self.proc = subprocess.Popen(self.argv, cwd=self.workdir, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _wait_port(self.port, self.proc)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def redis_tls_arguments(
    pki: Pki, port: int, auth_clients: str = "optional", cert: Leaf | None = None
) -> list[str]:
    """redis-server's arguments to serve TLS only, on ``port``, with ``cert`` (default
    ``pki``'s service certificate, for 127.0.0.1 and localhost); ``auth_clients``: ``yes`` (a
    client certificate signed by ``pki.ca`` is required), ``optional`` (checked when given)
    or ``no``."""
    cert = cert or pki.service
    return ["--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(cert.cert), "--tls-key-file", str(cert.key),
            "--tls-ca-cert-file", str(pki.ca), "--tls-auth-clients", auth_clients]


def redis_tls_client(pki: Pki) -> dict[str, Any]:
    """redis-py's arguments of a client of a server of :func:`redis_tls_arguments`, with
    ``pki``'s client certificate."""
    return {"ssl": True, "ssl_ca_certs": str(pki.ca), "ssl_certfile": str(pki.client.cert),
            "ssl_keyfile": str(pki.client.key)}


def redis_cli_tls(pki: Pki | None) -> list[str]:
    """redis-cli's arguments for a server of :func:`redis_tls_arguments` (none for ``None``)."""
    if pki is None:
        return []
    return ["--tls", "--cacert", str(pki.ca), "--cert", str(pki.client.cert),
            "--key", str(pki.client.key)]


def redis_tls_query(pki: Pki) -> str:
    """The TLS options of a ``rediss://`` URI of such a server, with the client certificate."""
    return (f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client.cert}"
            f"&ssl_keyfile={pki.client.key}")


class SilentServer:
    """Accepts connections on ``port`` and never answers until ``close``: a store behind a
    network partition, or hung."""

    def __init__(self, port: int) -> None:
        self._listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._held.append(connection)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (Linux)
        self._listener.close()
        for connection in self._held:
            connection.close()
        self._thread.join()


def redis_process(
    workdir: Path, *, durable: bool = False, tls: Pki | None = None,
    auth_clients: str = "optional", cert: Leaf | None = None,
) -> ServerProcess:
    """redis-server on a free port; ``durable`` turns on AOF with fsync on every write;
    ``tls``: TLS only on that port (:func:`redis_tls_arguments`)."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server")
    port = free_port()
    listen = (redis_tls_arguments(tls, port, auth_clients, cert) if tls is not None
              else ["--port", str(port)])
    argv = [str(binary), *listen, "--bind", "127.0.0.1", "--save", "",
            "--dir", str(workdir)]
    argv += (["--appendonly", "yes", "--appendfsync", "always"] if durable
             else ["--appendonly", "no"])
    return ServerProcess(argv, port, workdir)


@dataclass
class RedisClusterProcesses:
    """A local Redis Cluster: three masters, each with one replica, every node its own
    redis-server process (``nodes[i]`` listens on ``nodes[i].port``)."""

    nodes: list[ServerProcess]
    tls: Pki | None = None
    """The PKI of a cluster that speaks TLS only (nodes, replication and the cluster bus)."""

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()  # its data is thrown away: no need for a graceful stop

    def __enter__(self) -> RedisClusterProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def client_arguments(self) -> dict[str, Any]:
        """redis-py's arguments of a client of the nodes (TLS ones when the cluster has TLS)."""
        return redis_tls_client(self.tls) if self.tls is not None else {}

    @property
    def uri_hosts(self) -> str:
        """Every node as ``127.0.0.1:port,...`` for a ``redis+cluster://`` URI."""
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def stack_uris(self, prefix: str, options: str = "") -> dict[str, str]:
        """The three store settings of a ``zaqar-grpc up`` stack on this cluster, each store
        under the key prefix ``prefix`` + its service's initial, ``options`` (``&name=value``)
        after."""
        return {f"{service}_store":
                f"redis+cluster://{self.uri_hosts}?prefix={prefix}{service[0]}{options}"
                for service in ("queue", "message", "notifier")}

    def node(self, port: int) -> ServerProcess:
        return next(node for node in self.nodes if node.port == port)

    def master_of(self, key: str) -> ServerProcess:
        """The node serving ``key``'s slot now, as the live nodes say."""
        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        nodes = [ClusterNode("127.0.0.1", n.port) for n in live]  # type: ignore[no-untyped-call]
        client = RedisCluster(startup_nodes=nodes, **self.client_arguments)
        try:
            node = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            return self.node(int(node.port))
        finally:
            client.close()

    def cli(self, port: int, *args: str, timeout: float = 10.0) -> str:
        """The reply of ``redis-cli -p port args...`` (raw text)."""
        done = subprocess.run(
            [_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *redis_cli_tls(self.tls),
             *args],
            capture_output=True, text=True, timeout=timeout, check=True,
        )
        return done.stdout

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` of one node, as a dict."""
        lines = self.cli(port, "cluster", "info").splitlines()
        return dict(line.strip().split(":", 1) for line in lines if ":" in line)

    def roles(self) -> dict[int, str]:
        """port -> "master" or "slave" for every node alive, as their peers see it (from a
        live node's ``CLUSTER NODES``); failed nodes are left out."""
        alive = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        roles: dict[int, str] = {}
        for line in self.cli(alive.port, "cluster", "nodes").splitlines():
            fields = line.split()
            port_text = fields[1].split("@")[0].rpartition(":")[2] if len(fields) > 2 else ""
            if not port_text.isdigit():
                # Not a node's line: an error reply, e.g. LOADING from a node just restarted.
                raise subprocess.SubprocessError(f"CLUSTER NODES answered {line!r}")
            port = int(port_text)
            flags = fields[2].split(",")
            if "fail" not in flags and "fail?" not in flags:
                roles[port] = "master" if "master" in flags else "slave"
        return roles

    def replicating(self, port: int) -> bool:
        """Whether the replica on ``port`` has its master's data and follows it."""
        return "master_link_status:up" in self.cli(port, "info", "replication")

    def replication_offsets(self, master: int) -> tuple[int, list[int]]:
        """The master's replication offset, and the offset each of its online replicas has
        confirmed, from the master's ``INFO replication``."""
        fields = dict(line.strip().split(":", 1)
                      for line in self.cli(master, "info", "replication").splitlines()
                      if ":" in line)
        confirmed = []
        for name, value in fields.items():
            if name.startswith("slave") and name[5:].isdigit():
                replica = dict(pair.split("=", 1) for pair in value.split(","))
                if replica.get("state") == "online":
                    confirmed.append(int(replica["offset"]))
        return int(fields["master_repl_offset"]), confirmed

    def wait_replicated(self, master: int, timeout: float = 30.0) -> None:
        """Until a replica of ``master`` has confirmed every write the master had taken when
        this was called (so none of them is lost if the master dies now)."""
        offset, _ = self.replication_offsets(master)
        deadline = time.monotonic() + timeout
        while not any(done >= offset for done in self.replication_offsets(master)[1]):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica of {master} reached offset {offset} "
                                   f"in {timeout}s")
            time.sleep(0.01)

    def wait_healthy(self, timeout: float = 60.0, masters: int = 3) -> None:
        """Until every live node says ``cluster_state:ok`` and knows every slot as served, it
        sees ``masters`` masters and the others replicas, and every replica has synchronised
        with its master (a replica that has not cannot take over)."""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            try:
                live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
                infos = [self.info(n.port) for n in live]
                roles = self.roles()
            except (subprocess.SubprocessError, OSError, StopIteration) as exc:
                problem = str(exc)
            else:
                states = {i.get("cluster_state") for i in infos}
                served = {i.get("cluster_slots_ok") for i in infos}
                counts = sorted(roles.values())
                if (states == {"ok"} and served == {"16384"}
                        and counts == ["master"] * masters + ["slave"] * (len(live) - masters)
                        and all(self.replicating(port) for port, role in roles.items()
                                if role == "slave")):
                    return
                problem = f"states {states}, slots ok {served}, roles {roles}"
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster is not healthy after {timeout}s: {problem}")


@dataclass
class RedisSentinelProcesses:
    """A master watched by Sentinels (``redis+sentinel://``): one redis-server master, its
    replicas, and Sentinels that agree with a quorum of 2 and fail over after a second."""

    master: ServerProcess
    replicas: list[ServerProcess]
    sentinels: list[ServerProcess]
    name: str = "zq-master"
    tls: Pki | None = None
    """The PKI of a group that speaks TLS only (servers, replication and Sentinels)."""

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.kill()

    def __enter__(self) -> RedisSentinelProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def servers(self) -> list[ServerProcess]:
        """The master and the replicas, as started (roles change with failovers)."""
        return [self.master, *self.replicas]

    def uri(self, db: int = 0) -> str:
        """The group's URI, without options (for TLS: :func:`redis_tls_query` after it)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        scheme = "rediss+sentinel" if self.tls is not None else "redis+sentinel"
        return f"{scheme}://{hosts}/{self.name}/{db}"

    def stack_uris(self, prefix: str, message_options: str = "") -> dict[str, str]:
        """The three store settings of a ``zaqar-grpc up`` stack on this group: databases 1 to
        3, each store under the key prefix ``prefix`` + its service's initial, and
        ``message_options`` (``&name=value``) after the message store's."""
        return {f"{service}_store": f"{self.uri(db)}?prefix={prefix}{service[0]}"
                + (message_options if service == "message" else "")
                for db, service in enumerate(("queue", "message", "notifier"), start=1)}

    def cli(self, port: int, *args: str, timeout: float = 10.0) -> str:
        done = subprocess.run([_binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port),
                               *redis_cli_tls(self.tls), *args],
                              capture_output=True, text=True, timeout=timeout, check=True)
        return done.stdout

    def master_port(self) -> int | None:
        """The master's port as a live Sentinel names it now."""
        named = self.masters_named()
        return next((port for port in named if port is not None), None)

    def masters_named(self) -> list[int | None]:
        """The master's port as each live Sentinel names it (None: it cannot be asked)."""
        named: list[int | None] = []
        for sentinel in self.sentinels:
            if sentinel.proc is None or sentinel.proc.poll() is not None:
                continue
            try:
                reply = self.cli(sentinel.port, "sentinel", "get-master-addr-by-name", self.name)
            except (subprocess.SubprocessError, OSError):
                named.append(None)
                continue
            lines = reply.split()
            named.append(int(lines[1]) if len(lines) == 2 else None)
        return named

    def server(self, port: int) -> ServerProcess:
        return next(s for s in self.servers if s.port == port)

    def wait_healthy(self, timeout: float = 60.0, not_on: int | None = None) -> int:
        """Until every live Sentinel names the same master (not ``not_on``), which says it is
        one, every other live server replicates it, and every live Sentinel knows them all; the
        master's port. (A failed master must not be started again before every Sentinel knows
        of the failover: a Sentinel still naming it would make the others its replicas, and
        without persistence it comes back empty and wipes them.)"""
        deadline = time.monotonic() + timeout
        problem = ""
        while time.monotonic() < deadline:
            try:
                named = self.masters_named()
                port = named[0] if named and len(set(named)) == 1 else None
                live = [s for s in self.servers if s.proc is not None and s.proc.poll() is None]
                if port is None or port == not_on:
                    problem = f"the Sentinels name {named}"
                elif "role:master" not in self.cli(port, "info", "replication"):
                    problem = f"{port} is not a master yet"
                elif not all("master_link_status:up" in self.cli(s.port, "info", "replication")
                             and f"master_port:{port}" in self.cli(s.port, "info", "replication")
                             for s in live if s.port != port):
                    problem = "a replica has not synchronised with the master"
                else:
                    known = [self.cli(s.port, "sentinel", "master", self.name)
                             for s in self.sentinels if s.proc is not None
                             and s.proc.poll() is None]
                    # (a replica that died is still listed, as down: at least the live ones)
                    wanted = len(live) - 1
                    if all(int(_field(k, "num-slaves") or 0) >= wanted for k in known):
                        return port
                    problem = "a Sentinel does not know every replica yet"
            except (subprocess.SubprocessError, OSError) as exc:
                problem = str(exc)
            time.sleep(0.1)
        raise RuntimeError(f"the Sentinel group is not healthy after {timeout}s: {problem}")


def _field(reply: str, name: str) -> str | None:
    """A field of ``SENTINEL MASTER``'s reply as redis-cli prints it (name and value lines)."""
    lines = reply.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line == name:
            return lines[i + 1]
    return None


# How long a Sentinel waits for an answer before it calls a server down. Shorter failovers
# make faster tests, but not below this: on a loaded machine a Sentinel once found the new
# master silent for 1 s, failed it over again to the old one just restarted empty, and the
# replicas' data went with it (why Redis advises persistence on masters Sentinels watch).
DOWN_AFTER_MS = 3000


def start_redis_sentinel(
    workdir: Path, replicas: int = 1, name: str = "zq-master", tls: Pki | None = None,
    auth_clients: tuple[str, str] = ("optional", "optional"),
) -> RedisSentinelProcesses:
    """A master, ``replicas`` replicas and three Sentinels (quorum 2, a server is down after
    :data:`DOWN_AFTER_MS` without an answer) that call the group ``name``, waited on until all
    agree; with ``tls``, every one of them speaks TLS only (replication and Sentinels' links
    too), and ``auth_clients`` says whether the servers and the Sentinels want a client
    certificate (``tls-auth-clients``). Use it in a ``with`` block, or call its ``stop()``."""
    server = _binary("redis-server")
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
              "--repl-diskless-sync-delay", "0"]

    def listen(port: int) -> list[str]:
        if tls is None:
            return ["--port", str(port)]
        return [*redis_tls_arguments(tls, port, auth_clients[0]), "--tls-replication", "yes"]

    folder = workdir / "master"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    master = ServerProcess([server, *listen(port), *common, "--dir", str(folder)],
                           port, folder)
    group = RedisSentinelProcesses(master, [], [], name, tls)
    try:
        master.start()
        for i in range(replicas):
            folder = workdir / f"replica-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            rport = free_port()
            replica = ServerProcess(
                [server, *listen(rport), *common, "--dir", str(folder),
                 "--replicaof", "127.0.0.1", str(port)], rport, folder)
            group.replicas.append(replica)
            replica.start()
        for i in range(3):
            folder = workdir / f"sentinel-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            sport = free_port()
            config = folder / "sentinel.conf"  # Sentinel rewrites it: one each, writable
            ports = f"port {sport}\n"
            if tls is not None:
                ports = (f"port 0\ntls-port {sport}\ntls-cert-file {tls.service.cert}\n"
                         f"tls-key-file {tls.service.key}\ntls-ca-cert-file {tls.ca}\n"
                         f"tls-replication yes\ntls-auth-clients {auth_clients[1]}\n")
            config.write_text(
                f"{ports}bind 127.0.0.1\ndir {folder}\n"
                f"sentinel monitor {group.name} 127.0.0.1 {port} 2\n"
                f"sentinel down-after-milliseconds {group.name} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {group.name} 10000\n"
                f"sentinel parallel-syncs {group.name} 1\n"
            )
            sentinel = ServerProcess([server, str(config), "--sentinel"], sport, folder)
            group.sentinels.append(sentinel)
            sentinel.start()
        group.wait_healthy()
    except BaseException:
        group.stop()
        raise
    return group


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"{name} (Debian package redis-server; redis-cli comes with it)")
        raise AssertionError("unreachable")
    return found


def start_redis_cluster(
    workdir: Path, node_timeout_ms: int = 2000, tls: Pki | None = None
) -> RedisClusterProcesses:
    """Six redis-server processes in cluster mode joined by ``redis-cli --cluster create`` as
    three masters with one replica each, waited on until every node says
    ``cluster_state:ok``. A short ``cluster-node-timeout`` makes failover take seconds.
    ``tls``: every node speaks TLS only, to clients, to its replicas and on the cluster bus.

    Use it in a ``with`` block, or call its ``stop()``.
    """
    server, cli = _binary("redis-server"), _binary("redis-cli")
    nodes: list[ServerProcess] = []
    cluster = RedisClusterProcesses(nodes, tls)
    try:
        for i in range(6):
            port = free_cluster_port()
            folder = workdir / f"node-{i}"
            folder.mkdir(parents=True, exist_ok=True)
            listen = ["--port", str(port)]
            if tls is not None:
                listen = [*redis_tls_arguments(tls, port), "--tls-cluster", "yes",
                          "--tls-replication", "yes"]
            argv = [server, *listen, "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(folder / "nodes.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--repl-diskless-sync-delay", "0",
                    "--appendonly", "no", "--save", "", "--dir", str(folder)]
            node = ServerProcess(argv, port, folder)
            nodes.append(node)
            node.start()
        subprocess.run(
            [cli, *redis_cli_tls(tls), "--cluster", "create",
             *(f"127.0.0.1:{n.port}" for n in nodes), "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=120, check=True,
        )
        cluster.wait_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def close_sockets_of_cancelled_connects() -> None:
    """pymongo (4.20 and earlier) does not close the socket of a connection it is making when
    the task making it is cancelled (an ``AsyncMongoClient`` closed, or an operation given up,
    while ``loop.sock_connect`` waits; mongo-python-driver PYTHON-5867). The garbage collector
    closes that socket later, and its ResourceWarning, an error here, lands in whichever test
    is running then. So in the tests' event loops a cancelled ``sock_connect`` closes its
    socket, as pymongo's fix does (applied once, by tests/conftest.py). Only pymongo calls
    ``sock_connect`` in this project; a socket of our own left open still fails the test that
    leaks it."""
    original = selector_events.BaseSelectorEventLoop.sock_connect

    async def sock_connect(
        self: selector_events.BaseSelectorEventLoop, sock: socket.socket, address: Any
    ) -> None:
        try:
            await original(self, sock, address)
        except asyncio.CancelledError:
            sock.close()
            raise

    selector_events.BaseSelectorEventLoop.sock_connect = sock_connect  # type: ignore[method-assign,assignment]


# SecantusDB answers hello as the one member (the primary) of this replica set.
MONGODB_REPLICA_SET = "secantus"


def mongodb_process(workdir: Path) -> ServerProcess:
    """The MongoDB wire-protocol server (SecantusDB) on a free port."""
    try:
        import secantus.server  # noqa: F401
    except ImportError:
        missing("the MongoDB wire server (PyPI secantusdb)")
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "mongodb", str(port),
            str(workdir / "db")]
    proc = ServerProcess(argv, port, workdir)
    return proc


def mongodb_uri(server: ServerProcess, database: str, *options: str,
                majority: bool = True) -> str:
    """A store URI of ``database`` on the test server in the replica-set form (SecantusDB is
    the one member of its set, so the driver treats it as a replica set), with majority reads
    unless ``majority`` is false (writes are majority by default), then ``options``
    (``name=value``)."""
    query = [f"replicaSet={MONGODB_REPLICA_SET}",
             *(["readConcernLevel=majority"] if majority else []), *options]
    return f"mongodb://127.0.0.1:{server.port}/{database}?{'&'.join(query)}"


def wait_mongodb_primary(server: ServerProcess, timeout: float = 60.0) -> None:
    """Until the replica set's one member says it is the writable primary."""
    deadline = time.monotonic() + timeout
    said: object = None
    while time.monotonic() < deadline:
        client: MongoClient[dict[str, object]] = MongoClient(
            "127.0.0.1", server.port, directConnection=True, serverSelectionTimeoutMS=2000)
        try:
            said = client.admin.command("hello")
            if isinstance(said, dict) and said.get("isWritablePrimary"):
                return
        except PyMongoError as exc:
            said = exc
        finally:
            client.close()
        time.sleep(0.1)
    raise RuntimeError(f"the MongoDB server is not primary after {timeout}s: {said}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with redis_process(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinelProcesses]:
    """A master with one replica and three Sentinels, for the session; tests that fail it
    over start their own (:func:`start_redis_sentinel`)."""
    with start_redis_sentinel(tmp_path_factory.mktemp("redis-sentinel")) as group:
        yield group


@pytest.fixture(scope="session")
def redis_tls_sentinel(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[RedisSentinelProcesses]:
    """:func:`redis_sentinel`, speaking TLS only."""
    with start_redis_sentinel(tmp_path_factory.mktemp("redis-tls-sentinel"), tls=pki) as group:
        yield group


@pytest.fixture(scope="session")
def redis_tls_server(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[ServerProcess]:
    """redis-server speaking TLS only, with the session's PKI; a client certificate is
    checked when given, not required."""
    with redis_process(tmp_path_factory.mktemp("redis-tls"), tls=pki) as server:
        yield server


@pytest.fixture(scope="session")
def redis_tls_cluster(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki
) -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster like :func:`redis_cluster`, speaking TLS only."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-tls-cluster"), tls=pki) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcesses]:
    """A Redis Cluster of six local nodes (three masters, three replicas) for the session.

    Tests that kill nodes start their own (:func:`start_redis_cluster`), so this one always
    has its three masters."""
    with start_redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def mongodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with mongodb_process(tmp_path_factory.mktemp("mongodb")) as server:
        yield server


def _serve_mongodb(port: int, storage: str) -> None:
    from secantus.server import SecantusDBServer

    server = SecantusDBServer("127.0.0.1", port, storage_path=storage, ttl_sweep_seconds=1)
    server.start()
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stop:
        time.sleep(0.2)
    server.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["mongodb"]:
        _serve_mongodb(int(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else ":memory:")
    else:
        sys.exit("usage: python tests/servers.py mongodb PORT [STORAGE]")
