"""The ``zaqar-grpc`` command: ``up`` runs the whole service, ``serve <service>`` runs one.

``up`` starts every service (queue, message, notifier, gateway) as its own OS process
(``zaqar-grpc serve …``), hands each the same resolved settings through ``ZAQAR_*``
environment variables, waits until each is ready (gRPC health SERVING; the gateway's
``READY`` line), prints where everything listens, and stops them all, gateway first, on
Ctrl-C or SIGTERM. If any of them exits on its own, ``up`` stops the others and exits
non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from services.common.config import ENV_PREFIX, ConfigurationError, Settings
from services.common.errors import ServiceError

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


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "host": args.host,
        "http_port": args.http_port,
        "data_dir": args.data_dir,
        "queue_store": args.queue_store,
        "message_store": args.message_store,
        "notifier_store": args.notifier_store,
        "log_level": args.log_level,
    }
    if args.store:
        if args.store.startswith("sqlite:"):
            # One embedded database per service: the URI names the folder.
            overrides["data_dir"] = args.store.removeprefix("sqlite://").rstrip("/") or "."
        else:
            overrides["queue_store"] = overrides["queue_store"] or args.store
            overrides["message_store"] = overrides["message_store"] or args.store
            overrides["notifier_store"] = overrides["notifier_store"] or args.store
    return Settings.load(config_file=args.config, overrides=overrides)


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


# serve ---------------------------------------------------------------------------------------


def serve(service: str, settings: Settings) -> int:
    module = importlib.import_module(SERVICES[service][0])
    from services.common.grpc_server import install_event_loop_policy, setup_logging

    setup_logging(settings.log_level)
    install_event_loop_policy()
    os.makedirs(settings.data_dir, exist_ok=True)
    try:
        asyncio.run(module.run(settings))
    except ServiceError as exc:
        # A store that cannot be reached at start: one line, no traceback.
        print(f"zaqar-grpc: {service}: {exc.description}", file=sys.stderr, flush=True)
        return 3
    return 0


# up ------------------------------------------------------------------------------------------


class _Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.ready = asyncio.get_running_loop().create_future()
        self.pump = asyncio.ensure_future(self._pump())

    async def _pump(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line.startswith("READY ") and not self.ready.done():
                self.ready.set_result(line.split(" ", 2)[2] if line.count(" ") >= 2 else "")
            else:
                print(f"[{self.name}] {line}", flush=True)
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"{self.name} exited before it was ready"))


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
    for child in reversed(children):
        if child.proc.returncode is None:
            child.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.proc.wait(), grace + 5)
            except TimeoutError:
                child.proc.kill()
                await child.proc.wait()
        child.pump.cancel()


async def up(settings: Settings, services: Sequence[str] = UP_ORDER) -> int:
    """Run ``services`` as child processes until a signal or until one of them exits.

    Raises:
        ConfigurationError: bad TLS settings or files (checked before any child starts).
    """
    from services.common.tls import load_tls

    # Checked here once, so that bad TLS settings are one error rather than one per child;
    # the children read the same files themselves, and up's health checks use them too.
    tls = await asyncio.to_thread(load_tls, settings)
    os.makedirs(settings.data_dir, exist_ok=True)
    env = {**os.environ, **settings_environment(settings)}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    children: list[_Child] = []
    try:
        for name in services:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "serve", name,
                env=env, stdout=asyncio.subprocess.PIPE, start_new_session=True,
            )
            child = _Child(name, proc)
            children.append(child)
            deadline = time.monotonic() + READY_TIMEOUT
            await asyncio.wait_for(asyncio.shield(child.ready), READY_TIMEOUT)
            if SERVICES[name][2]:
                await _grpc_serving(settings.target(name), tls, deadline)
            where = child.ready.result()
            print(f"{name:>8}: {where}  (pid {proc.pid})", flush=True)
    except (RuntimeError, TimeoutError) as exc:
        print(f"zaqar-grpc up: {exc}", file=sys.stderr, flush=True)
        await _stop_all(children, settings.shutdown_grace)
        return 1
    data_dir = os.path.abspath(settings.data_dir)  # noqa: ASYNC240 - no I/O, string only
    print(
        f"zaqar-grpc is up: http://{settings.host}:{settings.http_port}/v2/  "
        f"(data in {data_dir}; Ctrl-C stops)",
        flush=True,
    )
    exits = [asyncio.ensure_future(c.proc.wait()) for c in children]
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({stopper, *exits}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if stopper not in done:
        dead = [c for c in children if c.proc.returncode is not None]
        for c in dead:
            print(f"zaqar-grpc up: {c.name} exited with {c.proc.returncode}", file=sys.stderr)
        code = 1
    stopper.cancel()
    await _stop_all(children, settings.shutdown_grace)
    print("zaqar-grpc stopped", flush=True)
    return code


# entry ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zaqar-grpc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="run every service, each as its own process")
    _add_settings_flags(p_up)
    p_serve = sub.add_parser("serve", help="run one service (what a container runs)")
    p_serve.add_argument("service", help="queue | message | notifier | gateway")
    _add_settings_flags(p_serve)
    p_serve.add_argument("--grpc-port", type=int, help="gRPC port of this service (0 = any)")
    sub.add_parser("settings", help="list every setting with its variable and default")
    args = parser.parse_args(argv)

    if args.command == "settings":
        for name, default, text in Settings.describe():
            print(f"{name:<28} {default:<22} {text}")
        return 0
    try:
        settings = _settings_from(args)
        if args.command == "up":
            from services.common.grpc_server import install_event_loop_policy

            install_event_loop_policy()
            return asyncio.run(up(settings))
        service = ALIASES.get(args.service, args.service)
        if service not in SERVICES:
            parser.error(f"unknown service {args.service!r}; choose from {', '.join(SERVICES)}")
        if args.grpc_port is not None and SERVICES[service][2]:
            settings = dataclasses.replace(settings, **{SERVICES[service][1]: args.grpc_port})
        return serve(service, settings)
    except ConfigurationError as exc:
        print(f"zaqar-grpc: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
