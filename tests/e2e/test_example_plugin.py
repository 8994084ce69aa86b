"""The example plugin package (``examples/plugins/``), as a plugin author ships it: built as a
wheel, installed beside zaqar-grpc (into a folder of its own on the processes' PYTHONPATH),
checked with the conformance kit, listed by ``zaqar-grpc plugins``, and serving
``zaqar-grpc up`` with its ``memory://`` message store and its ``example_tag`` filter over
HTTP."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common.config import Settings
from tests.e2e.harness import Stack, start_stack
from tests.servers import service_ports

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "examples" / "plugins"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a copy of the example's folder, the folder its wheel is installed in)."""
    folder = tmp_path_factory.mktemp("example-plugin")
    source = folder / "plugins"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w",
                    str(folder / "dist"), str(source)], check=True, timeout=120)
    (wheel,) = (folder / "dist").glob("zaqar_grpc_example_plugins-0.1.0-*.whl")
    site = folder / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site),
                    str(wheel)], check=True, timeout=120)
    return source, site


def environment(site: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}


def test_plugins_lists_the_packages_store_and_filter(plugin: tuple[Path, Path]) -> None:
    _, site = plugin
    result = subprocess.run([sys.executable, "-m", "services.cli", "plugins"],
                            env=environment(site), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:3]): line.split()[3:] for line in result.stdout.splitlines()}
    assert rows[("message", "store", "memory")] == [
        "zaqar_grpc_example_plugins.memory:MemoryMessageStore", "zaqar-grpc-example-plugins",
        "0.1.0"]
    assert rows[("message", "filter", "example_tag")] == [
        "zaqar_grpc_example_plugins.tag:TagFilter", "zaqar-grpc-example-plugins", "0.1.0"]


def test_the_memory_store_passes_the_conformance_kit(plugin: tuple[Path, Path]) -> None:
    # Given the example's own tests: the kit's message store suite over memory:// URIs
    source, site = plugin
    # When they run as the author runs them, from the package's folder with its settings
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=source, env=environment(site), capture_output=True, text=True, timeout=300,
    )
    # Then every test of the suite passes (one is skipped by capability: not durable)
    assert result.returncode == 0, result.stdout[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    counted = re.search(r"(\d+) passed", summary)
    assert counted is not None and int(counted[1]) >= 50, summary
    assert "failed" not in summary and "error" not in summary, summary


@pytest.fixture(scope="module")
def stack(plugin: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """``zaqar-grpc up`` with message_svc on ``memory://e2e``, the plugin on PYTHONPATH."""
    _, site = plugin
    data = tmp_path_factory.mktemp("example-stack") / "data"
    settings = Settings.load(environ={}, overrides={
        "data_dir": str(data), **service_ports(), "message_store": "memory://e2e",
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(ROOT)]))
        running = start_stack(settings)
    yield running
    assert running.stop() == 0, "".join(running.output)


def test_post_and_claim_through_the_plugins_store_and_filter(stack: Stack) -> None:
    headers = {"Client-ID": str(uuid.uuid4()), "X-Project-ID": f"e-{uuid.uuid4().hex[:8]}"}
    with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as http:
        # Given a queue with the example's filter
        assert http.put("/v2/queues/tagged", json={"_filters": ["example_tag"]}).status_code \
            == 201
        # When messages are posted and claimed
        posted = http.post("/v2/queues/tagged/messages",
                           json={"messages": [{"body": {"n": 1}}, {"body": {"n": 2}}]})
        assert posted.status_code == 201, posted.text
        claimed = http.post("/v2/queues/tagged/claims", json={"ttl": 60, "grace": 60})
        # Then both are claimed, in order, tagged by the filter
        assert claimed.status_code == 201, claimed.text
        assert [m["body"] for m in claimed.json()["messages"]] == [
            {"n": 1, "tagged_by": "example_tag"}, {"n": 2, "tagged_by": "example_tag"}]
        # And deleting them with the claim empties the queue
        for message in claimed.json()["messages"]:
            assert http.delete(message["href"]).status_code == 204
        assert http.post("/v2/queues/tagged/claims", json={"ttl": 60}).status_code == 204
    # And message_svc kept them in memory: its SQLite file was never made
    files = sorted(p.name for p in Path(stack.settings.data_dir).iterdir())
    assert not [name for name in files if name.startswith("message")], files
    assert files, "the queue and notifier stores still use the data folder"
