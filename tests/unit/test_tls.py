"""The ``tls_*`` settings: what turns TLS on, and one clear line for every bad combination."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from services.common.config import ConfigurationError, Settings
from services.common.tls import Tls, load_tls
from tests.certs import Pki

ROOT = Path(__file__).resolve().parents[2]


def settings(**tls: Any) -> Settings:
    return Settings.load(environ={}, overrides={f"tls_{k}": v for k, v in tls.items()})


def error_of(s: Settings, serving: bool = True) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_tls(s, serving)
    return str(caught.value)


def test_tls_is_off_by_default() -> None:
    assert load_tls(settings()) is None


def test_certificate_key_and_ca_are_read(pki: Pki) -> None:
    # When all three files are set, with client certificates required
    tls = load_tls(settings(cert_file=str(pki.service.cert), key_file=str(pki.service.key),
                            ca_file=str(pki.ca), require_client_cert=True))
    # Then their PEM bytes are what the servers and channels get
    assert tls is not None
    assert tls.certificate_chain == pki.service.cert.read_bytes()
    assert tls.private_key == pki.service.key.read_bytes()
    assert tls.root_certificates == pki.ca.read_bytes()
    assert (tls.require_client_cert, tls.server_name) == (True, "")
    assert tls.channel_options() == []


def test_a_ca_alone_is_enough_for_a_process_that_serves_no_grpc(pki: Pki) -> None:
    # Given only the CA (a gateway that presents no client certificate)
    only_ca = settings(ca_file=str(pki.ca), server_name="zaqar.internal")
    # Then its channels use TLS
    tls = load_tls(only_ca, serving=False)
    assert tls is not None and tls.certificate_chain is None
    assert tls.channel_options() == [("grpc.ssl_target_name_override", "zaqar.internal")]
    # But a service cannot serve TLS without a certificate
    assert error_of(only_ca) == (
        "tls_ca_file is set, so TLS is on, but this service has no certificate to serve: "
        "set tls_cert_file and tls_key_file"
    )


def test_certificate_and_key_go_together(pki: Pki) -> None:
    assert error_of(settings(cert_file=str(pki.service.cert))) == (
        "tls_cert_file is set but tls_key_file (ZAQAR_TLS_KEY_FILE) is not: set both, or neither"
    )
    assert error_of(settings(key_file=str(pki.service.key), ca_file=str(pki.ca))) == (
        "tls_key_file is set but tls_cert_file (ZAQAR_TLS_CERT_FILE) is not: set both, or "
        "neither"
    )


def test_mutual_tls_needs_all_three_files(pki: Pki) -> None:
    no_ca = settings(cert_file=str(pki.service.cert), key_file=str(pki.service.key),
                     require_client_cert=True)
    assert error_of(no_ca) == (
        "tls_require_client_cert needs tls_cert_file, tls_key_file and tls_ca_file "
        "(the CA that signs the clients' certificates)"
    )
    assert error_of(settings(require_client_cert=True)) == (
        "tls_require_client_cert is set but TLS is off: set tls_cert_file, tls_key_file and "
        "tls_ca_file"
    )
    assert error_of(settings(server_name="x")).startswith("tls_server_name is set but TLS is off")


def test_unreadable_and_non_pem_files(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    assert error_of(settings(cert_file=str(missing), key_file=str(pki.service.key))) == (
        f"tls_cert_file (ZAQAR_TLS_CERT_FILE): cannot read {missing}: No such file or directory"
    )
    garbage = tmp_path / "ca.txt"
    garbage.write_text("not a certificate\n")
    assert error_of(settings(cert_file=str(pki.service.cert), key_file=str(pki.service.key),
                             ca_file=str(garbage))) == (
        f"tls_ca_file (ZAQAR_TLS_CA_FILE): {garbage} holds no PEM certificate"
    )


def test_a_key_of_another_certificate_is_refused_at_start(pki: Pki) -> None:
    message = error_of(settings(cert_file=str(pki.service.cert), key_file=str(pki.client.key)))
    assert message.startswith(
        f"tls_cert_file / tls_key_file ({pki.service.cert}, {pki.client.key}): not a "
        "certificate and its private key: key values mismatch"
    )


def test_files_swapped_or_encrypted_are_refused_at_start(pki: Pki, tmp_path: Path) -> None:
    key, cert = str(pki.service.key), str(pki.service.cert)
    assert error_of(settings(cert_file=key, key_file=key)) == (
        f"tls_cert_file (ZAQAR_TLS_CERT_FILE): {key} holds no PEM certificate"
    )
    assert error_of(settings(cert_file=cert, key_file=cert)) == (
        f"tls_key_file (ZAQAR_TLS_KEY_FILE): {cert} holds no PEM private key"
    )
    assert error_of(settings(cert_file=cert, key_file=key, ca_file=key)) == (
        f"tls_ca_file (ZAQAR_TLS_CA_FILE): {key} holds no PEM certificate"
    )
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        serialization.load_pem_private_key(pki.service.key.read_bytes(), None).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    assert error_of(settings(cert_file=cert, key_file=str(encrypted))) == (
        f"tls_key_file (ZAQAR_TLS_KEY_FILE): {encrypted} is encrypted; gRPC needs an "
        "unencrypted key"
    )


@pytest.mark.parametrize("command", [["up"], ["serve", "queue"]])
def test_the_command_says_what_is_wrong_in_one_line(
    command: list[str], pki: Pki, tmp_path: Path
) -> None:
    # Given a certificate without its key
    env = {**os.environ, "ZAQAR_TLS_CERT_FILE": str(pki.service.cert),
           "ZAQAR_DATA_DIR": str(tmp_path), "ZAQAR_QUEUE_PORT": "0"}
    # When zaqar-grpc starts
    result = subprocess.run([sys.executable, "-m", "services.cli", *command], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    # Then it exits 2 with one line saying which setting is missing, and starts nothing
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        "zaqar-grpc: configuration error: tls_cert_file is set but tls_key_file "
        "(ZAQAR_TLS_KEY_FILE) is not: set both, or neither\n"
    )


# Rotation: the files looked at again --------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rotate(path: Path, source: Path) -> None:
    """Replace ``path`` by a copy of ``source`` at once, as a rotation does (a new file)."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_bytes(source.read_bytes())
    os.replace(fresh, path)


@pytest.fixture
def files(pki: Pki, tmp_path: Path) -> dict[str, Path]:
    """Copies of the service's certificate, key and CA, to rotate."""
    copies = {"cert": tmp_path / "tls.crt", "key": tmp_path / "tls.key", "ca": tmp_path / "ca.crt"}
    for name, source in (("cert", pki.service.cert), ("key", pki.service.key), ("ca", pki.ca)):
        rotate(copies[name], source)
    return copies


def watched(files: dict[str, Path], interval: float = 10.0) -> tuple[Tls, Clock]:
    s = settings(cert_file=str(files["cert"]), key_file=str(files["key"]),
                 ca_file=str(files["ca"]), reload_interval=interval)
    tls = load_tls(s)
    assert tls is not None
    clock = Clock()
    return Tls(tls.material, s, clock=clock), clock


def test_rotated_files_are_taken_once_the_interval_has_passed(
    files: dict[str, Path], pki: Pki
) -> None:
    tls, clock = watched(files)
    rotate(files["cert"], pki.stranger.cert)
    rotate(files["key"], pki.stranger.key)
    rotate(files["ca"], pki.other_ca)
    # Not before the interval
    clock.now += 9.9
    assert not tls.due() and not tls.refresh()
    assert (tls.generation, tls.certificate_chain) == (0, pki.service.cert.read_bytes())
    # Then all three at once, as one new generation
    clock.now += 0.1
    assert tls.due() and tls.refresh()
    assert tls.generation == 1
    assert (tls.certificate_chain, tls.private_key, tls.root_certificates) == (
        pki.stranger.cert.read_bytes(), pki.stranger.key.read_bytes(), pki.other_ca.read_bytes()
    )
    # And the next look finds nothing new
    assert not tls.due()
    clock.now += 10
    assert not tls.refresh() and tls.generation == 1


def test_files_written_again_with_the_same_bytes_are_no_new_generation(
    files: dict[str, Path], pki: Pki
) -> None:
    tls, clock = watched(files)
    rotate(files["cert"], pki.service.cert)
    clock.now += 10
    assert not tls.refresh() and tls.generation == 0


def test_a_rotation_seen_half_done_keeps_the_material_in_use_and_says_so_once(
    files: dict[str, Path], pki: Pki, caplog: pytest.LogCaptureFixture,
) -> None:
    tls, clock = watched(files)
    # Given a new certificate whose key is not there yet
    rotate(files["cert"], pki.stranger.cert)
    for _ in range(3):
        clock.now += 10
        with caplog.at_level(logging.WARNING, logger="services.common.tls"):
            assert not tls.refresh()
    # Then the old material stays in use, and one warning says why; the gauge says it too
    assert (tls.generation, tls.certificate_chain) == (0, pki.service.cert.read_bytes())
    assert files_gauges("tls") == (0, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "TLS files changed but cannot be used; going on with those in use: tls_cert_file / "
        f"tls_key_file ({files['cert']}, {files['key']}): not a certificate and its private "
        "key: key values mismatch"
    )
    # When its key comes, both are taken
    rotate(files["key"], pki.stranger.key)
    clock.now += 10
    assert tls.refresh()
    assert (tls.generation, tls.certificate_chain, tls.private_key) == (
        1, pki.stranger.cert.read_bytes(), pki.stranger.key.read_bytes()
    )
    assert files_gauges("tls") == (1, 0)


def test_files_put_back_as_they_were_are_refused_no_more(
    files: dict[str, Path], pki: Pki
) -> None:
    tls, clock = watched(files)
    original = files["cert"].read_bytes()
    rotate(files["cert"], pki.stranger.cert)
    clock.now += 10
    assert not tls.refresh()
    assert files_gauges("tls") == (0, 1)
    # The operator puts the old certificate back: nothing is refused any more
    files["cert"].write_bytes(original)
    clock.now += 10
    assert not tls.refresh()
    assert files_gauges("tls") == (0, 0) and tls.generation == 0


def files_gauges(files: str) -> tuple[float | None, float | None]:
    """(``zaqar_files_generation``, ``zaqar_files_refused``) of ``files``."""
    return (REGISTRY.get_sample_value("zaqar_files_generation", {"files": files}),
            REGISTRY.get_sample_value("zaqar_files_refused", {"files": files}))


def test_a_file_gone_keeps_the_material_in_use(files: dict[str, Path]) -> None:
    tls, clock = watched(files)
    before = tls.material
    files["ca"].unlink()
    clock.now += 10
    assert not tls.refresh()
    assert tls.material is before and tls.generation == 0


def test_an_interval_of_zero_never_looks(files: dict[str, Path], pki: Pki) -> None:
    tls, clock = watched(files, interval=0)
    rotate(files["cert"], pki.stranger.cert)
    rotate(files["key"], pki.stranger.key)
    clock.now += 1e9
    assert not tls.due() and not tls.refresh()
    assert tls.generation == 0


@pytest.mark.parametrize("interval", [-1.0, float("nan")])
def test_the_reload_interval_is_checked(interval: float, pki: Pki) -> None:
    assert error_of(settings(reload_interval=interval)) == (
        f"tls_reload_interval (ZAQAR_TLS_RELOAD_INTERVAL={interval}): seconds between looks at "
        "the TLS files, 0 or more (0 = never)"
    )
