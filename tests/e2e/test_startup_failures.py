"""A start that cannot succeed, as an operator sees it: ``zaqar-grpc up`` and ``zaqar-grpc serve``
run as real processes and fail with one ``zaqar-grpc: ...`` line on stderr naming what to
change, a non-zero status, and no traceback.

``up`` finds these before it starts anything (its stdout stays empty); a child that fails
anyway (its port taken after the check) has its line repeated by ``up``, which stops the
others.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from services.cli import settings_environment
from services.common.config import LIMITS, Settings
from tests.certs import Pki
from tests.e2e.harness import running
from tests.servers import RedisSentinelProcesses, ServerProcess, free_port

pytestmark = pytest.mark.e2e

PORTS = {
    "http_port": ("HTTP port of api_gateway", "ZAQAR_HTTP_PORT"),
    "ws_port": ("WebSocket port of api_gateway", "ZAQAR_WS_PORT"),
    "queue_port": ("gRPC port of queue_svc", "ZAQAR_QUEUE_PORT"),
    "message_port": ("gRPC port of message_svc", "ZAQAR_MESSAGE_PORT"),
    "notifier_port": ("gRPC port of notifier_svc", "ZAQAR_NOTIFIER_PORT"),
}
# serve <service> for the process that listens on each port
SERVE = {"http_port": "gateway", "ws_port": "gateway", "queue_port": "queue",
         "message_port": "message", "notifier_port": "notifier"}


def environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment of ``settings``, nothing inherited from ours but the rest."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("ZAQAR_")}
    return {**inherited, **settings_environment(settings), "ZAQAR_RPC_TIMEOUT": "2", **extra}


def zaqar_grpc(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def the_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line of a failed start, checked to be the only ``zaqar-grpc:`` line on stderr
    of a process that exited non-zero without a traceback."""
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.startswith("zaqar-grpc:")]
    assert len(lines) == 1, output
    return lines[0]


def nothing_started(result: subprocess.CompletedProcess[str]) -> str:
    """The line of an ``up`` that stopped before starting any process: the whole output."""
    line = the_line(result)
    assert result.stdout == ""
    assert result.stderr == line + "\n"
    return line


@contextmanager
def listening(port: int) -> Iterator[socket.socket]:
    """Another program listening on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
        yield sock


# ports ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", list(PORTS))
def test_up_with_a_port_in_use_starts_nothing(
    make_settings: Callable[..., Settings], setting: str
) -> None:
    settings = make_settings()
    port = getattr(settings, setting)
    what, variable = PORTS[setting]
    # Given another program listening on one of the ports
    with listening(port):
        # When zaqar-grpc up starts
        result = zaqar_grpc(environment(settings), "up")
    # Then it says which port of which service, and the setting to change, before starting any
    assert nothing_started(result) == (
        f"zaqar-grpc: cannot listen on 127.0.0.1:{port} ({what}; change it with {variable}"
        + (" or --port" if setting == "http_port" else "")
        + (f" or serve {SERVE[setting]} --grpc-port" if "gRPC" in what else "")
        + "): address already in use"
    )
    assert result.returncode == 1


def test_up_with_two_services_on_one_port_starts_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    # When the WebSocket port is set to the HTTP port
    env = environment(settings, ZAQAR_WS_PORT=str(settings.http_port))
    line = nothing_started(zaqar_grpc(env, "up"))
    # Then up says so before either fails to bind
    assert line.startswith(f"zaqar-grpc: cannot listen on 127.0.0.1:{settings.http_port} "
                           "(WebSocket port of api_gateway; change it with ZAQAR_WS_PORT)")
    assert line.endswith("it is also the HTTP port of api_gateway (ZAQAR_HTTP_PORT)")


@pytest.mark.parametrize("setting", list(PORTS))
def test_serve_with_its_port_in_use_fails_in_one_line(
    make_settings: Callable[..., Settings], setting: str
) -> None:
    settings = make_settings()
    port = getattr(settings, setting)
    what, variable = PORTS[setting]
    # Given another program listening on a port of the service
    with listening(port):
        # When the service is started on its own (what a container runs)
        result = zaqar_grpc(environment(settings), "serve", SERVE[setting])
    # Then it exits with one line naming the port and its setting
    line = the_line(result)
    assert line.startswith(f"zaqar-grpc: cannot listen on 127.0.0.1:{port} ({what}; "
                           f"change it with {variable}")
    assert line.endswith("): address already in use")
    assert "READY" not in result.stdout


def test_a_service_that_fails_after_the_checks_stops_up(
    make_settings: Callable[..., Settings],
) -> None:
    for _ in range(3):
        settings = make_settings()
        result = _up_losing_the_http_port(settings)
        if result is not None:
            break
    else:
        pytest.fail("the gateway took its port each time before the test could")
    stdout, stderr, status, children = result
    output = stdout + stderr
    # Then up repeats the gateway's own line once, stops the services it started, and exits
    # non-zero
    lines = [line for line in stderr.splitlines() if line.startswith("zaqar-grpc:")]
    assert lines == [
        f"zaqar-grpc: cannot listen on 127.0.0.1:{settings.http_port} (HTTP port of "
        "api_gateway; change it with ZAQAR_HTTP_PORT or --port): address already in use"
    ], output
    assert status == 1
    assert "Traceback" not in output
    assert sorted(children) == ["gateway", "message", "notifier", "queue"]
    assert _wait_gone(list(children.values())) == []
    assert "zaqar-grpc is up" not in stdout


def _up_losing_the_http_port(
    settings: Settings,
) -> tuple[str, str, int, dict[str, int]] | None:
    """Run up, and take the gateway's HTTP port once up started the gateway's process: after
    up checked it, before the gateway (which imports its modules first) binds it. None when
    the gateway was first after all. Also returns up's children, service -> pid."""
    taken: socket.socket | None = None
    children: dict[str, int] = {}
    with subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up"], env=environment(settings),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    ) as proc:
        try:
            deadline = time.monotonic() + 60
            while "gateway" not in children and proc.poll() is None:
                assert time.monotonic() < deadline, "up never started the gateway"
                children = _services_started_by(proc.pid)
                time.sleep(0.005)
            taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                taken.bind(("127.0.0.1", settings.http_port))
                taken.listen()
            except OSError:
                proc.terminate()
                proc.communicate(timeout=60)
                return None
            children = _services_started_by(proc.pid) | children
            stdout, stderr = proc.communicate(timeout=60)
            return stdout, stderr, proc.returncode, children
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if taken is not None:
                taken.close()


def _services_started_by(parent: int) -> dict[str, int]:
    """The ``serve <service>`` processes whose parent is ``parent``: service -> pid."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            if ppid != parent:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if "serve" in argv[:-1]:
            found[argv[argv.index("serve") + 1]] = int(entry)
    return found


def _wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while [p for p in pids if running(p)] and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in pids if running(p)]


# the data folder -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["up"], ["serve", "queue"]])
@pytest.mark.parametrize(
    ("below", "problem"),
    [("", "it is a file, not a folder"), ("sub", "a part of its path is a file, not a folder")],
)
def test_a_data_folder_that_cannot_be_made_fails_in_one_line(
    make_settings: Callable[..., Settings], tmp_path: Path, command: list[str], below: str,
    problem: str,
) -> None:
    # Given a file where the data folder (or a folder above it) would be
    (tmp_path / "file").write_text("not a folder")
    settings = make_settings(data_dir=os.path.join(tmp_path / "file", below).rstrip("/"))
    # When zaqar-grpc starts
    line = the_line(zaqar_grpc(environment(settings), *command))
    # Then it names the folder, the setting to change and what is wrong
    assert line == (
        f"zaqar-grpc: cannot use the data folder {settings.data_dir} (change it with "
        f"ZAQAR_DATA_DIR or --data-dir): {problem}"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder")
def test_a_data_folder_without_write_permission_fails_in_one_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    settings = make_settings(data_dir=str(folder))
    line = nothing_started(zaqar_grpc(environment(settings), "up"))
    assert line.endswith("permission denied (files cannot be made in it)")


# stores --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "uri", "expected"),
    [
        ("--message-store", "nosuch://x", "'nosuch'"),
        ("--queue-store", "sqlite://nowhere", "invalid SQLite queue store URI 'sqlite://nowhere'"),
        ("--notifier-store", "redis://127.0.0.1:99999/0", "bad port"),
        ("--store", "mongodb://127.0.0.1:27017/db?nosuchoption=1", "Unknown option"),
        ("--queue-store", "redis://127.0.0.1:6379/0?ssl_ca_certs=/ca.pem",
         "option 'ssl_ca_certs' is for TLS connections: use rediss://"),
        # A TLS file is checked before any connection is tried (no server listens here)
        ("--message-store", "rediss://127.0.0.1:1/0?ssl_ca_certs=/no/such/ca.pem",
         "cannot use the TLS files of the message store at rediss://127.0.0.1:1/0: "
         "ssl_ca_certs='/no/such/ca.pem': No such file or directory"),
    ],
)
def test_up_with_a_bad_store_uri_starts_nothing(
    make_settings: Callable[..., Settings], flag: str, uri: str, expected: str
) -> None:
    result = zaqar_grpc(environment(make_settings()), "up", flag, uri)
    line = nothing_started(result)
    assert line.startswith("zaqar-grpc: configuration error: ")
    assert expected in line
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("flag", "uri", "expected"),
    [
        ("--message-store", "redis://127.0.0.1:{port}/0",
         "zaqar-grpc: message_svc: cannot use the message store redis://127.0.0.1:{port}/0 "
         "(ZAQAR_MESSAGE_STORE): Redis cannot be reached"),
        ("--store", "mongodb://127.0.0.1:{port}/z",
         "zaqar-grpc: queue_svc: cannot use the queue store mongodb://127.0.0.1:{port}/z "
         "(ZAQAR_QUEUE_STORE): "),
    ],
)
def test_up_with_an_unreachable_store_starts_nothing(
    make_settings: Callable[..., Settings], flag: str, uri: str, expected: str
) -> None:
    port = free_port()  # nothing listens there
    result = zaqar_grpc(environment(make_settings()), "up", flag, uri.format(port=port))
    assert nothing_started(result).startswith(expected.format(port=port))
    assert result.returncode == 3


def test_up_with_a_tls_store_it_does_not_trust_starts_nothing(
    make_settings: Callable[..., Settings], pki: Pki, redis_tls_server: ServerProcess
) -> None:
    uri = f"rediss://127.0.0.1:{redis_tls_server.port}/0?ssl_ca_certs={pki.other_ca}"
    result = zaqar_grpc(environment(make_settings()), "up", "--message-store", uri)
    line = nothing_started(result)
    # The operator reads what the certificate check found
    assert line.startswith(f"zaqar-grpc: message_svc: cannot use the message store {uri}")
    said = line.partition("(ZAQAR_MESSAGE_STORE): ")[2]
    assert said.startswith("Redis's certificate is not trusted, or does not name the host: ")
    assert "certificate" in said.partition(": ")[2]  # OpenSSL's words, after ours
    assert result.returncode == 3


def test_up_with_a_sentinel_group_that_has_no_master_starts_nothing(
    make_settings: Callable[..., Settings], redis_sentinel: RedisSentinelProcesses
) -> None:
    uri = redis_sentinel.uri().replace(redis_sentinel.name, "no-such-group")
    result = zaqar_grpc(environment(make_settings()), "up", "--queue-store", uri)
    assert nothing_started(result) == (
        f"zaqar-grpc: queue_svc: cannot use the queue store {uri} (ZAQAR_QUEUE_STORE): "
        "the Redis Sentinels name no master that is up"
    )
    assert result.returncode == 3


def test_up_with_a_store_file_that_is_not_a_database_starts_nothing(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    (Path(settings.data_dir) / "messages.db").write_text("not a database")
    line = nothing_started(zaqar_grpc(environment(settings), "up"))
    assert line.startswith("zaqar-grpc: message_svc: cannot use the message store sqlite:///")
    assert line.endswith("cannot be opened as a SQLite database: file is not a database")


@pytest.mark.parametrize(("service", "uri"), [
    ("message", "redis://127.0.0.1:{port}/0"), ("notifier", "mongodb://127.0.0.1:{port}/z"),
])
def test_serve_with_an_unreachable_store_fails_in_one_line(
    make_settings: Callable[..., Settings], service: str, uri: str
) -> None:
    store = uri.format(port=free_port())
    settings = make_settings(**{f"{service}_store": store})
    result = zaqar_grpc(environment(settings), "serve", service)
    line = the_line(result)
    assert line.startswith(f"zaqar-grpc: {service}_svc: ")
    assert "cannot be reached" in line
    assert result.returncode == 3


def test_serve_with_a_bad_store_uri_fails_in_one_line(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(queue_store="redis://127.0.0.1:0/0")
    result = zaqar_grpc(environment(settings), "serve", "queue")
    assert the_line(result).startswith("zaqar-grpc: configuration error: invalid queue store URI")
    assert result.returncode == 2


@pytest.mark.parametrize("command", [["up"], ["serve", "gateway"]])
@pytest.mark.parametrize(("extra", "says"), [
    ({"ZAQAR_SIGNED_URL_PREVIOUS_SECRET": "old"},
     "signed_url_previous_secret (ZAQAR_SIGNED_URL_PREVIOUS_SECRET) is set without "
     "signed_url_secret"),
    ({"ZAQAR_PROJECT_RATE_LIMIT": "-5"},
     "project_rate_limit (ZAQAR_PROJECT_RATE_LIMIT) must be 0 (no limit) or a number"),
    ({"ZAQAR_PROJECT_RATE_BURST": "10"},
     "project_rate_burst (ZAQAR_PROJECT_RATE_BURST) is set without project_rate_limit"),
    ({"ZAQAR_PROJECT_RATE_STORE": "redis://127.0.0.1:6379/0"},
     "project_rate_store (ZAQAR_PROJECT_RATE_STORE) is set without project_rate_limit"),
    ({"ZAQAR_PROJECT_RATE_LIMIT": "5", "ZAQAR_PROJECT_RATE_STORE": "redis://127.0.0.1:0/0"},
     "invalid rate limit store URI"),
])
def test_the_gateway_refuses_bad_signing_or_rate_settings_in_one_line(
    make_settings: Callable[..., Settings], command: list[str], extra: dict[str, str],
    says: str,
) -> None:
    result = zaqar_grpc(environment(make_settings(), **extra), *command)
    line = nothing_started(result) if command == ["up"] else the_line(result)
    assert line.startswith(f"zaqar-grpc: configuration error: {says}"), line
    assert result.returncode == 2


@pytest.mark.parametrize(("setting", "command"), [
    (setting, command)
    for service, settings in LIMITS.items() for setting in settings
    for command in (["up"], ["serve", service])
])
def test_a_negative_limit_is_refused_in_one_line(
    make_settings: Callable[..., Settings], command: list[str], setting: str,
) -> None:
    variable = f"ZAQAR_{setting.upper()}"
    result = zaqar_grpc(environment(make_settings(), **{variable: "-1"}), *command)
    line = nothing_started(result) if command == ["up"] else the_line(result)
    assert line == (f"zaqar-grpc: configuration error: {setting} ({variable}) must be 0 "
                    "(no limit) or a positive number, not -1"), line
    assert result.returncode == 2


@pytest.mark.parametrize("command", [
    ["up"], ["serve", "gateway"], ["serve", "queue"], ["serve", "message"], ["serve", "notifier"],
])
def test_a_negative_secret_reload_interval_is_refused_in_one_line(
    make_settings: Callable[..., Settings], command: list[str],
) -> None:
    result = zaqar_grpc(environment(make_settings(), ZAQAR_SECRET_RELOAD_INTERVAL="-1"), *command)
    line = nothing_started(result) if command == ["up"] else the_line(result)
    assert line == ("zaqar-grpc: configuration error: secret_reload_interval "
                    "(ZAQAR_SECRET_RELOAD_INTERVAL=-1.0): seconds between looks at the secret "
                    "files, 0 or more"), line
    assert result.returncode == 2


@pytest.mark.parametrize("command", [["up"], ["serve", "gateway"]])
def test_a_request_timeout_that_is_not_a_number_is_refused_in_one_line(
    make_settings: Callable[..., Settings], command: list[str],
) -> None:
    result = zaqar_grpc(environment(make_settings(), ZAQAR_HTTP_REQUEST_TIMEOUT="nan"), *command)
    line = nothing_started(result) if command == ["up"] else the_line(result)
    assert line == ("zaqar-grpc: configuration error: http_request_timeout "
                    "(ZAQAR_HTTP_REQUEST_TIMEOUT) must be 0 (no limit) or a positive number, "
                    "not nan"), line
    assert result.returncode == 2
