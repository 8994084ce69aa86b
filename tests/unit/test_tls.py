"""The ``tls_*`` settings: what turns TLS on, and one clear line for every bad combination."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from services.common.config import ConfigurationError, Settings
from services.common.tls import load_tls
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
