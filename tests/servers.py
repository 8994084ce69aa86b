"""Real backing servers for the tests: redis-server and a MongoDB wire-protocol server.

Each runs as its own OS process on a free loopback port, so tests can also kill and restart
it. Locally a missing server skips the tests that need it; in CI (``CI=true``) it fails them.

    python tests/servers.py mongodb PORT [STORAGE]   run the MongoDB wire server in the foreground
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range (32768+ here), so that an
    outgoing connection made between this pick and the bind cannot take it."""
    low, high = 20000, _ephemeral_start() - 1
    for _ in range(200):
        port = random.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {low} and {high}")


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


def redis_process(workdir: Path, *, durable: bool = False) -> ServerProcess:
    """redis-server on a free port; ``durable`` turns on AOF with fsync on every write."""
    binary = shutil.which("redis-server")
    if binary is None:
        missing("redis-server")
    port = free_port()
    argv = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--dir", str(workdir)]
    argv += (["--appendonly", "yes", "--appendfsync", "always"] if durable
             else ["--appendonly", "no"])
    return ServerProcess(argv, port, workdir)


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


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = redis_process(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongodb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = mongodb_process(tmp_path_factory.mktemp("mongodb"))
    server.start()
    yield server
    server.stop()


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
