"""A real Keystone for the tests: PyPI ``keystone`` from ``.venv-keystone`` (its own venv, made by
``scripts/bootstrap.sh --test``), on SQLite with fernet tokens, served by gunicorn on a free
loopback port from a temporary folder.

The session fixture ``keystone`` bootstraps it (``keystone-manage db_sync``, ``fernet_setup``,
``credential_setup``, ``bootstrap``), waits until ``/v3`` answers, then makes two projects
(``a``, ``b``) with a ``member`` user on each, an admin user (role ``admin`` on project ``a``)
and a service user for the gateway (role ``service`` on a ``service`` project). Locally a
missing ``.venv-keystone`` skips the tests that need it; in CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import datetime
import grp
import os
import pwd
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.config import Settings
from tests.servers import ServerProcess, free_port, missing

ROOT = Path(__file__).resolve().parent.parent
KEYSTONE_VENV = Path(os.environ.get("ZAQAR_KEYSTONE_VENV", ROOT / ".venv-keystone"))
ADMIN_PASSWORD = "admin-secret"
PASSWORD = "user-secret"
SIGNED_URL_SECRET = "share-secret"
DOMAIN = "Default"
# Seconds a token lives in the test Keystone: longer than any test, however loaded the
# machine. A test that waits for a token to expire takes one of SHORT_TOKEN_SECONDS instead
# (:meth:`Keystone.short_token`).
TOKEN_EXPIRATION = 3600
SHORT_TOKEN_SECONDS = 20

WSGI_WRAPPER = """\
import sys

# oslo.config parses sys.argv when Keystone loads: hide gunicorn's arguments from it.
sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402,F401
"""


def keystone_conf(workdir: Path, expiration: int) -> str:
    return textwrap.dedent(
        f"""\
        [DEFAULT]
        log_file = {workdir / "keystone.log"}
        use_stderr = false

        [database]
        connection = sqlite:///{workdir / "keystone.db"}

        [identity]
        # The fewest bcrypt rounds: every token issued checks a password, and the default
        # 12 rounds make each one cost a quarter of a second of CPU (seconds under load).
        password_hash_rounds = 4

        [token]
        provider = fernet
        expiration = {expiration}

        [fernet_tokens]
        key_repository = {workdir / "fernet-keys"}

        [credential]
        key_repository = {workdir / "credential-keys"}

        [cache]
        enabled = false
        """
    )


@dataclass
class User:
    name: str
    id: str
    project: str
    project_id: str
    password: str = PASSWORD


@dataclass
class Keystone:
    """A running Keystone and the identities the tests use."""

    url: str  # http://127.0.0.1:PORT/v3
    process: ServerProcess
    startup_seconds: float
    users: dict[str, User] = field(default_factory=dict)

    def token(self, who: str) -> str:
        """A fresh project-scoped token of one of ``users``."""
        user = self.users[who]
        return issue_token(self.url, user.name, user.password, user.project)

    def short_token(self, who: str, seconds: float = SHORT_TOKEN_SECONDS) -> str:
        """A project-scoped token of one of ``users`` that expires in ``seconds``: Keystone
        ends a token no later than the application credential it was issued from."""
        user = self.users[who]
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        made = httpx.post(
            f"{self.url}/users/{user.id}/application_credentials",
            headers={"X-Auth-Token": self.token(who)}, timeout=30,
            json={"application_credential": {
                "name": unique("short"), "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%S.%f"),
            }},
        )
        assert made.status_code == 201, made.text
        credential = made.json()["application_credential"]
        body = {"auth": {"identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": credential["id"], "secret": credential["secret"]},
        }}}
        answer = httpx.post(self.url + "/auth/tokens", json=body, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.headers["X-Subject-Token"]

    def revoke(self, token: str) -> None:
        admin = self.token("admin")
        answer = httpx.delete(
            self.url + "/auth/tokens",
            headers={"X-Auth-Token": admin, "X-Subject-Token": token},
        )
        assert answer.status_code == 204, answer.text


def issue_token(url: str, user: str, password: str, project: str) -> str:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "domain": {"name": DOMAIN}, "password": password}
                },
            },
            "scope": {"project": {"name": project, "domain": {"name": DOMAIN}}},
        }
    }
    answer = httpx.post(url + "/auth/tokens", json=body, timeout=30)
    assert answer.status_code == 201, answer.text
    return answer.headers["X-Subject-Token"]


def _manage(workdir: Path, env: dict[str, str], *args: str) -> None:
    manage = KEYSTONE_VENV / "bin" / "keystone-manage"
    conf = str(workdir / "keystone.conf")
    done = subprocess.run(
        [str(manage), "--config-file", conf, *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"keystone-manage {args[0]} failed: {done.stderr[-2000:]}")


def _wait_ready(url: str, process: ServerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc is not None and process.proc.poll() is not None:
            raise RuntimeError(f"keystone exited with {process.proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"keystone did not answer on {url} within {timeout}s")


def start_keystone(workdir: Path, expiration: int = TOKEN_EXPIRATION) -> Keystone:
    """Bootstrap and start a Keystone in ``workdir``; raises RuntimeError when it cannot."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "fernet-keys").mkdir(exist_ok=True)
    (workdir / "credential-keys").mkdir(exist_ok=True)
    conf = workdir / "keystone.conf"
    conf.write_text(keystone_conf(workdir, expiration))
    (workdir / "keystone_wsgi.py").write_text(WSGI_WRAPPER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
    owner = ["--keystone-user", pwd.getpwuid(os.getuid()).pw_name,
             "--keystone-group", grp.getgrgid(os.getgid()).gr_name]
    _manage(workdir, env, "db_sync")
    _manage(workdir, env, "fernet_setup", *owner)
    _manage(workdir, env, "credential_setup", *owner)
    _manage(
        workdir, env, "bootstrap",
        "--bootstrap-password", ADMIN_PASSWORD,
        "--bootstrap-admin-url", url,
        "--bootstrap-public-url", url,
        "--bootstrap-internal-url", url,
        "--bootstrap-region-id", "RegionOne",
    )
    gunicorn = KEYSTONE_VENV / "bin" / "gunicorn"
    argv = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
            "--chdir", str(workdir), "--error-logfile", "-", "keystone_wsgi:application"]
    process = ServerProcess(argv, port, workdir)
    os.environ["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
    try:
        process.start()
    finally:
        del os.environ["OS_KEYSTONE_CONFIG_FILES"]
    try:
        _wait_ready(url, process)
    except RuntimeError:
        process.stop()
        raise
    keystone = Keystone(url, process, time.monotonic() - started)
    _populate(keystone)
    return keystone


class _AdminAuth(httpx.Auth):
    """An admin token on every request, issued again when Keystone refuses it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = issue_token(url, "admin", ADMIN_PASSWORD, "admin")

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["X-Auth-Token"] = self.token
        response = yield request
        if response.status_code == 401:
            self.token = issue_token(self.url, "admin", ADMIN_PASSWORD, "admin")
            request.headers["X-Auth-Token"] = self.token
            yield request


def _populate(keystone: Keystone) -> None:
    """Projects a and b, a member user on each, an admin and the gateway's service user."""
    http = httpx.Client(base_url=keystone.url, auth=_AdminAuth(keystone.url), timeout=30)
    with http:

        def create(path: str, kind: str, body: dict[str, object]) -> str:
            answer = http.post(path, json={kind: body})
            assert answer.status_code == 201, answer.text
            return str(answer.json()[kind]["id"])

        def role_id(name: str) -> str:
            found = http.get("/roles", params={"name": name}).json()["roles"]
            return str(found[0]["id"]) if found else create("/roles", "role", {"name": name})

        def grant(project_id: str, user_id: str, role: str) -> None:
            answer = http.put(f"/projects/{project_id}/users/{user_id}/roles/{role_id(role)}")
            assert answer.status_code == 204, answer.text

        domain_id = http.get("/domains", params={"name": DOMAIN}).json()["domains"][0]["id"]
        projects = {}
        for name in ("a", "b", "service"):
            projects[name] = create("/projects", "project", {"name": name, "domain_id": domain_id})
        accounts = [("user-a", "a", "member"), ("user-b", "b", "member"),
                    ("admin-a", "a", "admin"), ("zaqar", "service", "service")]
        for name, project, role in accounts:
            user_id = create(
                "/users", "user", {"name": name, "password": PASSWORD, "domain_id": domain_id}
            )
            grant(projects[project], user_id, role)
            keystone.users[name] = User(name, user_id, project, projects[project])
        admin_project = http.get("/projects", params={"name": "admin"}).json()["projects"][0]
        keystone.users["admin"] = User("admin", "", "admin", admin_project["id"], ADMIN_PASSWORD)


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    if not (KEYSTONE_VENV / "bin" / "keystone-manage").exists():
        missing("Keystone (.venv-keystone)")
    try:
        server = start_keystone(tmp_path_factory.mktemp("keystone"))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        missing(f"Keystone ({exc})")
    print(f"\nkeystone ready in {server.startup_seconds:.1f}s", file=sys.stderr)
    yield server
    server.process.stop()


@pytest.fixture
def keystone_settings(
    make_settings: Callable[..., Settings], keystone: Keystone
) -> Callable[..., Settings]:
    """Settings of a keystone-mode deployment on the test Keystone: every process
    authenticates as the ``zaqar`` service user (role ``service`` on project ``service``)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "auth_strategy": "keystone",
            "keystone_url": keystone.url,
            "keystone_username": "zaqar",
            "keystone_password": PASSWORD,
            "keystone_project": "service",
            "signed_url_secret": SIGNED_URL_SECRET,
            # A first call between services may wait for Keystone several times (each
            # process's own token, then each validation): slow on a busy test machine.
            "rpc_timeout": 15.0,
            # The test Keystone answers in well under a second, but slower on a loaded machine
            "keystone_timeout": 30.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return make


def admin_client(keystone: Keystone) -> httpx.Client:
    """A client of the test Keystone under an admin token (to inspect tokens and trusts)."""
    return httpx.Client(
        base_url=keystone.url, headers={"X-Auth-Token": keystone.token("admin")}, timeout=30
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
