"""TLS and mutual TLS on the gRPC channels between services, from the ``tls_*`` settings.

TLS is on when ``tls_cert_file`` (with ``tls_key_file``) or ``tls_ca_file`` is set:

* a service's gRPC server then listens with TLS only, so a plaintext client is refused;
  with ``tls_require_client_cert`` it also refuses clients without a certificate signed by
  ``tls_ca_file`` (mutual TLS);
* every channel a process opens to another service uses TLS, verifies the server against
  ``tls_ca_file`` (gRPC's default roots when unset) and presents ``tls_cert_file`` as its
  client certificate when one is set.

The files are read and checked at start-up (:func:`load_tls`), and again when they change
(rotated certificates), every ``tls_reload_interval`` seconds (:meth:`Tls.watch`, in the
background of the event loop): a :class:`Tls` holds the material in use, servers ask it for
the newest at each handshake (:meth:`Tls.server_credentials`), and channels reopen on it
(:class:`~services.common.tls_channel.ReloadingChannel`). Only a set of files that checks
replaces the material in use (docs/architecture.md, "TLS between services").
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from services.common.config import ENV_PREFIX, ConfigurationError, Settings
from services.common.metrics import FILES_GENERATION, FILES_REFUSED

log = logging.getLogger(__name__)

_Identity = tuple[tuple[int, int, int, int] | None, ...]


@dataclass(frozen=True, slots=True)
class Material:
    """The PEM bytes of one generation of a process's TLS files."""

    certificate_chain: bytes | None
    """This process's certificate (chain): served, and presented to servers that ask."""
    private_key: bytes | None
    root_certificates: bytes | None
    """CA certificates that verify peers; None = gRPC's default roots (servers only)."""


class Tls:
    """A process's TLS settings and the material in use, which :meth:`refresh` replaces when
    the files change (module docstring).

    Args:
        material: what the files held when they were read at start.
        settings: the ``tls_*`` settings (the files, and how often to look at them again).
        clock: seconds, for the interval between looks (tests pass their own).
    """

    def __init__(
        self,
        material: Material,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.material = material
        self.generation = 0
        """Raised each time new material replaces the old."""
        self.require_client_cert = settings.tls_require_client_cert
        self.server_name = settings.tls_server_name
        self._settings = settings
        self._interval = settings.tls_reload_interval
        self._clock = clock
        self._identity = _identity(settings)
        self._refused: _Identity | None = None  # files logged as not usable, until they change
        FILES_GENERATION.labels("tls").set(0)
        FILES_REFUSED.labels("tls").set(0)
        self._next_look = clock() + self._interval
        self._looking = threading.Lock()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def certificate_chain(self) -> bytes | None:
        return self.material.certificate_chain

    @property
    def private_key(self) -> bytes | None:
        return self.material.private_key

    @property
    def root_certificates(self) -> bytes | None:
        return self.material.root_certificates

    def watch(self) -> None:
        """Look at the files every interval from now on, in the background of the running
        event loop (one watcher per loop; nothing with an interval of 0 or outside a loop)."""
        if self._interval <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = self._watcher
        if task is None or task.done() or task.get_loop() is not loop:
            self._watcher = loop.create_task(self._watch(), name="tls-watch")

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._next_look - self._clock(), 0.0))
            try:
                await loop.run_in_executor(None, self.refresh)
            except Exception:  # refresh handles what it expects; keep watching regardless
                log.exception("looking at the TLS files failed")
            if self._next_look <= self._clock():  # another look holds the lock: wait it out
                await asyncio.sleep(self._interval)

    def due(self) -> bool:
        """Whether it is time to look at the files again (never with an interval of 0)."""
        return self._interval > 0 and self._clock() >= self._next_look

    def refresh(self) -> bool:
        """Look at the files if it is time; when one changed and all of them check, take them
        as the new material. Whether the material changed. Blocking (file system): call it off
        the event loop. Thread-safe; a call while another looks returns False at once."""
        if not self.due() or not self._looking.acquire(blocking=False):
            return False
        try:
            self._next_look = self._clock() + self._interval
            identity = _identity(self._settings)
            if identity == self._identity and self._refused is not None:
                self._refused = None  # put back as they were: nothing is refused any more
                FILES_REFUSED.labels("tls").set(0)
            if identity == self._identity or identity == self._refused:
                return False
            try:
                material = _load(self._settings)
            except ConfigurationError as exc:
                if _identity(self._settings) == identity:  # else: still being written
                    self._refused = identity
                    FILES_REFUSED.labels("tls").set(1)
                    log.warning("TLS files changed but cannot be used; going on with those "
                                "in use: %s", exc)
                return False
            if _identity(self._settings) != identity:
                return False  # changed while read (the check reads them again): next look
            self._identity, self._refused = identity, None
            FILES_REFUSED.labels("tls").set(0)
            if material == self.material:
                return False
            self.material = material
            self.generation += 1
            FILES_GENERATION.labels("tls").set(self.generation)
            log.info("TLS files reloaded (generation %d): new connections use them",
                     self.generation)
            return True
        finally:
            self._looking.release()

    def _server_configuration(self, material: Material) -> Any:
        assert material.certificate_chain is not None and material.private_key is not None
        return grpc.ssl_server_certificate_configuration(
            [(material.private_key, material.certificate_chain)],
            root_certificates=material.root_certificates if self.require_client_cert else None,
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials of a gRPC server: TLS only, client certificates required by setting;
        each new connection gets the newest material (gRPC asks at its handshake).

        Raises:
            ConfigurationError: this process has no certificate and key to serve with.
        """
        material = self.material
        if material.certificate_chain is None or material.private_key is None:
            raise ConfigurationError(
                "TLS is on (tls_ca_file is set) but a gRPC server needs its own certificate: "
                f"set tls_cert_file and tls_key_file ({_env('tls_cert_file')}, "
                f"{_env('tls_key_file')})"
            )
        self.watch()
        served = [self.generation]

        def fetch() -> Any:
            # On one of gRPC's threads, at each handshake: None keeps what it has.
            if self.generation == served[0]:
                return None
            served[0] = self.generation
            return self._server_configuration(self.material)

        return grpc.dynamic_ssl_server_credentials(
            self._server_configuration(material), fetch,
            require_client_authentication=self.require_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Credentials of a channel to another service (with a client certificate if set),
        from the material in use."""
        material = self.material
        return grpc.ssl_channel_credentials(
            root_certificates=material.root_certificates,
            private_key=material.private_key,
            certificate_chain=material.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        if self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


def _identity(settings: Settings) -> _Identity:
    """Which files the settings name now (a rotation replaces them, or the links to them)."""
    found: list[tuple[int, int, int, int] | None] = []
    for path in (settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        found.append(None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(found)


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
    if not settings.tls_reload_interval >= 0:  # NaN too
        raise ConfigurationError(
            f"tls_reload_interval ({_env('tls_reload_interval')}="
            f"{settings.tls_reload_interval}): seconds between looks at the TLS files, 0 or "
            "more (0 = never)"
        )
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
    return Tls(_load(settings), settings)


def _load(settings: Settings) -> Material:
    """The files' material, read and checked (:func:`load_tls` has checked the settings)."""
    cert, key, ca = settings.tls_cert_file, settings.tls_key_file, settings.tls_ca_file
    material = Material(
        certificate_chain=_read("tls_cert_file", cert, _CERTIFICATE) if cert else None,
        private_key=_read("tls_key_file", key, _PRIVATE_KEY) if key else None,
        root_certificates=_read("tls_ca_file", ca, _CERTIFICATE) if ca else None,
    )
    _check(material, settings)
    return material


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


def _check(tls: Material, settings: Settings) -> None:
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
