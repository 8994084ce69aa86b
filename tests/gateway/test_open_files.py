"""The gateway's connection limits fitted to its open-files limit (``open_files.py``): the soft
limit is raised as far as both limits need; when the hard one is too low, both are lowered in
proportion, and the log says so. Each case runs in a process of its own: a lowered hard limit
cannot be raised again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.api_gateway.open_files import fit_memory, memory_limit
from services.common.config import Settings

FIT = """
import logging, resource, sys
from services.api_gateway.open_files import fit
from services.common.config import Settings
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
soft, hard, http, ws = (int(v) for v in sys.argv[1:5])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
fitted = fit(Settings(http_max_connections=http, ws_max_connections=ws))
print("fitted", fitted.http_max_connections, fitted.ws_max_connections,
      "soft", resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


@pytest.mark.parametrize(("soft", "hard", "wanted", "fitted", "soft_after"), [
    # The soft limit is raised as far as both limits and the other files need
    (1024, 20000, (10000, 5000), (10000, 5000), 16024),
    # A limit of 0 (none) takes no part
    (1024, 20000, (10000, 0), (10000, 0), 11024),
    (1024, 1024, (0, 0), (0, 0), 1024),
    # A hard limit too low: both fitted under it, in proportion
    (1024, 4096, (10000, 10000), (1536, 1536), 4096),
    (1024, 4096, (9000, 3000), (2304, 768), 4096),
    (256, 256, (10000, 0), (128, 0), 256),
    # Limits that fit change nothing
    (4096, 4096, (100, 100), (100, 100), 4096),
])
def test_the_connection_limits_fit_the_open_files_limit(
    soft: int, hard: int, wanted: tuple[int, int], fitted: tuple[int, int], soft_after: int,
) -> None:
    ran = subprocess.run(
        [sys.executable, "-c", FIT, str(soft), str(hard), *(str(n) for n in wanted)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    lines = ran.stdout.splitlines()
    assert lines[-1] == f"fitted {fitted[0]} {fitted[1]} soft {soft_after}", ran.stdout + ran.stderr
    if fitted == wanted:
        assert lines[:-1] == []
    else:
        lowered = " and ".join(f"{name} from {w} to {f}" for name, w, f in zip(
            ("http_max_connections", "ws_max_connections"), wanted, fitted, strict=True) if w)
        assert lines[:-1] == [f"lowered {lowered} to fit this process's open-files limit of "
                              f"{soft_after} (ulimit -n); raise that limit for more"]


MIB = 1024 * 1024


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (tmp_path / "self-cgroup").write_text(membership)
    return root, tmp_path / "self-cgroup"


@pytest.mark.parametrize(("membership", "files", "limit"), [
    # cgroup v2, the process's own group, then the root's
    ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/memory.max": "268435456\n"}, 256 * MIB),
    ("0::/kubepods/pod1/c1\n", {"kubepods/pod1/c1/memory.max": "max\n"}, None),
    ("0::/\n", {"memory.max": "536870912\n"}, 512 * MIB),
    # cgroup v1, the memory controller's group
    ("4:memory:/docker/abc\n1:cpu:/\n", {"memory/docker/abc/memory.limit_in_bytes": "268435456"},
     256 * MIB),
    ("4:memory:/x\n", {"memory/x/memory.limit_in_bytes": "9223372036854771712"}, None),
    # nothing readable: no limit
    ("0::/gone\n", {}, None),
])
def test_the_memory_limit_is_read_from_the_cgroup(
    tmp_path: Path, membership: str, files: dict[str, str], limit: int | None,
) -> None:
    root, own = cgroup_tree(tmp_path, membership, files)
    assert memory_limit(root, own) == limit


def manifest_gateway() -> tuple[Settings, int]:
    """The gateway's settings from deploy/k8s/base/api-gateway.yaml's environment, and its
    container's memory limit in bytes."""
    manifest = Path(__file__).resolve().parents[2] / "deploy/k8s/base/api-gateway.yaml"
    (deployment,) = [d for d in yaml.safe_load_all(manifest.read_text())
                     if d and d.get("kind") == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # (a *_FILE variable names a file of a Secret the pod mounts, absent here)
    env = {e["name"]: e["value"] for e in container["env"]
           if "value" in e and not e["name"].endswith("_FILE")}
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    return Settings.load(environ=env), int(limit.removesuffix("Mi")) * MIB


def test_the_bounds_fit_a_memory_limit_in_proportion(caplog: pytest.LogCaptureFixture) -> None:
    defaults = Settings()
    # No limit, or one they fit in: unchanged, nothing said
    assert fit_memory(defaults, None) == defaults
    assert fit_memory(defaults, 4096 * MIB) == defaults
    # The Kubernetes manifests' values fit their own memory limit as they are
    sized, limit = manifest_gateway()
    assert (limit, sized.ws_max_connections) == (256 * MIB, 1000)
    assert fit_memory(sized, limit) == sized
    assert caplog.records == []
    # The defaults under 256 MiB: 128 MiB of room for 234 + 78 + 3 x 64 + 125 MiB (2,000 long
    # polls), each cut to about a fifth
    fitted = fit_memory(defaults, 256 * MIB)
    held = (fitted.ws_max_connections * 24 * 1024 + fitted.http_max_connections * 8 * 1024
            + 3 * fitted.http_max_receiving_bytes + fitted.max_waiting * 64 * 1024)
    assert held <= 128 * MIB
    assert (fitted.ws_max_connections, fitted.http_max_connections) == (2033, 2033)
    assert fitted.max_waiting == 406
    wanted = 10000 * 24 * 1024 + 10000 * 8 * 1024 + 3 * 64 * MIB + 2000 * 64 * 1024
    assert fitted.http_max_receiving_bytes == 64 * MIB * (128 * MIB) // wanted
    assert [r.getMessage() for r in caplog.records] == [
        "lowered ws_max_connections from 10000 to 2033 and http_max_connections from 10000 to "
        f"2033 and http_max_receiving_bytes from {64 * MIB} to {fitted.http_max_receiving_bytes}"
        " and max_waiting from 2000 to 406"
        " to fit this process's memory limit of 256 MiB; raise that limit for more"]
    # A bound of 0 (none) takes no part
    unbounded = fit_memory(Settings(ws_max_connections=0), 256 * MIB)
    assert unbounded.ws_max_connections == 0
