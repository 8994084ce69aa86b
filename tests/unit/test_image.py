"""The container image (deploy/docker/Dockerfile), without a Docker daemon.

hadolint lints the Dockerfile. Then the image's build is replayed on this machine: the build
context is what ``.dockerignore`` lets in, the build stage's ``COPY . .`` and
``deploy/docker/install.sh`` make a virtual environment from it, and the runtime stage's ``ENV``,
``ENTRYPOINT`` and ``CMD`` start the four services from that environment, each as its own
process (as four containers would), on SQLite in a data folder standing for the volume. When the
tests run as root the services run as an unprivileged user in a tree they cannot write, as in the
image (non-root user, read-only root filesystem), and a smoke test goes through real HTTP.

The process helpers here (:class:`Service`, :func:`smoke`) are shared with test_k8s.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CLIENT_ID = "3381af92-2b9e-11e3-b191-71861300734c"
HEADERS = {"Client-ID": CLIENT_ID, "X-Project-ID": "smoke", "Content-Type": "application/json"}
# Seconds a service may take to start on a busy machine; polled, never slept.
READY_DEADLINE = 90.0
# The image's user is not root; as root these tests run the services as "nobody".
NOBODY = 65534


def tool(name: str) -> str:
    """A tool the tests need, from the venv of the tests or the PATH; missing is a failure."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}"
                                        f"{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: run scripts/bootstrap.sh --test")
    return found


# processes -----------------------------------------------------------------------------------


class Service:
    """One service process, its output in a log file; ``ready`` waits for its READY line."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], cwd: Path,
                 log: Path, user: int | None = None) -> None:
        self.name = name
        self.log = log
        if user is not None:
            argv = [tool("setpriv"), f"--reuid={user}", f"--regid={user}", "--clear-groups",
                    "--", *argv]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv), env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, deadline: float) -> None:
        """Waits for ``READY`` in its output (what ``zaqar-grpc serve`` prints once serving)."""
        while "READY" not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n"
                                     + self.output())
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not start in time:\n" + self.output())
            time.sleep(0.1)

    def stop(self) -> int:
        """SIGTERM, as Kubernetes sends; its exit status (killed after a generous wait)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def stop_all(services: Sequence[Service]) -> dict[str, int]:
    """Stops the gateway first, as ``up`` does; exit status of each."""
    return {s.name: s.stop() for s in reversed(services)}


def smoke(base_url: str, deadline: float, auth: httpx.Auth | None = None) -> None:
    """Ping, create a queue, post, read the message back, claim it, delete it; ``auth`` adds
    credentials to each request (a Keystone token)."""
    queue = "smoke-" + uuid.uuid4().hex[:8]
    with httpx.Client(base_url=base_url, headers=HEADERS, auth=auth, timeout=30) as http:
        while True:  # the gateway answers 503 until every service behind it serves
            try:
                status = http.get("/v2/ping").status_code
            except httpx.TransportError:
                status = 0
            if status == 204:
                break
            assert time.monotonic() < deadline, f"GET /v2/ping answered {status}"
            time.sleep(0.2)
        # Warm-up on a queue of its own, retried while 503: the first calls of a process may
        # wait on cold caches (Keystone tokens: several round trips) beyond the RPC deadline
        # on a busy machine. The checks below then allow no retry.
        warm = f"/v2/queues/{queue}-warm-up"
        steps = [("PUT", warm, {}), ("POST", warm + "/messages", {"messages": [{"body": 0}]}),
                 ("POST", warm + "/claims", {"ttl": 60, "grace": 60}), ("DELETE", warm, None)]
        for method, path, body in steps:
            while (answer := http.request(method, path, json=body)).status_code == 503:
                assert time.monotonic() < deadline, f"{method} {path}: {answer.text}"
                time.sleep(0.2)
            assert answer.status_code < 300, f"{method} {path}: {answer.text}"
        assert http.put(f"/v2/queues/{queue}", json={"description": "smoke"}).status_code == 201
        posted = http.post(f"/v2/queues/{queue}/messages",
                           json={"messages": [{"body": {"n": 1}, "ttl": 300}]})
        assert posted.status_code == 201, posted.text
        listed = http.get(f"/v2/queues/{queue}/messages", params={"echo": "true"})
        assert listed.status_code == 200, listed.text
        assert [m["body"] for m in listed.json()["messages"]] == [{"n": 1}]
        claim = http.post(f"/v2/queues/{queue}/claims", json={"ttl": 60, "grace": 60})
        assert claim.status_code == 201, claim.text
        (message,) = claim.json()["messages"]
        assert message["body"] == {"n": 1}
        assert http.delete(message["href"]).status_code == 204
        assert http.delete(f"/v2/queues/{queue}").status_code == 204


# the Dockerfile ------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each instruction, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def runtime_stage(dockerfile: Path) -> dict[str, object]:
    """The last stage's ENV (in order), WORKDIR, ENTRYPOINT and CMD (exec form)."""
    steps = instructions(dockerfile)
    last = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    env: dict[str, str] = {}
    stage: dict[str, object] = {"env": env}
    for word, rest in steps[last:]:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
        elif word in ("ENTRYPOINT", "CMD"):
            stage[word] = json.loads(rest)
        elif word == "WORKDIR":
            stage[word] = rest
    return stage


Rules = list[tuple[bool, str, re.Pattern[str]]]


def ignored(path: str, rules: Rules) -> bool:
    """Whether Docker leaves ``path`` (relative, ``/``-separated) out of the build context:
    the last rule that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    verdict = False
    for include, _, pattern in rules:
        if any(pattern.fullmatch(c) for c in candidates):
            verdict = not include
    return verdict


def _glob(pattern: str) -> re.Pattern[str]:
    """Docker's patterns: ``*`` and ``?`` within a name, ``[...]``, ``**`` across folders."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            regex, i = regex + pattern[i:end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def ignore_rules(text: str) -> Rules:
    """``.dockerignore`` lines as (re-included?, pattern, its regex)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = os.path.normpath(line.removeprefix("!").lstrip("/"))
        rules.append((include, pattern, _glob(pattern)))
    return rules


def build_context(source: Path, dest: Path) -> list[str]:
    """Copies into ``dest`` what ``docker build`` would send from ``source``; the paths."""
    rules = ignore_rules((source / ".dockerignore").read_text())
    exceptions = [pattern for include, pattern, _ in rules if include]

    def walked(folder: str) -> bool:
        # A left-out folder is walked only when an exception may reach inside it.
        return not ignored(folder, rules) or any(
            p.startswith((folder + "/", "*")) for p in exceptions)

    copied = []
    for folder, dirs, files in os.walk(source):
        rel = os.path.relpath(folder, source)
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if walked(rel + d)]
        for name in files:
            if not ignored(rel + name, rules):
                target = dest / (rel + name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / (rel + name), target)
                copied.append(rel + name)
    return sorted(copied)


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerignore_follows_dockers_rules() -> None:
    rules = ignore_rules("*\n!services/\n**/__pycache__\n!keep/**/*.txt\n")
    assert ignored(".venv/bin/python", rules)
    assert ignored("README.md", rules)
    assert not ignored("services/cli.py", rules)
    assert ignored("services/common/__pycache__/x.pyc", rules)
    assert not ignored("keep/a/b/c.txt", rules)
    assert ignored("keep/a/b/c.py", rules)


def test_the_image_runs_as_a_non_root_user_from_its_own_volume() -> None:
    stage = runtime_stage(DOCKERFILE)
    steps = instructions(DOCKERFILE)
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    env = stage["env"]
    assert isinstance(env, dict)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["ZAQAR_HOST"] == "0.0.0.0"
    volumes = [rest for word, rest in steps if word == "VOLUME"]
    assert volumes and env["ZAQAR_DATA_DIR"] in volumes[-1]
    assert stage["ENTRYPOINT"] == ["zaqar-grpc"]
    cmd = stage["CMD"]
    assert isinstance(cmd, list) and cmd[0] == "serve"


@pytest.fixture(scope="module")
def image_tree() -> Iterator[Path]:
    """A folder that everyone may read (the services may run as "nobody"), removed after."""
    tree = Path(tempfile.mkdtemp(prefix="zaqar-image-"))
    tree.chmod(0o755)
    yield tree
    shutil.rmtree(tree, ignore_errors=True)


@pytest.mark.timeout(600)
def test_the_installed_image_serves(image_tree: Path) -> None:
    # Given the build context .dockerignore lets through
    context = image_tree / "src"
    files = build_context(ROOT, context)
    assert "pyproject.toml" in files and "services/cli.py" in files
    assert not [f for f in files if f.startswith((".venv", ".git/", "tests/", "bench/"))]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".db")]
    # When the build stage's script installs it into a fresh venv (pip's cache kept)
    venv = image_tree / "opt-zaqar"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZAQAR_", "PYTHON"))}
    env.pop("PIP_NO_CACHE_DIR", None)
    built = subprocess.run(
        ["sh", str(context / "deploy/docker/install.sh"), str(context), str(venv)],
        env={**env, "PYTHON": sys.executable, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True, text=True, timeout=540,
    )
    assert built.returncode == 0, built.stdout[-4000:] + built.stderr[-4000:]
    # Then the venv holds the command, and only the wheel's packages (not the source tree)
    assert (venv / "bin/zaqar-grpc").exists()
    probe = subprocess.run([str(venv / "bin/python"), "-c",
                            "import services, zaqar_grpc.v2; print(services.__file__)"],
                           env=env, capture_output=True, text=True, cwd=image_tree, timeout=60)
    assert probe.returncode == 0 and str(venv) in probe.stdout, probe.stdout + probe.stderr

    # When the four services start from it as the runtime stage says: its ENV (the venv in
    # place of /opt/zaqar, a data folder in place of the volume), ENTRYPOINT and CMD
    stage = runtime_stage(DOCKERFILE)
    image_env = dict(stage["env"])  # type: ignore[call-overload]
    data = image_tree / "var-lib-zaqar"
    data.mkdir()
    user = NOBODY if os.geteuid() == 0 else None
    if user is not None:
        os.chown(data, user, user)
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}
    for key, value in image_env.items():
        value = value.replace("$PATH", run_env["PATH"]).replace("/opt/zaqar", str(venv))
        run_env[key] = value.replace(str(image_env["ZAQAR_DATA_DIR"]), str(data))
    ports = {name: free_port() for name in ("QUEUE", "MESSAGE", "NOTIFIER", "HTTP", "WS")}
    run_env.update({f"ZAQAR_{name}_PORT": str(port) for name, port in ports.items()})
    run_env.update({
        "ZAQAR_QUEUE_TARGET": f"127.0.0.1:{ports['QUEUE']}",
        "ZAQAR_MESSAGE_TARGETS": f"127.0.0.1:{ports['MESSAGE']}",
        "ZAQAR_NOTIFIER_TARGET": f"127.0.0.1:{ports['NOTIFIER']}",
    })
    entrypoint = stage["ENTRYPOINT"]
    cmd = stage["CMD"]
    assert isinstance(entrypoint, list) and isinstance(cmd, list)
    command = shutil.which(entrypoint[0], path=run_env["PATH"])
    assert command == str(venv / "bin/zaqar-grpc"), command
    before = {p for p in image_tree.rglob("*") if not p.is_relative_to(data)}
    services: list[Service] = []
    try:
        deadline = time.monotonic() + READY_DEADLINE
        for name in ("queue", "message", "notifier", cmd[1]):
            argv = [command, *entrypoint[1:], *cmd[:-1], name]
            services.append(Service(name, argv, run_env, data, image_tree / f"{name}.log", user))
        for service in services:
            service.ready(deadline)
        # Then the HTTP API works through them
        smoke(f"http://127.0.0.1:{ports['HTTP']}", time.monotonic() + READY_DEADLINE)
    finally:
        statuses = stop_all(services)
    # And each stops cleanly on SIGTERM, having written nothing outside its volume
    assert statuses == dict.fromkeys(statuses, 0), {
        s.name: s.output()[-2000:] for s in services}
    written = {p for p in image_tree.rglob("*") if not p.is_relative_to(data)} - before
    assert {p.name for p in written} <= {f"{s.name}.log" for s in services}, written
    assert sorted(p.name for p in data.iterdir() if p.suffix == ".db") == [
        "messages.db", "notifier.db", "queues.db"]
