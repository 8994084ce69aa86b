"""Settings derived per service: a name that is not a service fails instead of getting
another service's address or store."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.config import ConfigurationError, Service, Settings


def test_each_service_has_its_own_target_and_store() -> None:
    settings = Settings.load(environ={}, overrides={
        "queue_port": 1, "message_port": 2, "notifier_port": 3, "data_dir": "/srv/z",
    })
    assert [settings.target(s) for s in Service] == [
        "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
    ]
    assert [settings.store_uri(s) for s in Service] == [
        "sqlite:////srv/z/queues.db", "sqlite:////srv/z/messages.db",
        "sqlite:////srv/z/notifier.db",
    ]
    # Plain names are the same services.
    assert settings.target("notifier") == settings.target(Service.NOTIFIER)


@pytest.mark.parametrize("name", ["gateway", "messages", "", "Queue"])
def test_an_unknown_service_name_fails(name: str) -> None:
    settings = Settings.load(environ={})
    with pytest.raises(ValueError, match="is not a valid Service"):
        settings.target(name)
    with pytest.raises(ValueError, match="is not a valid Service"):
        settings.store_uri(name)


def test_secrets_may_be_read_from_files(tmp_path: Path) -> None:
    # Given secrets mounted as files, as Kubernetes mounts a Secret (with a final newline)
    (tmp_path / "password").write_text("s3cret\n")
    (tmp_path / "store").write_text("redis://:pw@10.0.0.5:6379/2")
    settings, sources = Settings._resolve(environ={
        "ZAQAR_KEYSTONE_PASSWORD_FILE": str(tmp_path / "password"),
        "ZAQAR_MESSAGE_STORE_FILE": str(tmp_path / "store"),
    })
    # Then the settings hold their content, and say where it came from
    assert settings.keystone_password == "s3cret"
    assert settings.message_store == "redis://:pw@10.0.0.5:6379/2"
    assert sources["keystone_password"] == (
        f"file {tmp_path / 'password'} (ZAQAR_KEYSTONE_PASSWORD_FILE)")


def test_a_secret_file_must_be_readable_and_alone(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    with pytest.raises(ConfigurationError, match="cannot read ZAQAR_SMTP_PASSWORD_FILE="):
        Settings.load(environ={"ZAQAR_SMTP_PASSWORD_FILE": str(missing)})
    (tmp_path / "s").write_text("x")
    with pytest.raises(ConfigurationError, match="both ZAQAR_SIGNED_URL_SECRET and "
                                                 "ZAQAR_SIGNED_URL_SECRET_FILE are set"):
        Settings.load(environ={"ZAQAR_SIGNED_URL_SECRET": "y",
                               "ZAQAR_SIGNED_URL_SECRET_FILE": str(tmp_path / "s")})
    # A file far larger than any secret (a wrong path) is refused, not read whole
    (tmp_path / "big").write_bytes(b"k" * (64 * 1024 + 1))
    with pytest.raises(ConfigurationError) as refused:
        Settings.load(environ={"ZAQAR_SIGNED_URL_SECRET_FILE": str(tmp_path / "big")})
    assert str(refused.value) == (
        f"cannot read ZAQAR_SIGNED_URL_SECRET_FILE={tmp_path / 'big'}: larger than 64 KiB, "
        "which no secret is (is it the right file?)"
    )
    (tmp_path / "big").write_bytes(b"k" * (64 * 1024 - 1) + b"\n")  # 64 KiB: taken
    assert len(Settings.load(
        environ={"ZAQAR_SIGNED_URL_SECRET_FILE": str(tmp_path / "big")}).signed_url_secret
    ) == 64 * 1024 - 1
    # Line breaks read as text: the final one dropped, \r\n as \n
    (tmp_path / "keys").write_bytes(b"a:x\r\nb:y\r\n")
    assert Settings.load(environ={"ZAQAR_MESSAGE_ENCRYPTION_KEYS_FILE": str(tmp_path / "keys")}
                         ).message_encryption_keys == "a:x\nb:y"
    # Only secrets are read from files: a _FILE variable of another setting is not one of ours
    assert Settings.load(environ={"ZAQAR_HTTP_PORT_FILE": str(tmp_path / "s")}).http_port == 8888


def test_the_rate_limit_store_is_a_secret_setting(tmp_path: Path) -> None:
    """Its URI may carry a password: it can come from a file, and is shown redacted."""
    (tmp_path / "rate").write_text("redis://:pass-word@cache:6379/0\n")
    environ = {"ZAQAR_PROJECT_RATE_STORE_FILE": str(tmp_path / "rate")}
    assert Settings.load(environ=environ).project_rate_store == "redis://:pass-word@cache:6379/0"
    shown = {name: value for name, value, _ in Settings.effective(environ=environ)}
    assert "pass-word" not in shown["ZAQAR_PROJECT_RATE_STORE"]
    assert "cache:6379" in shown["ZAQAR_PROJECT_RATE_STORE"]
