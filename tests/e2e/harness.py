"""Runs ``zaqar-grpc up`` as a real process tree on free ports, for end-to-end tests."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.cli import settings_environment
from services.common.config import Settings


@dataclass
class Stack:
    """A running ``zaqar-grpc up``: its settings, base URL and captured output."""

    settings: Settings
    proc: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    pump: threading.Thread | None = None
    terminated: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.http_port}"

    def child_pids(self) -> dict[str, int]:
        """service -> pid, read from the lines ``up`` prints once each service is ready."""
        pids = {}
        for line in self.output:
            name, _, rest = line.strip().partition(":")
            if "(pid " in rest:
                pids[name.strip()] = int(rest.rsplit("(pid ", 1)[1].rstrip(")"))
        return pids

    def terminate(self) -> None:
        """SIGTERM once, without waiting (``stop`` then waits)."""
        if self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.pump is not None:
            self.pump.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_stack(settings: Settings, extra_args: list[str] | None = None,
                timeout: float = 60, files: Mapping[str, Path] | None = None,
                open_files: int | None = None) -> Stack:
    """``files``: secret settings read from files (setting -> path), given to ``up`` as
    ``ZAQAR_<NAME>_FILE`` instead of their values; ``open_files``: the open-files limit (soft
    and hard) of ``up`` and so of every service."""
    env = {**os.environ, **settings_environment(settings), "PYTHONUNBUFFERED": "1"}
    for name, path in (files or {}).items():
        del env[f"ZAQAR_{name.upper()}"]
        env[f"ZAQAR_{name.upper()}_FILE"] = str(path)
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", *(extra_args or [])],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        preexec_fn=None if open_files is None else functools.partial(
            resource.setrlimit, resource.RLIMIT_NOFILE, (open_files, open_files)),
    )
    stack = Stack(settings, proc)
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            stack.output.append(line)
            if line.startswith("zaqar-grpc is up"):
                ready.set()
        ready.set()

    stack.pump = threading.Thread(target=pump, daemon=True)
    stack.pump.start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            break
    if proc.poll() is not None or not any(
        line.startswith("zaqar-grpc is up") for line in stack.output
    ):
        stack.stop()
        raise RuntimeError("zaqar-grpc up did not come up:\n" + "".join(stack.output))
    return stack


@contextlib.contextmanager
def sqlite_stack(data_dir: Path, **overrides: Any) -> Iterator[Stack]:
    """A ``zaqar-grpc up`` on SQLite in ``data_dir``, on free ports, with ``overrides`` of the
    settings; it must stop cleanly afterwards."""
    from tests.servers import service_ports

    settings = Settings.load(environ={}, overrides={
        "data_dir": str(data_dir), **service_ports(), **overrides,
    })
    stack = start_stack(settings)
    try:
        yield stack
    finally:
        assert stack.stop() == 0, "".join(stack.output)
