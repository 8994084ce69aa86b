"""``zaqar-grpc settings``, run as the operator runs it: the defaults, and with ``--effective``
the values in effect, where each comes from, secrets redacted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(ZAQAR_\w+) +('(?:[^'\\]|\\.)*'|\S+) +(.+)$")


def settings_command(*args: str, env: dict[str, str] | None = None,
                     cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``zaqar-grpc settings ARGS`` with no ZAQAR_* variable of ours, plus ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZAQAR_")}
    return subprocess.run([sys.executable, "-m", "services.cli", "settings", *args],
                          env={**clean, "PYTHONPATH": str(ROOT), **(env or {})}, cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def effective(*args: str, env: dict[str, str] | None = None,
              cwd: Path = ROOT) -> dict[str, tuple[str, str]]:
    """variable -> (value, source) as ``settings --effective ARGS`` shows them."""
    result = settings_command("--effective", *args, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        match = ROW.match(line)
        assert match is not None, line
        rows[match[1]] = (match[2], match[3])
    return rows


def test_each_value_comes_from_the_strongest_place_that_gives_it(tmp_path: Path) -> None:
    # Given a config file, variables and flags that give some settings, and overlap
    config = tmp_path / "zaqar.toml"
    config.write_text('ws_port = 9100\nhttp_port = 9200\nlog_level = "DEBUG"\nrpc_timeout = 7\n')
    env = {"ZAQAR_HTTP_PORT": "9300", "ZAQAR_LOG_LEVEL": "WARNING", "ZAQAR_POOLING": "yes"}
    # When the operator asks what is in effect
    rows = effective("--config", str(config), "--log-level", "ERROR", env=env)
    # Then each setting shows the value of the strongest place, and that place:
    # defaults < TOML file < ZAQAR_* variables < flags
    assert rows["ZAQAR_CONFIG_FILE"] == (repr(str(config)), "--config")
    assert rows["ZAQAR_HOST"] == ("'127.0.0.1'", "default")
    assert rows["ZAQAR_WS_PORT"] == ("9100", f"file {config}")
    assert rows["ZAQAR_RPC_TIMEOUT"] == ("7.0", f"file {config}")
    assert rows["ZAQAR_HTTP_PORT"] == ("9300", "environment")
    assert rows["ZAQAR_POOLING"] == ("True", "environment")
    assert rows["ZAQAR_LOG_LEVEL"] == ("'ERROR'", "--log-level")
    # And every setting is listed
    listed = settings_command().stdout.splitlines()
    assert len(rows) == len(listed) + 1  # and the config file


def test_the_config_file_may_come_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "zaqar.toml"
    config.write_text("queue_port = 51000\n")
    rows = effective(env={"ZAQAR_CONFIG_FILE": str(config)})
    assert rows["ZAQAR_CONFIG_FILE"] == (repr(str(config)), "environment")
    assert rows["ZAQAR_QUEUE_PORT"] == ("51000", f"file {config}")


def test_derived_values_are_shown_as_they_take_effect(tmp_path: Path) -> None:
    # Given a data folder from a flag and a host from a variable, no store URI or target
    rows = effective("--data-dir", "data", "--port", "9001", env={"ZAQAR_HOST": "127.0.0.2"},
                     cwd=tmp_path)
    # Then the store URIs and targets show what the services will use, and why
    assert rows["ZAQAR_DATA_DIR"] == ("'data'", "--data-dir")
    assert rows["ZAQAR_HTTP_PORT"] == ("9001", "--port")
    assert rows["ZAQAR_QUEUE_STORE"] == (
        repr(f"sqlite:///{tmp_path.resolve()}/data/queues.db"), "derived from ZAQAR_DATA_DIR")
    assert rows["ZAQAR_MESSAGE_TARGETS"] == (
        "'127.0.0.2:50062'", "derived from ZAQAR_HOST, ZAQAR_MESSAGE_PORT")
    assert rows["ZAQAR_NOTIFIER_TARGET"] == (
        "'127.0.0.2:50063'", "derived from ZAQAR_HOST, ZAQAR_NOTIFIER_PORT")
    # And --store for another backend gives every service that store
    rows = effective("--store", "redis://127.0.0.1:6390/2")
    for variable in ("ZAQAR_QUEUE_STORE", "ZAQAR_MESSAGE_STORE", "ZAQAR_NOTIFIER_STORE"):
        assert rows[variable] == ("'redis://127.0.0.1:6390/2'", "--store")


def test_secrets_are_redacted_wherever_they_come_from(tmp_path: Path) -> None:
    # Given secrets in the config file, in variables and in a store URI on the command line
    config = tmp_path / "zaqar.toml"
    config.write_text('keystone_password = "file-secret-1"\n')
    env = {"ZAQAR_SIGNED_URL_SECRET": "env-secret-2", "ZAQAR_SMTP_PASSWORD": "env-secret-3"}
    result = settings_command(
        "--effective", "--config", str(config), "--message-store",
        "redis://:uri-secret-4@127.0.0.1:6379/0", env=env,
    )
    # Then none of them is shown, but each shows that it is set, and where
    assert result.returncode == 0, result.stderr
    assert "secret-" not in result.stdout
    rows = effective("--config", str(config), "--message-store",
                     "redis://:uri-secret-4@127.0.0.1:6379/0", env=env)
    assert rows["ZAQAR_KEYSTONE_PASSWORD"] == ("'***'", f"file {config}")
    assert rows["ZAQAR_SIGNED_URL_SECRET"] == ("'***'", "environment")
    assert rows["ZAQAR_SMTP_PASSWORD"] == ("'***'", "environment")
    assert rows["ZAQAR_MESSAGE_STORE"] == ("'redis://:***@127.0.0.1:6379/0'", "--message-store")
    # And an unset secret shows as unset
    assert effective()["ZAQAR_KEYSTONE_PASSWORD"] == ("''", "default")


def test_without_effective_the_defaults_are_listed() -> None:
    # Given a variable that changes a setting
    result = settings_command(env={"ZAQAR_HTTP_PORT": "9300"})
    # Then the plain listing still shows the default and the help text
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("ZAQAR_HTTP_PORT"))
    assert line.split()[1] == "8888"
    assert "HTTP port of the API gateway." in line


def test_an_invalid_value_is_one_line() -> None:
    result = settings_command("--effective", env={"ZAQAR_HTTP_PORT": "eighty"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        "zaqar-grpc: configuration error: setting http_port (ZAQAR_HTTP_PORT): expected int, "
        "got 'eighty'\n"
    )


# zaqar-grpc plugins -------------------------------------------------------------------------


def plugins_command(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``zaqar-grpc plugins ARGS``, with ``path`` (a folder of installed packages) on the
    Python path."""
    pythonpath = os.pathsep.join(str(p) for p in (path, ROOT) if p is not None)
    return subprocess.run([sys.executable, "-m", "services.cli", "plugins", *args],
                          env={**os.environ, "PYTHONPATH": pythonpath}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def install_package(folder: Path) -> None:
    """Another package's metadata, as pip writes it: a message store and a message filter."""
    info = folder / "zaqar_extra-2.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: zaqar-extra\nVersion: 2.0.1\n")
    (info / "entry_points.txt").write_text(
        "[zaqar_grpc.message_stores]\nextra = zaqar_extra.store:ExtraMessageStore\n\n"
        "[zaqar_grpc.message_filters]\nshout = zaqar_extra.filters:Shout\n"
    )


def test_plugins_lists_every_backend_and_filter_with_its_package(tmp_path: Path) -> None:
    # Given another installed package with a store and a filter
    install_package(tmp_path)
    # When the plugins are listed
    result = plugins_command(path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    # Then a header, then one row per entry point: kind (two words), name, target, package,
    # version
    assert rows[0] == ["KIND", "NAME", "TARGET", "PACKAGE", "VERSION"]
    table = {(" ".join(row[:2]), row[2]): row[3:] for row in rows[1:]}
    for kind in ("queue store", "message store", "notifier store"):
        for scheme in ("sqlite", "redis", "redis+cluster", "mongodb", "mongodb+srv"):
            assert table[(kind, scheme)][1:] == ["zaqar-grpc", "0.1.0"]
    assert table[("message store", "sqlite")][0] == (
        "services.message_svc.storage.sqlite:SqliteMessageStore")
    assert table[("message store", "extra")] == [
        "zaqar_extra.store:ExtraMessageStore", "zaqar-extra", "2.0.1"]
    assert table[("message filter", "shout")] == ["zaqar_extra.filters:Shout", "zaqar-extra",
                                                   "2.0.1"]
    # And nothing was imported to list them (the other package has no code at all)
    assert result.stderr == ""


def test_plugins_json_gives_the_group_too(tmp_path: Path) -> None:
    import json

    install_package(tmp_path)
    result = plugins_command("--json", path=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert {"kind": "message filter", "group": "zaqar_grpc.message_filters", "name": "shout",
            "target": "zaqar_extra.filters:Shout", "distribution": "zaqar-extra",
            "version": "2.0.1"} in listed
    assert {p["group"] for p in listed} >= {"zaqar_grpc.queue_stores", "zaqar_grpc.message_stores",
                                            "zaqar_grpc.notifier_stores",
                                            "zaqar_grpc.message_filters"}
