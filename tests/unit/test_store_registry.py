"""Store backends found by entry point (``services/common/store_registry.py``,
``services/common/plugins.py``): the built-in ones and those of another installed package.

Another package is installed for real: its module and its ``.dist-info`` metadata (the files
pip writes) in a folder put on ``sys.path``.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common import plugins, store_probe, store_registry
from services.common.config import ConfigurationError
from services.message_svc.storage import registry as message_registry
from services.message_svc.storage.sqlite import SqliteMessageStore
from services.notifier_svc.storage import registry as notifier_registry
from services.queue_svc.storage import registry as queue_registry

BUILT_IN = [
    "mongodb", "mongodb+srv", "redis", "redis+cluster", "redis+sentinel", "rediss",
    "rediss+cluster", "rediss+sentinel", "sqlite",
]

Install = Callable[..., None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """Installs a package named ``name`` into a folder on ``sys.path``: ``modules`` (name ->
    source), its message store entry points and its requirements."""
    monkeypatch.syspath_prepend(str(tmp_path))
    added: list[str] = []

    def installer(name: str, modules: dict[str, str], stores: dict[str, str],
                  requires: tuple[str, ...] = ()) -> None:
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
            added.append(module)
        info = tmp_path / f"{name.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        lines = [f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n"]
        lines += [f"Requires-Dist: {requirement}\n" for requirement in requires]
        (info / "METADATA").write_text("".join(lines))
        points = "".join(f"{scheme} = {target}\n" for scheme, target in stores.items())
        (info / "entry_points.txt").write_text(f"[zaqar_grpc.message_stores]\n{points}")
        importlib.invalidate_caches()

    yield installer
    for module in added:
        sys.modules.pop(module, None)


def test_the_built_in_backends_are_entry_points_of_zaqar_grpc() -> None:
    # Given the project installed, Then every store kind has the built-in schemes from it
    for kind in ("queue store", "message store", "notifier store"):
        found = [p for p in plugins.installed() if p.kind == kind]
        assert sorted(p.name for p in found) == BUILT_IN
        assert {p.distribution for p in found} == {"zaqar-grpc"}
    # And each service's registry finds its classes through them
    assert message_registry.backend_class("sqlite:///x.db") is SqliteMessageStore
    assert queue_registry.backend_class("redis://h").__name__ == "RedisQueueStore"  # type: ignore[attr-defined]
    assert notifier_registry.backend_class("mongodb://h/d").__name__ == "MongoNotifierStore"  # type: ignore[attr-defined]


def test_an_unknown_scheme_names_the_installed_ones(install: Install) -> None:
    # Given another package with a message store under "lite"
    install("zaqar-lite", {"zaqar_lite": """
        from services.message_svc.storage.sqlite import SqliteMessageStore
        class LiteMessageStore(SqliteMessageStore):
            pass
        """}, {"lite": "zaqar_lite:LiteMessageStore"})
    # When a URI of a scheme nobody declares is used
    with pytest.raises(ConfigurationError) as raised:
        message_registry.backend_class("nosuch://h")
    # Then the message names every installed scheme, the package's too, on one line
    message = str(raised.value)
    assert "unsupported scheme 'nosuch'" in message
    for scheme in [*BUILT_IN, "lite"]:
        assert f"{scheme}://" in message
    assert "\n" not in message
    # And the other package's scheme is found
    assert message_registry.backend_class("lite:///x").__name__ == "LiteMessageStore"  # type: ignore[attr-defined]


def test_a_plugin_missing_a_driver_it_requires_is_one_line_with_the_install_hint(
    install: Install,
) -> None:
    # Given a package whose store imports a driver it requires but that is not installed
    install("zaqar-nodriver", {"zaqar_nodriver": "import zaqar_missing_driver.client\n"},
            {"nodriver": "zaqar_nodriver:Store"},
            requires=("zaqar-missing-driver[fast]>=2.0", "orjson>=3"))
    # When its scheme is used
    with pytest.raises(ConfigurationError) as raised:
        message_registry.backend_class("nodriver://secret:pw@h/")
    # Then one line names the package and version, the missing module and how to install it,
    # and not the password
    message = str(raised.value)
    assert "\n" not in message
    assert "from package zaqar-nodriver 1.2.3 cannot be loaded" in message
    assert "No module named 'zaqar_missing_driver'" in message
    assert message.endswith("install it, e.g. pip install 'zaqar-missing-driver[fast]>=2.0'")
    assert "pw" not in message


def test_a_plugin_that_fails_to_import_is_one_line_naming_its_package(install: Install) -> None:
    # Given a package whose store module raises when imported
    install("zaqar-broken", {"zaqar_broken": "raise RuntimeError('bad build')\n"},
            {"broken": "zaqar_broken:Store"})
    # When its scheme is used, by the registry or by the pool probe
    for check in (lambda: message_registry.backend_class("broken://h"),
                  lambda: store_probe.check_uri("broken://h", "pool")):
        with pytest.raises(ConfigurationError) as raised:
            check()
        # Then one line names the package, its version and the error, without a hint
        message = str(raised.value)
        assert "\n" not in message
        assert "'broken' from package zaqar-broken 1.2.3 cannot be loaded" in message
        assert "RuntimeError: bad build" in message
        assert "install it" not in message


async def test_a_plugin_store_is_opened_and_probed_like_a_built_in_one(
    install: Install, tmp_path: Path,
) -> None:
    # Given a package with a message store "lite" that keeps its file at lite:///<path>
    install("zaqar-lite", {"zaqar_lite": """
        from services.message_svc.storage.sqlite import SqliteMessageStore
        class LiteMessageStore(SqliteMessageStore):
            @classmethod
            def from_uri(cls, uri, **options):
                return super().from_uri("sqlite" + uri.removeprefix("lite"), **options)
        """}, {"lite": "zaqar_lite:LiteMessageStore"})
    uri = f"lite:///{tmp_path / 'lite.db'}"
    # When it is opened through the registry, Then it works as a message store
    store = await message_registry.open_store(uri)
    try:
        assert await store.bump_queue_version("p", "q") == 1
    finally:
        await store.close()
    # And the pool probe accepts its URI and opens it
    assert store_probe.check_uri(uri, "pool") == "lite"
    await store_probe.probe(uri, "pool", within=5)
    # And a URI its class refuses is refused by the probe too
    with pytest.raises(ConfigurationError):
        store_probe.check_uri("lite://nohost/x?synchronous=bogus", "pool")
    # And the schemes of a kind are listed sorted, the package's included
    assert store_registry.schemes("message store") == sorted([*BUILT_IN, "lite"])


def test_a_built_in_scheme_is_known_without_reading_entry_points(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every store health check of a running service asks for its URI's scheme: reading the
    # installed packages' entry points takes ~20 ms of its event loop, for nothing when the
    # scheme is built in.
    def read(kind: str) -> dict[str, object]:
        raise AssertionError(f"entry points of {kind} read")

    monkeypatch.setattr(plugins, "entry_points", read)
    assert store_probe.scheme_of("REDIS://127.0.0.1:6379/0", "message store") == "redis"
    assert store_probe.scheme_of("sqlite:////tmp/x.db", "pool") == "sqlite"
    # Another scheme still looks for a plugin of that name
    with pytest.raises(AssertionError, match="entry points of message store read"):
        store_probe.scheme_of("lite:///x", "message store")
