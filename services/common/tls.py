"""TLS and mutual TLS on the gRPC channels between services, from the ``tls_*`` settings.

TLS is on when ``tls_cert_file`` (with ``tls_key_file``) or ``tls_ca_file`` is set:

* a service's gRPC server then listens with TLS only, so a plaintext client is refused;
  with ``tls_require_client_cert`` it also refuses clients without a certificate signed by
  ``tls_ca_file`` (mutual TLS);
* every channel a process opens to another service uses TLS, verifies the server against
  ``tls_ca_file`` (gRPC's default roots when unset) and presents ``tls_cert_file`` as its
  client certificate when one is set.

The files are read and checked once, at start-up (:func:`load_tls`); the PEM bytes are then
passed down to the server and channel factories in ``grpc_server.py``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.config import ENV_PREFIX, ConfigurationError, Settings


@dataclass(frozen=True, slots=True)
class Tls:
    """PEM material of one process, read at start-up."""

    certificate_chain: bytes | None
    """This process's certificate (chain): served, and presented to servers that ask."""
    private_key: bytes | None
    root_certificates: bytes | None
    """CA certificates that verify peers; None = gRPC's default roots (servers only)."""
    require_client_cert: bool
    server_name: str
    """Host name expected in servers' certificates instead of the target's host; "" = none."""

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a gRPC server: TLS only, client certificates required by setting.

        Raises:
            ConfigurationError: this process has no certificate and key to serve with.
        """
        if self.certificate_chain is None or self.private_key is None:
            raise ConfigurationError(
                "TLS is on (tls_ca_file is set) but a gRPC server needs its own certificate: "
                f"set tls_cert_file and tls_key_file ({_env('tls_cert_file')}, "
                f"{_env('tls_key_file')})"
            )
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates if self.require_client_cert else None,
            require_client_auth=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a channel to another service (with a client certificate if set)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def load_tls(settings: Settings, serving: bool = True) -> Tls | None:
    """The TLS material the settings name, or None when TLS is off.

    ``serving``: the process runs a gRPC server, so it needs a certificate and key when TLS
    is on (the gateway only opens channels, and may go with ``tls_ca_file`` alone).

    Blocking file reads: call once at start-up (off the event loop where one runs).

    Raises:
        ConfigurationError: the settings are incomplete or contradictory, a file cannot be
            read, holds no PEM material of its kind, the key is encrypted or does not belong
            to the certificate.
    """
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file
    if bool(cert) != bool(key):
        given, missing = ("tls_cert_file", "tls_key_file") if cert else (
            "tls_key_file", "tls_cert_file")
        raise ConfigurationError(
            f"{given} is set but {missing} ({_env(missing)}) is not: set both, or neither"
        )
    if not cert and not ca:
        if settings.tls_require_client_cert or settings.tls_server_name:
            name = "tls_require_client_cert" if settings.tls_require_client_cert else (
                "tls_server_name")
            raise ConfigurationError(
                f"{name} is set but TLS is off: set tls_cert_file, tls_key_file and tls_ca_file"
            )
        return None
    if settings.tls_require_client_cert and not (cert and ca):
        raise ConfigurationError(
            "tls_require_client_cert needs tls_cert_file, tls_key_file and tls_ca_file "
            "(the CA that signs the clients' certificates)"
        )
    if serving and not cert:
        raise ConfigurationError(
            "tls_ca_file is set, so TLS is on, but this service has no certificate to serve: "
            "set tls_cert_file and tls_key_file"
        )
    tls = Tls(
        certificate_chain=_read("tls_cert_file", cert, _CERTIFICATE) if cert else None,
        private_key=_read("tls_key_file", key, _PRIVATE_KEY) if key else None,
        root_certificates=_read("tls_ca_file", ca, _CERTIFICATE) if ca else None,
        require_client_cert=settings.tls_require_client_cert,
        server_name=settings.tls_server_name,
    )
    _check(tls, settings)
    return tls


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


# (what a PEM file of that kind contains, what to call it in an error)
_CERTIFICATE = (b"-----BEGIN CERTIFICATE-----", "PEM certificate")
_PRIVATE_KEY = (b"PRIVATE KEY-----", "PEM private key")


def _read(name: str, path: str, expected: tuple[bytes, str]) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigurationError(
            f"{name} ({_env(name)}): cannot read {path}: {exc.strerror or exc}"
        ) from None
    marker, what = expected
    if marker not in data:
        raise ConfigurationError(f"{name} ({_env(name)}): {path} holds no {what}")
    if expected is _PRIVATE_KEY and b"ENCRYPTED" in data:
        raise ConfigurationError(
            f"{name} ({_env(name)}): {path} is encrypted; gRPC needs an unencrypted key"
        )
    return data


def _check(tls: Tls, settings: Settings) -> None:
    """Let OpenSSL parse the material now, so that a bad file is a clear start-up error
    rather than failed handshakes later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.root_certificates is not None:
        try:
            context.load_verify_locations(cadata=tls.root_certificates.decode("ascii"))
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"tls_ca_file ({_env('tls_ca_file')}): {settings.tls_ca_file}: not a usable "
                f"CA certificate: {_reason(exc)}"
            ) from None
    if tls.certificate_chain is not None:
        try:
            # The password callback keeps OpenSSL from ever prompting on the terminal.
            context.load_cert_chain(
                settings.tls_cert_file, settings.tls_key_file, password=lambda: b""
            )
        except (ssl.SSLError, OSError) as exc:
            raise ConfigurationError(
                f"tls_cert_file / tls_key_file ({settings.tls_cert_file}, "
                f"{settings.tls_key_file}): not a certificate and its private key: "
                f"{_reason(exc)}"
            ) from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc)
