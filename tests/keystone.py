"""A real Keystone for the tests: PyPI ``keystone`` from ``.venv-keystone`` (its own venv, made by
``scripts/bootstrap.sh --test``), on SQLite with fernet tokens, served by gunicorn on a free
loopback port from a temporary folder.

The session fixture ``keystone`` bootstraps it (the fernet and credential key repositories as
``keystone-manage fernet_setup`` / ``credential_setup`` write them, then ``keystone-manage
db_sync`` and ``bootstrap``, then gunicorn), waits until ``/v3``
answers, then makes two projects (``a``, ``b``) with a ``member`` user on each, an admin user
(role ``admin`` on project ``a``) and a service user for the gateway (role ``service`` on a
``service`` project). Locally a missing ``.venv-keystone`` skips the tests that need it; in CI
(``CI=true``) it fails them.

Under pytest-xdist one Keystone serves the whole run: the first worker that needs it builds it
under a file lock in the run's temporary folder and records it there (:data:`SHARED`); the other
workers use that one. The controller stops it once every worker has ended
(:func:`stop_shared_keystone`, from ``tests/conftest.py``). The test that builds or waits for it
gets :data:`BUILD_SECONDS` more than the usual time limit (``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import fcntl
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
# The run's Keystone under pytest-xdist: its record (url, users, server pid) in the run's
# temporary folder, written by the worker that built it.
SHARED = "keystone.json"
# What building the Keystone may add to the time limit of the test that first needs it (it takes
# a minute or more on a loaded machine, and a second worker waits for the first one's build).
BUILD_SECONDS = 240

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
        # A writer (the worker; keystone-manage before it) waits up to 60 s for SQLite's
        # write lock rather than failing the request with "database is locked" (a 500) after
        # SQLite's default 5 s on a loaded machine (it mattered with two workers; kept as a
        # bound that costs nothing with one).
        connection = sqlite:///{workdir / "keystone.db"}?timeout=60

        [identity]
        # The fewest bcrypt rounds: every token issued checks a password, and the default
        # 12 rounds make each one cost a quarter of a second of CPU (seconds under load).
        password_hash_rounds = 4

        [token]
        provider = fernet
        expiration = {expiration}

        [fernet_tokens]
        key_repository = {workdir / "fernet-keys"}

        # (Receipts, of multi-factor auth, are Fernet-signed with the same keys; keystone-manage
        # bootstrap checks their repository too, and its default is under /etc/keystone.)
        [fernet_receipts]
        key_repository = {workdir / "fernet-keys"}

        [credential]
        key_repository = {workdir / "credential-keys"}

        [cache]
        # In the one worker's memory (see the gunicorn command): Keystone drops what a
        # revocation or a change makes stale in its own cache.
        enabled = true
        backend = dogpile.cache.memory
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
        return self.short_token_until(who, seconds)[0]

    def short_token_until(self, who: str, seconds: float) -> tuple[str, float]:
        """:meth:`short_token`, and the ``time.monotonic()`` at which it expires."""
        user = self.users[who]
        issued = self.token(who)
        until = time.monotonic() + seconds
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
        made = httpx.post(
            f"{self.url}/users/{user.id}/application_credentials",
            headers={"X-Auth-Token": issued}, timeout=30,
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
        return answer.headers["X-Subject-Token"], until

    def revoke(self, token: str) -> None:
        admin = self.token("admin")
        answer = httpx.delete(
            self.url + "/auth/tokens",
            headers={"X-Auth-Token": admin, "X-Subject-Token": token},
        )
        assert answer.status_code == 204, answer.text

    # The same from a coroutine: the request runs in a thread, so that the event loop goes on
    # serving what the test started on it (a service of the test that has connected to this
    # Keystone to check a token and not yet written its request, for one).

    async def atoken(self, who: str) -> str:
        return await asyncio.to_thread(self.token, who)

    async def ashort_token(self, who: str, seconds: float = SHORT_TOKEN_SECONDS) -> str:
        return await asyncio.to_thread(self.short_token, who, seconds)

    async def ashort_token_until(self, who: str, seconds: float) -> tuple[str, float]:
        return await asyncio.to_thread(self.short_token_until, who, seconds)

    async def arevoke(self, token: str) -> None:
        await asyncio.to_thread(self.revoke, token)


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


def _manage(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``keystone-manage args...`` started; :func:`_finish` waits for it."""
    manage = KEYSTONE_VENV / "bin" / "keystone-manage"
    conf = str(workdir / "keystone.conf")
    return subprocess.Popen(
        [str(manage), "--config-file", conf, *args], cwd=workdir, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _finish(command: subprocess.Popen[str]) -> None:
    try:
        _, stderr = command.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        command.kill()
        command.communicate()
        raise
    if command.returncode != 0:
        raise RuntimeError(f"keystone-manage {command.args[3]} failed: {stderr[-2000:]}")


def _key_repository(folder: Path) -> None:
    """What ``keystone-manage fernet_setup`` (and ``credential_setup``) write: a folder with a
    staged key ``0`` and a primary key ``1``, each a Fernet key (32 random bytes, URL-safe
    base64) only its owner may read."""
    folder.mkdir(mode=0o700, exist_ok=True)
    for name in ("0", "1"):
        key = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(key, "w") as out:
            out.write(base64.urlsafe_b64encode(os.urandom(32)).decode())


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
    _key_repository(workdir / "fernet-keys")
    _key_repository(workdir / "credential-keys")
    conf = workdir / "keystone.conf"
    conf.write_text(keystone_conf(workdir, expiration))
    (workdir / "keystone_wsgi.py").write_text(WSGI_WRAPPER)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
    _finish(_manage(workdir, env, "db_sync"))
    # Bootstrap ends before gunicorn loads Keystone, so no worker sees a half-filled database.
    _finish(_manage(
        workdir, env, "bootstrap",
        "--bootstrap-password", ADMIN_PASSWORD,
        "--bootstrap-admin-url", url,
        "--bootstrap-public-url", url,
        "--bootstrap-internal-url", url,
        "--bootstrap-region-id", "RegionOne",
    ))
    # Write-ahead logging: readers no longer block the writer, nor it them (the journal mode
    # stays with the file).
    with sqlite3.connect(workdir / "keystone.db") as db:
        db.execute("PRAGMA journal_mode=WAL")
    gunicorn = KEYSTONE_VENV / "bin" / "gunicorn"
    # One worker process, with one thread, and Keystone's cache in its memory: under
    # pytest-xdist every worker's tests call this one Keystone. Uncached, a token validation
    # cost Keystone 0.4-0.9 s of CPU (SQLAlchemy's project, role and user lookups): the
    # Keystone tests took 150 s alone, 48 s cached. A second process would keep its own cache,
    # stale after a revocation or a role change made through the other; a second thread
    # refused the admin its rights (403 on identity:create_user) for good when the first
    # requests came on several threads at once (its policy enforcer is set up lazily, and not
    # safely for threads).
    # The gthread worker, not the sync one. The sync worker reads each connection it accepts
    # until its request is whole, so a client that had connected but not yet written held
    # every other request: an in-process service on the event loop that a test's synchronous
    # token request was blocking, a deadlock that lasted until that request timed out (30 s).
    # The gthread worker (gunicorn 27) waits at most 5 s for a new connection's first bytes,
    # then leaves it to its selector and serves the next. (The suite's coroutines now ask
    # through a thread, Keystone.atoken and its siblings; this bounds any other such wait.)
    argv = [str(gunicorn), "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--worker-class", "gthread", "--threads", "1",
            "--chdir", str(workdir), "--error-logfile", "-", "keystone_wsgi:application"]
    process = ServerProcess(argv, port, workdir)
    try:
        try:
            os.environ["OS_KEYSTONE_CONFIG_FILES"] = str(conf)
            process.start()
        finally:
            del os.environ["OS_KEYSTONE_CONFIG_FILES"]
        _wait_ready(url, process)
        keystone = Keystone(url, process, time.monotonic() - started)
        _populate(keystone)
    except BaseException:
        process.stop()
        raise
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
    """Projects a and b, a member user on each, an admin and the gateway's service user (the
    requests that do not depend on each other made in parallel)."""
    http = httpx.Client(base_url=keystone.url, auth=_AdminAuth(keystone.url), timeout=30)
    with http, ThreadPoolExecutor(4) as pool:

        def create(path: str, kind: str, body: dict[str, object]) -> str:
            answer = http.post(path, json={kind: body})
            assert answer.status_code == 201, answer.text
            return str(answer.json()[kind]["id"])

        def grant(project_id: str, user_id: str, role_id: str) -> None:
            answer = http.put(f"/projects/{project_id}/users/{user_id}/roles/{role_id}")
            assert answer.status_code == 204, answer.text

        domain_id = http.get("/domains", params={"name": DOMAIN}).json()["domains"][0]["id"]
        # (bootstrap made admin, member and reader, and service too since Keystone 2025.1)
        roles = {r["name"]: str(r["id"]) for r in http.get("/roles").json()["roles"]}
        accounts = [("user-a", "a", "member"), ("user-b", "b", "member"),
                    ("admin-a", "a", "admin"), ("zaqar", "service", "service")]
        missing_roles = {"service"} - roles.keys()
        made_roles = {name: pool.submit(create, "/roles", "role", {"name": name})
                      for name in missing_roles}
        made_projects = {
            name: pool.submit(create, "/projects", "project",
                              {"name": name, "domain_id": domain_id})
            for name in ("a", "b", "service")
        }
        made_users = {
            name: pool.submit(create, "/users", "user",
                              {"name": name, "password": PASSWORD, "domain_id": domain_id})
            for name, _, _ in accounts
        }
        roles.update((name, made.result()) for name, made in made_roles.items())
        projects = {name: made.result() for name, made in made_projects.items()}
        grants = []
        for name, project, role in accounts:
            user_id = made_users[name].result()
            grants.append(pool.submit(grant, projects[project], user_id, roles[role]))
            keystone.users[name] = User(name, user_id, project, projects[project])
        for granted in grants:
            granted.result()
        admin_project = http.get("/projects", params={"name": "admin"}).json()["projects"][0]
        keystone.users["admin"] = User("admin", "", "admin", admin_project["id"], ADMIN_PASSWORD)


def _shared_keystone(root: Path) -> Keystone:
    """The run's Keystone, shared by the pytest-xdist workers: built in ``root`` by the first
    worker that asks (the others wait on the lock), then read from its record."""
    with open(root / "keystone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = root / SHARED
        if record.exists():
            shared = json.loads(record.read_text())
            if "error" in shared:
                raise RuntimeError(shared["error"])
            keystone = Keystone(
                shared["url"], ServerProcess([], shared["port"], root), shared["startup_seconds"],
                {name: User(**user) for name, user in shared["users"].items()},
            )
            if httpx.get(keystone.url, timeout=30).status_code != 200:
                raise RuntimeError(f"the run's keystone does not answer on {keystone.url}")
            return keystone
        try:
            # A folder of its own per build: a build cut short leaves no half-made database.
            keystone = start_keystone(Path(tempfile.mkdtemp(prefix="keystone-", dir=root)))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            record.write_text(json.dumps({"error": str(exc)}))
            raise
        assert keystone.process.proc is not None
        record.write_text(json.dumps({
            "url": keystone.url, "port": keystone.process.port,
            "pid": keystone.process.proc.pid, "startup_seconds": keystone.startup_seconds,
            "users": {name: asdict(user) for name, user in keystone.users.items()},
        }))
        return keystone


def stop_shared_keystone(root: Path) -> None:
    """Stop the Keystone the workers shared (:func:`_shared_keystone`), if they made one: its
    gunicorn runs in a session of its own, whose process group is signalled."""
    record = root / SHARED
    if not record.exists():
        return
    pid = json.loads(record.read_text()).get("pid")
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (neither gone nor a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# Whether this process has its Keystone (the time limit of the test that builds it is longer).
made: list[Keystone] = []


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keystone]:
    if not (KEYSTONE_VENV / "bin" / "keystone-manage").exists():
        missing("Keystone (.venv-keystone)")
    # Under pytest-xdist each worker's basetemp is a folder of the run's (the controller's).
    shared = os.environ.get("PYTEST_XDIST_WORKER") is not None
    try:
        if shared:
            server = _shared_keystone(tmp_path_factory.getbasetemp().parent)
        else:
            server = start_keystone(tmp_path_factory.mktemp("keystone"))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        missing(f"Keystone ({exc})")
    made.append(server)
    print(f"\nkeystone ready in {server.startup_seconds:.1f}s", file=sys.stderr)
    yield server
    if not shared:  # the controller stops the shared one once every worker has ended
        server.process.stop()


def keystone_overrides(keystone: Keystone) -> dict[str, Any]:
    """The settings of a keystone-mode deployment on the test Keystone: every process
    authenticates as the ``zaqar`` service user (role ``service`` on project ``service``)."""
    return {
        "auth_strategy": "keystone",
        "keystone_url": keystone.url,
        "keystone_username": "zaqar",
        "keystone_password": PASSWORD,
        "keystone_project": "service",
        "signed_url_secret": SIGNED_URL_SECRET,
        # A first call between services may wait for Keystone several times (each
        # process's own token, then each validation): slow on a busy test machine (a post
        # with a trust subscriber took over 15 s with both cores loaded).
        "rpc_timeout": 60.0,
        # The test Keystone answers in well under a second, but slower on a loaded machine
        "keystone_timeout": 30.0,
    }


@pytest.fixture
def keystone_settings(
    make_settings: Callable[..., Settings], keystone: Keystone
) -> Callable[..., Settings]:
    """Settings of a keystone-mode deployment on the test Keystone (:func:`keystone_overrides`)."""

    def make(**overrides: Any) -> Settings:
        return make_settings(**{**keystone_overrides(keystone), **overrides})

    return make


def admin_client(keystone: Keystone) -> httpx.Client:
    """A client of the test Keystone under an admin token (to inspect tokens and trusts)."""
    return httpx.Client(
        base_url=keystone.url, headers={"X-Auth-Token": keystone.token("admin")}, timeout=30
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
