"""Secrets read again from their files while a process runs (``secret_files.py``), the
pre-signed URL keys they replace (``signing.Keys``), and how ``up`` passes such secrets to its
children (by file, so that the children can follow the file)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.cli import child_environment
from services.common import signing
from services.common.config import ConfigurationError, Settings
from services.common.secret_files import SecretFiles, check_interval

SECRET = "signed_url_secret"
PREVIOUS = "signed_url_previous_secret"


def files_gauges(files: str) -> tuple[float | None, float | None]:
    """(``zaqar_files_generation``, ``zaqar_files_refused``) of ``files``."""
    return (REGISTRY.get_sample_value("zaqar_files_generation", {"files": files}),
            REGISTRY.get_sample_value("zaqar_files_refused", {"files": files}))


class Recorder:
    """An ``apply`` that records what it took, refusing a value of "bad"."""

    def __init__(self) -> None:
        self.taken: list[dict[str, str]] = []
        self.event = asyncio.Event()

    def __call__(self, values: Mapping[str, str]) -> None:
        if "bad" in values.values():
            raise ConfigurationError("bad is no secret")
        self.taken.append(dict(values))
        self.event.set()


def files(tmp_path: Path, **contents: str) -> tuple[dict[str, str], dict[str, str]]:
    """(setting -> path, the environment naming them), the files written with ``contents``."""
    paths = {}
    for name, text in contents.items():
        path = tmp_path / name
        path.write_text(text + "\n")
        paths[name] = str(path)
    return paths, {f"ZAQAR_{name.upper()}_FILE": path for name, path in paths.items()}


def test_only_settings_read_from_files_are_followed(tmp_path: Path) -> None:
    # Given a secret read from a file and another set in the environment
    paths, environ = files(tmp_path, signed_url_secret="one")
    environ["ZAQAR_SIGNED_URL_PREVIOUS_SECRET"] = "old"
    settings = Settings.load(environ=environ)
    # Then only the file's is followed, from the value read at start
    followed = SecretFiles.of(settings, [((SECRET, PREVIOUS), Recorder())], environ)
    assert followed is not None
    assert followed.paths == {SECRET: paths[SECRET]}
    assert followed.read() == {SECRET: "one"}
    assert not followed.take({SECRET: "one"})  # what is in use already
    # And none is followed without files, or with an interval of 0
    assert SecretFiles.of(settings, [((PREVIOUS,), Recorder())], environ) is None
    assert SecretFiles.of(Settings(secret_reload_interval=0), [((SECRET,), Recorder())],
                          environ) is None


@pytest.mark.parametrize("interval", [-1.0, float("nan"), float("inf")])
def test_an_interval_that_is_not_a_number_of_seconds_is_refused(interval: float) -> None:
    with pytest.raises(ConfigurationError) as refused:
        check_interval(Settings(secret_reload_interval=interval))
    assert str(refused.value) == (
        f"secret_reload_interval (ZAQAR_SECRET_RELOAD_INTERVAL={interval}): seconds between "
        "looks at the secret files, 0 or more"
    )


def test_new_content_is_taken_and_refused_content_leaves_the_old_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, environ = files(tmp_path, signed_url_secret="one", signed_url_previous_secret="")
    apply = Recorder()
    followed = SecretFiles.of(Settings.load(environ=environ), [((SECRET, PREVIOUS), apply)],
                              environ)
    assert followed is not None
    caplog.set_level(logging.INFO, "services.common.secret_files")
    # When the current secret's file changes
    Path(paths[SECRET]).write_text("two\n")
    values = followed.read()
    assert values == {SECRET: "two", PREVIOUS: ""}
    # Then the new values are taken, once, and the log names the file, not the content
    assert followed.take(values)
    assert not followed.take(values)
    assert apply.taken == [{SECRET: "two", PREVIOUS: ""}]
    assert followed.generation == 1
    assert files_gauges("secrets") == (1, 0)
    assert "secret files reloaded (generation 1): ZAQAR_SIGNED_URL_SECRET_FILE" in caplog.text
    assert "two" not in caplog.text
    # When content that apply refuses arrives, the values in use stay, and it is said once
    Path(paths[PREVIOUS]).write_text("bad\n")
    assert not followed.take(followed.read() or {})
    assert not followed.take(followed.read() or {})
    refusals = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert [r.getMessage() for r in refusals] == [
        "secret files changed (ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE) but cannot be used; "
        "going on with the values in use: bad is no secret"
    ]
    assert apply.taken == [{SECRET: "two", PREVIOUS: ""}]
    assert files_gauges("secrets") == (1, 1)
    # Put back as it was, nothing is refused any more
    Path(paths[PREVIOUS]).write_text("\n")
    assert not followed.take(followed.read() or {})
    assert files_gauges("secrets") == (1, 0)
    # And the next usable content is taken
    Path(paths[PREVIOUS]).write_text("one\n")
    assert followed.take(followed.read() or {})
    assert apply.taken[-1] == {SECRET: "two", PREVIOUS: "one"}
    assert followed.generation == 2
    assert files_gauges("secrets") == (2, 0)


def test_an_unreadable_file_keeps_the_values_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths, environ = files(tmp_path, signed_url_secret="one")
    followed = SecretFiles.of(Settings.load(environ=environ), [((SECRET,), Recorder())],
                              environ)
    assert followed is not None
    Path(paths[SECRET]).unlink()
    Path(paths[SECRET]).mkdir()  # not a file: cannot be read
    assert followed.read() is None
    assert followed.read() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # said once, not at every look
    assert files_gauges("secrets") == (0, 1)
    assert warnings[0].startswith(
        f"secret files: cannot read ZAQAR_SIGNED_URL_SECRET_FILE={paths[SECRET]}: "
    )
    Path(paths[SECRET]).rmdir()
    Path(paths[SECRET]).write_text("one\n")
    assert followed.read() == {SECRET: "one"}
    assert files_gauges("secrets") == (0, 0)


def test_a_signed_url_file_absent_from_its_folder_is_an_empty_secret_that_may_come_and_go(
    tmp_path: Path,
) -> None:
    # Given the folder of a mounted Secret that has the key "secret" and not "previous"
    folder = tmp_path / "signed-url"
    folder.mkdir()
    (folder / "secret").write_text("one\n")
    environ = {"ZAQAR_SIGNED_URL_SECRET_FILE": str(folder / "secret"),
               "ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE": str(folder / "previous")}
    # Then the process starts with no previous secret, and says where the empty value is from
    settings = Settings.load(environ=environ)
    assert (settings.signed_url_secret, settings.signed_url_previous_secret) == ("one", "")
    shown = {row[0]: row[1:] for row in Settings.effective(environ=environ)}
    assert shown["ZAQAR_SIGNED_URL_PREVIOUS_SECRET"] == (
        "''", f"file {folder / 'previous'} (ZAQAR_SIGNED_URL_PREVIOUS_SECRET_FILE), absent: empty")
    recorder = Recorder()
    followed = SecretFiles.of(settings, [((SECRET, PREVIOUS), recorder)], environ)
    assert followed is not None
    # When the key "previous" is added to the Secret, it is taken
    (folder / "previous").write_text("old\n")
    assert followed.take(followed.read() or {})
    # And when it is deleted again (the rotation's last step), the old secret goes with it
    (folder / "previous").unlink()
    assert followed.take(followed.read() or {})
    assert recorder.taken == [{SECRET: "one", PREVIOUS: "old"}, {SECRET: "one", PREVIOUS: ""}]
    # And with the whole Secret gone, pre-signed URLs are off until it comes back
    (folder / "secret").unlink()
    assert followed.take(followed.read() or {})
    assert recorder.taken[-1] == {SECRET: "", PREVIOUS: ""}


@pytest.mark.parametrize(("variable", "path"), [
    # A folder that does not exist is a wrong path, not a Secret without the key
    ("ZAQAR_SIGNED_URL_SECRET_FILE", "no-such-folder/secret"),
    # Any other secret's file must be there
    ("ZAQAR_MESSAGE_ENCRYPTION_KEYS_FILE", "keys"),
    ("ZAQAR_KEYSTONE_PASSWORD_FILE", "password"),
])
def test_other_absent_secret_files_are_an_error(tmp_path: Path, variable: str, path: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Settings.load(environ={variable: str(tmp_path / path)})
    assert str(refused.value).startswith(f"cannot read {variable}={tmp_path / path}: ")


async def test_the_watcher_takes_a_change_by_itself(tmp_path: Path) -> None:
    paths, environ = files(tmp_path, signed_url_secret="one")
    apply = Recorder()
    settings = Settings.load(environ={**environ, "ZAQAR_SECRET_RELOAD_INTERVAL": "0.01"})
    followed = SecretFiles.of(settings, [((SECRET,), apply)], environ)
    assert followed is not None
    followed.watch()
    try:
        await asyncio.to_thread(Path(paths[SECRET]).write_text, "two\n")
        await asyncio.wait_for(apply.event.wait(), 30)
        assert apply.taken == [{SECRET: "two"}]
    finally:
        await followed.close()


def test_keys_are_replaced_together_and_checked() -> None:
    keys = signing.Keys("one")
    assert (keys.current, keys.verifying) == ("one", ("one",))
    keys.take({SECRET: "two", PREVIOUS: "one"})
    assert (keys.current, keys.verifying) == ("two", ("two", "one"))
    keys.take({SECRET: "two"})  # a setting left out keeps its value
    assert keys.verifying == ("two", "one")
    # A previous secret without a current one is refused, and the keys in use stay
    with pytest.raises(ConfigurationError, match="ZAQAR_SIGNED_URL_PREVIOUS_SECRET"):
        keys.take({SECRET: "", PREVIOUS: "one"})
    assert (keys.current, keys.verifying) == ("two", ("two", "one"))
    keys.take({SECRET: "", PREVIOUS: ""})  # no secret at all: nothing signs or verifies
    assert (keys.current, keys.verifying) == ("", ())


def test_up_passes_a_secret_read_from_a_file_as_the_file(tmp_path: Path) -> None:
    paths, environ = files(tmp_path, signed_url_secret="one", message_store="sqlite:///x.db")
    settings = Settings.load(environ=environ)
    env = child_environment(environ, settings)
    # The child reads the file itself (and can follow it), not a copy of its value
    assert env["ZAQAR_SIGNED_URL_SECRET_FILE"] == paths[SECRET]
    assert "ZAQAR_SIGNED_URL_SECRET" not in env
    assert Settings.load(environ=env).signed_url_secret == "one"
    # A value given instead (a flag) goes as the value, without the file
    flagged = Settings.load(environ=environ, overrides={"message_store": "redis://r:6379/0"})
    env = child_environment(environ, flagged)
    assert env["ZAQAR_MESSAGE_STORE"] == "redis://r:6379/0"
    assert "ZAQAR_MESSAGE_STORE_FILE" not in env
    assert Settings.load(environ=env).message_store == "redis://r:6379/0"
    # And settings without files are passed as values, as before
    assert env["ZAQAR_SIGNED_URL_PREVIOUS_SECRET"] == ""


def test_each_part_takes_its_own_settings_and_one_refusing_leaves_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a process whose secrets belong to two parts (its signing keys, its Keystone client)
    paths, environ = files(tmp_path, signed_url_secret="one", keystone_password="pw1")
    keys, keystone = Recorder(), Recorder()
    followed = SecretFiles.of(
        Settings.load(environ=environ),
        [((SECRET, PREVIOUS), keys), (("keystone_password",), keystone)], environ,
    )
    assert followed is not None
    # When one file changes, only its part is handed its values
    Path(paths["keystone_password"]).write_text("pw2\n")
    assert followed.take(followed.read() or {})
    assert (keys.taken, keystone.taken) == ([], [{"keystone_password": "pw2"}])
    # When both change and one part refuses, the other still takes its new value
    Path(paths[SECRET]).write_text("bad\n")
    Path(paths["keystone_password"]).write_text("pw3\n")
    assert followed.take(followed.read() or {})
    assert (keys.taken, keystone.taken[-1]) == ([], {"keystone_password": "pw3"})
    assert followed.generation == 2
    assert files_gauges("secrets") == (2, 1)
    refusals = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert refusals == ["secret files changed (ZAQAR_SIGNED_URL_SECRET_FILE) but cannot be "
                        "used; going on with the values in use: bad is no secret"]
    # And once the refused file is usable, its part takes it, and nothing is refused
    Path(paths[SECRET]).write_text("two\n")
    assert followed.take(followed.read() or {})
    assert keys.taken == [{SECRET: "two"}]
    assert files_gauges("secrets") == (3, 0)
