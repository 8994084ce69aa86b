"""The ``zaqar-grpc`` command: ``up`` runs the whole service, ``serve <service>`` runs one.

``settings`` lists the settings (with ``--effective``, the values in effect); ``plugins`` lists
the installed store backends and message filters (``services/common/plugins.py``).

``up`` starts every service (queue, message, notifier, gateway) as its own OS process
(``zaqar-grpc serve …``), hands each the same resolved settings through ``ZAQAR_*``
environment variables, waits until each is ready (gRPC health SERVING; the gateway's
``READY`` line), prints where everything listens, and stops them all, gateway first, on
Ctrl-C or SIGTERM. If any of them exits on its own, ``up`` stops the others and exits
non-zero.

A start that fails (a setting, a port in use, the data folder, a store URI or a store that does
not answer) is one ``zaqar-grpc: ...`` line on stderr and a non-zero status, never a traceback
(``services/common/startup.py``); ``up`` checks all it can before it starts any process
(``services/preflight.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import importlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from services import edge_drain, preflight
from services.common.config import (
    ENV_PREFIX,
    SECRET_SETTINGS,
    ConfigurationError,
    Settings,
    read_secret,
)
from services.common.startup import PREFIX, CannotListen, StartupError, report
from services.replicas import Replica, port_settings
from services.replicas import check_ports as check_replica_ports
from services.replicas import plan as replicas_plan

if TYPE_CHECKING:
    from services.common.tls import Tls

# service name -> (module with main()/run(), settings field of its port, gRPC health?)
SERVICES: dict[str, tuple[str, str, bool]] = {
    "queue": ("services.queue_svc.server", "queue_port", True),
    "message": ("services.message_svc.server", "message_port", True),
    "notifier": ("services.notifier_svc.server", "notifier_port", True),
    "gateway": ("services.api_gateway.server", "http_port", False),
}
ALIASES = {
    "queue_svc": "queue",
    "message_svc": "message",
    "notifier_svc": "notifier",
    "api_gateway": "gateway",
    "queues": "queue",
    "messages": "message",
}
# Start order; shutdown runs in reverse.
UP_ORDER = ("queue", "message", "notifier", "gateway")
READY_TIMEOUT = 60.0
# Plans of up's own port picks (``--replicas`` with a port set to 0) tried before a port
# taken between its pick and its bind is reported as a failed start.
PORT_PICKS = 3
# Set by ``up`` in each child's environment: its own process id (see ``_end_with_up``).
UP_PID_VARIABLE = ENV_PREFIX + "UP_PID"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

log = logging.getLogger(__name__)
# Back-off before a replica that exited is started again (``up --replicas``), doubling while
# it keeps failing; reset once it served RESTART_RESET seconds.
RESTART_BACKOFF = 1.0
RESTART_BACKOFF_MAX = 30.0
RESTART_RESET = 60.0


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML settings file (also ZAQAR_CONFIG_FILE)")
    parser.add_argument("--host", help="address every service binds to (default 127.0.0.1)")
    parser.add_argument("--port", dest="http_port", type=int, help="HTTP port (default 8888)")
    parser.add_argument("--data-dir", help="folder of the embedded SQLite stores")
    parser.add_argument(
        "--store", help="store URI for every service (sqlite:///dir/ — one file per service)"
    )
    parser.add_argument("--queue-store", help="store URI of queue_svc")
    parser.add_argument("--message-store", help="store URI of message_svc")
    parser.add_argument("--notifier-store", help="store URI of notifier_svc")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")


# setting -> the flag that sets it (for ``settings --effective``)
FLAGS = {"host": "--host", "http_port": "--port", "data_dir": "--data-dir",
         "queue_store": "--queue-store", "message_store": "--message-store",
         "notifier_store": "--notifier-store", "log_level": "--log-level"}


def _overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings given by flags, and the flag that gave each."""
    overrides = {name: getattr(args, name) for name in FLAGS
                 if getattr(args, name) is not None}
    flags = {name: FLAGS[name] for name in overrides}
    if args.store:
        if args.store.startswith("sqlite:"):
            # One embedded database per service: the URI names the folder.
            overrides["data_dir"] = args.store.removeprefix("sqlite://").rstrip("/") or "."
            flags["data_dir"] = "--store"
        else:
            for name in ("queue_store", "message_store", "notifier_store"):
                if name not in overrides:
                    overrides[name], flags[name] = args.store, "--store"
    return overrides, flags


def _settings_from(args: argparse.Namespace) -> Settings:
    return Settings.load(config_file=args.config, overrides=_overrides(args)[0])


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``ZAQAR_*`` variables that reproduce ``settings`` in a child process."""
    env = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        env[ENV_PREFIX + f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(
            value
        )
    env.pop(ENV_PREFIX + "CONFIG_FILE", None)
    return env


def child_environment(environ: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The environment of a child process of ``up`` serving ``settings``: ``environ`` with
    the variables of :func:`settings_environment`, except that a secret ``up`` read from the
    file ``ZAQAR_<NAME>_FILE`` names is passed as that variable, not as its value: the child
    reads the file itself, and reads it again when it changes (``secret_files.py``). A secret
    given a value of its own (a flag) goes as the value, without the file's variable."""
    env = {**environ, **settings_environment(settings)}
    for name in SECRET_SETTINGS:
        variable = ENV_PREFIX + name.upper()
        path = environ.get(variable + "_FILE")
        if path is None:
            continue
        try:
            from_file = read_secret(variable + "_FILE", path) == getattr(settings, name)
        except ConfigurationError:
            from_file = False
        del env[variable if from_file else variable + "_FILE"]
    return env


# serve ---------------------------------------------------------------------------------------


def serve(service: str, settings: Settings) -> int:
    """Run ``service`` in this process until a signal; its exit status.

    Raises:
        StartupError: the data folder cannot be used (checked before anything starts).
    """
    module_name = SERVICES[service][0]
    _end_with_up()
    preflight.use_data_dir(settings, [service])
    from services.common.grpc_server import run_service

    module = importlib.import_module(module_name)
    return run_service(module_name.split(".")[1], module.run, settings)


def _end_with_up() -> None:
    """A service started by ``up`` stops when ``up`` is gone, even when ``up`` was killed
    with SIGKILL and could not stop it: on Linux the kernel then sends it SIGTERM
    (``PR_SET_PDEATHSIG``), and it stops as on any SIGTERM. An ``up`` that is already gone
    when this runs is a start-up error. Elsewhere, or when not started by ``up``, nothing
    changes."""
    parent = os.environ.pop(UP_PID_VARIABLE, "")
    if not parent.isdigit():
        return
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            log.warning("cannot ask to be stopped with zaqar-grpc up (errno %d)",
                        ctypes.get_errno())
    if os.getppid() != int(parent):
        raise StartupError("zaqar-grpc up, which started this service, has exited")


# up ------------------------------------------------------------------------------------------


# Longest line ``up`` holds back waiting for its end; a longer one is passed on in pieces.
LINE_MAX = 64 * 1024


async def _lines(stream: asyncio.StreamReader) -> AsyncIterator[list[str]]:
    """The complete lines of ``stream`` (without their line ends), as many as have arrived at
    each read: a busy service's log is read, and passed on, in blocks rather than a line at a
    time. A last line without an end comes when the stream ends."""
    rest = b""
    while chunk := await stream.read(LINE_MAX):
        *done, rest = (rest + chunk).split(b"\n")
        if len(rest) >= LINE_MAX:
            done.append(rest)
            rest = b""
        if done:
            yield [raw.decode(errors="replace") for raw in done]
    if rest:
        yield [rest.decode(errors="replace")]


class _Child:
    """A service process of ``up``: its stdout and stderr read as they come.

    Lines are passed on with the service's name in front (stdout to stdout, stderr to
    stderr), except ``READY`` (``ready`` gets the address) and the child's start-up failure
    line (``zaqar-grpc: ...``), kept as ``reason`` for ``up`` to report as its own.
    """

    def __init__(
        self, name: str, proc: asyncio.subprocess.Process, replica: Replica | None = None
    ) -> None:
        self.name = name
        self.proc = proc
        self.replica = replica
        self.reason = ""
        self.ready = asyncio.get_running_loop().create_future()
        self.errors = asyncio.ensure_future(self._pump_errors())
        self.pump = asyncio.ensure_future(self._pump())

    def _pass_on(self, lines: list[str], out: TextIO) -> None:
        if lines:
            prefix = f"[{self.name}] "
            try:
                print("".join(f"{prefix}{line}\n" for line in lines), end="", file=out,
                      flush=True)
            except OSError:
                # Where up's own output went is gone (a closed pipe, a full disk): the lines
                # are lost, but the child's output is still read, or the child would block on
                # its next write once its pipe is full.
                pass

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for lines in _lines(self.proc.stdout):
            if not self.ready.done():
                for i, line in enumerate(lines):
                    if line.startswith("READY "):
                        self.ready.set_result(line.split(" ", 2)[2] if line.count(" ") >= 2 else "")
                        del lines[i]
                        break
            self._pass_on(lines, sys.stdout)
        if not self.ready.done():
            # Its stderr ends with it: once read, the reason (if it gave one) is known.
            await self.errors
            status = await self.proc.wait()
            self.ready.set_exception(StartupError(
                self.reason or f"{self.name} exited with status {status} before it was ready",
                status if status > 0 else 1,
            ))

    async def _pump_errors(self) -> None:
        assert self.proc.stderr is not None
        async for lines in _lines(self.proc.stderr):
            kept = []
            for line in lines:
                if line.startswith(PREFIX):
                    self.reason = line.removeprefix(PREFIX)
                else:
                    kept.append(line)
            self._pass_on(kept, sys.stderr)

    def cancel(self) -> None:
        self.pump.cancel()
        self.errors.cancel()


async def _grpc_serving(target: str, tls: Tls | None, deadline: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from services.common.grpc_server import open_channel

    async with open_channel(target, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not report SERVING in time")
            await asyncio.sleep(0.1)


async def _stop_all(children: Sequence[_Child], grace: float) -> None:
    """Stop the gateways first (no new request comes in), then every other service at once:
    they call one another every way round (message_svc calls queue_svc and notifier_svc, which
    call message_svc), so no order of theirs is callee last, and each finishes its calls in
    flight within its grace whatever the others do, as pods on Kubernetes do."""
    gateways = [c for c in children if c.replica is not None and c.replica.service == "gateway"]
    await asyncio.gather(*(_stop(c, grace) for c in gateways))
    await asyncio.gather(*(_stop(c, grace) for c in children if c not in gateways))


async def _stop(child: _Child, grace: float) -> None:
    if child.proc.returncode is None:
        child.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.proc.wait(), grace + 5)
        except TimeoutError:
            child.proc.kill()
            await child.proc.wait()
    child.cancel()


async def _start(replica: Replica, tls: Tls | None, children: list[_Child]) -> _Child:
    """Start ``replica`` as a child process (added to ``children``) and wait until it serves.

    Raises:
        StartupError: it exited first (with its own line, when it printed one), or it was not
            ready within ``READY_TIMEOUT`` seconds.
    """
    env = {**child_environment(os.environ, replica.settings),
           UP_PID_VARIABLE: str(os.getpid())}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", "serve", replica.service,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    child = _Child(replica.label, proc, replica)
    children.append(child)
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        await asyncio.wait_for(asyncio.shield(child.ready), READY_TIMEOUT)
        if SERVICES[replica.service][2]:
            await _grpc_serving(replica.grpc_target, tls, deadline)
    except (TimeoutError, RuntimeError):
        raise StartupError(
            f"{replica.label} was not ready within {READY_TIMEOUT:g} seconds"
        ) from None
    print(f"{replica.label:>10}: {child.ready.result()}  (pid {proc.pid})", flush=True)
    return child


async def _start_all(planned: Sequence[Replica], tls: Tls | None,
                     children: list[_Child]) -> tuple[Replica, BaseException] | None:
    """Start every replica of ``planned`` at once (as a cluster starts its pods: each service
    finds the others when it first calls them) and wait until all serve; each says where it
    serves once it does. None when all do; else the replica that did not start and why
    (:class:`StartupError`, or what went wrong in up), the others still starting given up
    (the children started are in ``children``, for the caller to stop)."""
    starts = {asyncio.ensure_future(_start(r, tls, children)): r for r in planned}
    try:
        done, _ = await asyncio.wait(starts, return_when=asyncio.FIRST_EXCEPTION)
        # Of those that failed by then, the first planned is the one reported.
        for start, replica in starts.items():
            error = start.exception() if start in done else None
            if error is not None:
                return replica, error
        return None
    finally:
        for start in starts:
            start.cancel()
        await asyncio.gather(*starts, return_exceptions=True)
        # Listed in the plan's order, whatever order they started in.
        order = {id(r): i for i, r in enumerate(planned)}
        children.sort(key=lambda c: order.get(id(c.replica), len(order)))


def _picked_port_taken(
    settings: Settings, planned: Sequence[Replica], starting: Replica | None, exc: StartupError
) -> bool:
    """Whether ``exc`` is a port that up picked (its setting is 0, "any") found in use: by
    the check before the start (``starting`` is None), or by the replica ``starting``. Another
    process (a connection's own port is one of those the kernel hands out) took it between
    the pick and the bind."""
    port = CannotListen.port_in(str(exc))
    if port is None:
        return False
    picked = {getattr(r.settings, name) for r in planned
              if starting is None or r is starting
              for name in port_settings(settings, r.service) if getattr(settings, name) == 0}
    return port in picked - {0}


async def up(settings: Settings, services: Sequence[str] = UP_ORDER, replicas: int = 1) -> int:
    """Run ``replicas`` processes of each of ``services`` until a signal; all are started at
    once.

    Everything that can be checked before a child starts is (``services/preflight.py``). A
    child that fails to start has its line repeated on stderr, the others are stopped, and the
    status is non-zero; unless what failed is a port up picked itself (one set to 0, "any")
    that another process took first: then up picks again and starts over, up to
    :data:`PORT_PICKS` plans. Once all are up: with one replica each, a child that exits stops the
    others (status 1); with several (``services/replicas.py``), it is started again in its
    place, after a back-off, while the others keep serving, as Kubernetes would.

    Raises:
        ConfigurationError: bad TLS or auth settings, a malformed store URI.
        StartupError: a port cannot be bound, the data folder cannot be used, a store does not
            answer.
    """
    from services.common.tls import load_tls

    # Checked here once, so that bad TLS settings are one error rather than one per child;
    # the children read the same files themselves, and up's health checks use them too.
    tls = await asyncio.to_thread(load_tls, settings)
    await preflight.check(settings, services)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[_Child] = []
    for attempt in range(1, PORT_PICKS + 1):
        planned = replicas_plan(settings, services, replicas)
        starting: Replica | None = None
        try:
            check_replica_ports(planned)
            failed = await _start_all(planned, tls, children)
            if failed is not None:
                starting, error = failed
                raise error
        except StartupError as exc:
            await _stop_all(children, settings.shutdown_grace)
            children = []
            if attempt < PORT_PICKS and _picked_port_taken(settings, planned, starting, exc):
                print(f"{PREFIX}{exc} (a port up picked, taken before its process bound it: "
                      "picking the ports again)", file=sys.stderr, flush=True)
                continue
            return report(exc) or 1
        break
    data_dir = os.path.abspath(settings.data_dir)  # noqa: ASYNC240 - no I/O, string only
    gateways = [r.settings for r in planned if r.service == "gateway"] or [settings]
    urls = "  ".join(f"http://{g.host}:{g.http_port}/v2/" for g in gateways)
    print(f"zaqar-grpc is up: {urls}  (data in {data_dir}; Ctrl-C stops)", flush=True)
    if replicas == 1:
        code = await _watch_all(children, stop)
    else:
        code = await _supervise(children, stop, tls)
    await _stop_all(children, settings.shutdown_grace)
    print("zaqar-grpc stopped", flush=True)
    return code


async def _watch_all(children: list[_Child], stop: asyncio.Event) -> int:
    """Until a signal (0) or until a child exits (1, naming it)."""
    exits = [asyncio.ensure_future(c.proc.wait()) for c in children]
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({stopper, *exits}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if stopper in done:
        return 0
    for c in children:
        if c.proc.returncode is not None:
            await c.errors
            why = f": {c.reason}" if c.reason else ""
            print(f"{PREFIX}{c.name} exited with status {c.proc.returncode}{why}; "
                  "stopping the others", file=sys.stderr, flush=True)
    return 1


async def _supervise(children: list[_Child], stop: asyncio.Event, tls: Tls | None) -> int:
    """Until a signal (0): a child that exits is started again in its place after a back-off
    that doubles from ``RESTART_BACKOFF`` up to ``RESTART_BACKOFF_MAX`` while it keeps failing
    (reset once it served ``RESTART_RESET`` seconds)."""
    backoff: dict[str, float] = {}
    started = {c.name: time.monotonic() for c in children}
    stopper = asyncio.ensure_future(stop.wait())
    restarts: set[asyncio.Future[Any]] = set()
    exited: set[_Child] = set()  # being replaced (restart removes each from children)

    async def restart(old: _Child) -> None:
        assert old.replica is not None
        await old.errors
        why = f": {old.reason}" if old.reason else ""
        served = time.monotonic() - started[old.name]
        delay = RESTART_BACKOFF if served >= RESTART_RESET else min(
            RESTART_BACKOFF_MAX, backoff.get(old.name, RESTART_BACKOFF / 2) * 2
        )
        backoff[old.name] = delay
        print(f"{PREFIX}{old.name} exited with status {old.proc.returncode}{why}; the others "
              f"keep serving; starting a new one in {delay:g}s", file=sys.stderr, flush=True)
        old.cancel()
        children.remove(old)
        exited.discard(old)
        await asyncio.sleep(delay)
        started[old.name] = time.monotonic()
        try:
            await _start(old.replica, tls, children)
        except StartupError as exc:
            print(f"{PREFIX}{old.name} did not start again: {exc}", file=sys.stderr,
                  flush=True)
            failed = next((c for c in children if c.name == old.name), None)
            if failed is not None and failed.proc.returncode is None:
                failed.proc.kill()

    waits: dict[asyncio.Future[Any], _Child] = {}
    try:
        while not stop.is_set():
            for c in children:
                if c not in waits.values() and c not in exited:
                    waits[asyncio.ensure_future(c.proc.wait())] = c
            pending: set[asyncio.Future[Any]] = {stopper, *waits, *restarts}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task in restarts:
                    restarts.discard(task)
                elif task in waits:
                    old = waits.pop(task)
                    exited.add(old)
                    restarts.add(asyncio.ensure_future(restart(old)))
    finally:
        stopper.cancel()
        for job in restarts:
            job.cancel()
        await asyncio.gather(*restarts, return_exceptions=True)
        for task in waits:
            task.cancel()
    return 0


# entry ---------------------------------------------------------------------------------------


def _print_settings(args: argparse.Namespace) -> None:
    if not args.effective:
        for name, default, text in Settings.describe():
            print(f"{name:<28} {default:<22} {text}")
        return
    overrides, flags = _overrides(args)
    rows = Settings.effective(config_file=args.config, overrides=overrides, flags=flags)
    width = min(48, max(len(value) for _, value, _ in rows))
    for name, value, source in rows:
        print(f"{name:<32} {value:<{width}} {source}")


def _print_plugins(as_json: bool) -> None:
    from services.common import plugins

    found = plugins.installed()
    if as_json:
        import json

        print(json.dumps([dataclasses.asdict(plugin) for plugin in found], indent=2))
        return
    header = ("KIND", "NAME", "TARGET", "PACKAGE", "VERSION")
    rows = [header, *((p.kind, p.name, p.target, p.distribution, p.version) for p in found)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    for row in rows:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False))
              + "  " + row[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zaqar-grpc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="run every service, each as its own process")
    _add_settings_flags(p_up)
    p_up.add_argument(
        "--replicas", type=int, default=1, metavar="N",
        help="run N processes of every service, balanced as on Kubernetes: gateway i on "
        "http_port+i and ws_port+i, gRPC replica i on its port+10*i; a replica that exits is "
        "started again while the others serve (default 1)",
    )
    p_serve = sub.add_parser("serve", help="run one service (what a container runs)")
    p_serve.add_argument("service", help="queue | message | notifier | gateway")
    _add_settings_flags(p_serve)
    p_serve.add_argument("--grpc-port", type=int, help="gRPC port of this service (0 = any)")
    p_settings = sub.add_parser(
        "settings", help="list every setting with its variable and default; with --effective, "
        "the values in effect and where each comes from"
    )
    p_settings.add_argument(
        "--effective", action="store_true",
        help="show the value of each setting from the defaults, the config file, ZAQAR_* "
        "variables and these flags, and which of them it comes from (secrets redacted)",
    )
    _add_settings_flags(p_settings)
    p_plugins = sub.add_parser(
        "plugins", help="list the installed store backends and message filters: kind, name "
        "(a store's URI scheme), what it loads, and the package and version it comes from"
    )
    p_plugins.add_argument("--json", action="store_true", help="print a JSON list instead")
    p_drain = sub.add_parser(
        "edge-drain", help="beside Envoy in the Kubernetes edge pod: on SIGTERM, drain Envoy "
        "gracefully and answer its preStop hook once drained (services/edge_drain.py)"
    )
    edge_drain.add_arguments(p_drain)
    args = parser.parse_args(argv)

    try:
        if args.command == "settings":
            _print_settings(args)
            return 0
        if args.command == "plugins":
            _print_plugins(args.json)
            return 0
        if args.command == "edge-drain":
            return edge_drain.main(args)
        settings = _settings_from(args)
        if args.command == "up":
            from services.common.grpc_server import install_event_loop_policy

            install_event_loop_policy()
            return asyncio.run(up(settings, replicas=args.replicas))
        service = ALIASES.get(args.service, args.service)
        if service not in SERVICES:
            parser.error(f"unknown service {args.service!r}; choose from {', '.join(SERVICES)}")
        if args.grpc_port is not None and SERVICES[service][2]:
            settings = dataclasses.replace(settings, **{SERVICES[service][1]: args.grpc_port})
        return serve(service, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A failed start is one line; anything else is a bug, whose traceback shows.
        status = report(exc)
        if status is None:
            raise
        return status


if __name__ == "__main__":
    sys.exit(main())
