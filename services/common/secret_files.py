"""Secrets read again from their files while a process runs.

A secret setting may be read from the file ``ZAQAR_<NAME>_FILE`` names (``config.py``), as
Kubernetes mounts a Secret; the kubelet updates such a file in place when the Secret changes.
For the secrets a process can take anew without a restart (the pre-signed URL secrets, the
message encryption keys), the process looks at their files every ``secret_reload_interval``
seconds (10; 0: never) and hands new content to its ``apply`` callback, which checks it and
takes it, or raises ``ConfigurationError``: then the values in use stay, and the refusal is
logged once for that content. A pre-signed URL secret's file absent from its folder is an
empty value (``config.ABSENT_IS_EMPTY``), so a mounted optional Secret may come and go. A
secret set in the environment, a config file or on the command line has no file and is never
looked at again.

The logs name the files, never their content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping

from services.common.config import (
    ABSENT_IS_EMPTY,
    ENV_PREFIX,
    ConfigurationError,
    Settings,
    read_secret,
)
from services.common.metrics import FILES_GENERATION, FILES_REFUSED

log = logging.getLogger(__name__)

Apply = Callable[[Mapping[str, str]], None]
"""Takes new values (setting name -> content) or raises ``ConfigurationError``."""


def variable(name: str) -> str:
    """``ZAQAR_<NAME>_FILE``, the variable naming the file of setting ``name``."""
    return f"{ENV_PREFIX}{name.upper()}_FILE"


def check_interval(settings: Settings) -> None:
    """Raises ConfigurationError for a ``secret_reload_interval`` that is not a number of
    seconds ≥ 0."""
    interval = settings.secret_reload_interval
    if not (interval >= 0 and math.isfinite(interval)):  # NaN fails the first test
        raise ConfigurationError(
            f"secret_reload_interval ({ENV_PREFIX}SECRET_RELOAD_INTERVAL={interval}): seconds "
            "between looks at the secret files, 0 or more"
        )


class SecretFiles:
    """The files of some secret settings, looked at every interval (module docstring)."""

    def __init__(
        self,
        paths: Mapping[str, str],
        values: Mapping[str, str],
        apply: Apply,
        interval: float,
    ) -> None:
        """``paths``: setting name -> file; ``values``: what the process uses now (read at
        start); ``apply``: see :data:`Apply`."""
        self.paths = dict(paths)
        self.generation = 0
        self._values = {name: values[name] for name in self.paths}
        self._apply = apply
        self._interval = interval
        self._refused: dict[str, str] | None = None
        self._unreadable = ""
        self._watcher: asyncio.Task[None] | None = None
        FILES_GENERATION.labels("secrets").set(0)
        FILES_REFUSED.labels("secrets").set(0)

    @classmethod
    def of(
        cls,
        settings: Settings,
        names: Iterable[str],
        apply: Apply,
        environ: Mapping[str, str] | None = None,
    ) -> SecretFiles | None:
        """The files of ``names`` that ``environ`` (the process's) names; None when there is
        none, or ``secret_reload_interval`` is 0.

        Raises:
            ConfigurationError: as :func:`check_interval`.
        """
        check_interval(settings)
        environ = os.environ if environ is None else environ
        paths = {name: environ[variable(name)] for name in names if variable(name) in environ}
        if not paths or settings.secret_reload_interval == 0:
            return None
        values = {name: getattr(settings, name) for name in paths}
        return cls(paths, values, apply, settings.secret_reload_interval)

    def read(self) -> dict[str, str] | None:
        """The files' content now: None when one cannot be read (logged once per reason) or
        changed while they were read (the next look reads them again). Blocking: call it off
        the event loop."""
        try:
            first = self._read_all()
            if self._read_all() != first:
                return None
        except ConfigurationError as exc:
            if str(exc) != self._unreadable:
                self._unreadable = str(exc)
                FILES_REFUSED.labels("secrets").set(1)
                log.warning("secret files: %s; going on with the values in use", exc)
            return None
        if self._unreadable:
            self._unreadable = ""
            if self._refused is None:
                FILES_REFUSED.labels("secrets").set(0)
        return first

    def _read_all(self) -> dict[str, str]:
        return {name: read_secret(variable(name), path, absent_is_empty=name in ABSENT_IS_EMPTY)
                for name, path in self.paths.items()}

    def take(self, values: Mapping[str, str]) -> bool:
        """Hand ``values`` to ``apply`` when they differ from those in use (and from the last
        ones refused); whether they were taken. On the event loop."""
        values = dict(values)
        if values == self._values and self._refused is not None:
            self._refused = None  # put back as they were: nothing is refused any more
            FILES_REFUSED.labels("secrets").set(0)
        if values == self._values or values == self._refused:
            return False
        changed = sorted(variable(name) for name in values if values[name] != self._values[name])
        try:
            self._apply(values)
        except ConfigurationError as exc:
            self._refused = values
            FILES_REFUSED.labels("secrets").set(1)
            log.warning("secret files changed (%s) but cannot be used; going on with the "
                        "values in use: %s", ", ".join(changed), exc)
            return False
        self._values, self._refused = values, None
        self.generation += 1
        FILES_GENERATION.labels("secrets").set(self.generation)
        FILES_REFUSED.labels("secrets").set(0)
        log.info("secret files reloaded (generation %d): %s", self.generation,
                 ", ".join(changed))
        return True

    async def look(self) -> bool:
        """Read the files and take what changed; whether anything was taken."""
        values = await asyncio.to_thread(self.read)
        return values is not None and self.take(values)

    def watch(self) -> None:
        """Look every interval from now on, in the background of the running event loop."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="secret-files-watch"
            )

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.look()
            except Exception:  # look handles what it expects; keep watching regardless
                log.exception("looking at the secret files failed")

    async def close(self) -> None:
        """Stop looking."""
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
