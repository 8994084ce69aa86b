"""Secrets read again from their files while a process runs.

A secret setting may be read from the file ``ZAQAR_<NAME>_FILE`` names (``config.py``), as
Kubernetes mounts a Secret; the kubelet updates such a file in place when the Secret changes.
For the secrets a process can take anew without a restart (the pre-signed URL secrets, the
message encryption keys, the Keystone and SMTP passwords), the process looks at their files
every ``secret_reload_interval`` seconds (10; 0: never) and hands new content to the
``apply`` callback of the part the setting belongs to (its signing keys, its Keystone
client…), which checks it and takes it, or raises ``ConfigurationError``: then that part's
values in use stay, and the refusal is logged once for that content; the other parts take
theirs. A pre-signed URL secret's file absent from its folder is an empty value
(``config.ABSENT_IS_EMPTY``), so a mounted optional Secret may come and go. A secret set in
the environment, a config file or on the command line has no file and is never looked at
again.

The logs name the files, never their content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

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

Part = tuple[Sequence[str], Apply]
"""Some secret settings and the ``apply`` that takes them. A process's secrets may belong to
several parts (its signing keys, its Keystone client…), each taking its own."""


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


class _Taker:
    """One part's settings read from files, the values it uses, and the last it refused."""

    def __init__(self, names: Sequence[str], apply: Apply, values: Mapping[str, str]) -> None:
        self.names = tuple(names)
        self.apply = apply
        self.values = {name: values[name] for name in self.names}
        self.refused: dict[str, str] | None = None

    def take(self, values: Mapping[str, str]) -> list[str]:
        """The variables whose files changed, when ``apply`` took this part's ``values``;
        empty when nothing was taken."""
        mine = {name: values[name] for name in self.names}
        if mine == self.values:
            self.refused = None  # put back as they were: nothing is refused any more
            return []
        if mine == self.refused:
            return []
        changed = sorted(variable(name) for name in mine if mine[name] != self.values[name])
        try:
            self.apply(mine)
        except ConfigurationError as exc:
            self.refused = mine
            log.warning("secret files changed (%s) but cannot be used; going on with the "
                        "values in use: %s", ", ".join(changed), exc)
            return []
        self.values, self.refused = mine, None
        return changed


class SecretFiles:
    """The files of some secret settings, looked at every interval (module docstring)."""

    def __init__(
        self,
        paths: Mapping[str, str],
        values: Mapping[str, str],
        parts: Iterable[Part],
        interval: float,
    ) -> None:
        """``paths``: setting name -> file; ``values``: what the process uses now (read at
        start); ``parts``: which ``apply`` takes which of them (a setting without a file is
        left out of its part)."""
        self.paths = dict(paths)
        self.generation = 0
        takers = (_Taker([name for name in names if name in self.paths], apply, values)
                  for names, apply in parts)
        self._takers = [taker for taker in takers if taker.names]
        self._interval = interval
        self._unreadable = ""
        self._watcher: asyncio.Task[None] | None = None
        FILES_GENERATION.labels("secrets").set(0)
        FILES_REFUSED.labels("secrets").set(0)

    @classmethod
    def of(
        cls,
        settings: Settings,
        parts: Iterable[Part],
        environ: Mapping[str, str] | None = None,
    ) -> SecretFiles | None:
        """The files of the parts' settings that ``environ`` (the process's) names; None when
        there is none, or ``secret_reload_interval`` is 0. Each part takes the new content
        of its own settings: one that refuses leaves the others to take theirs.

        Raises:
            ConfigurationError: as :func:`check_interval`.
        """
        check_interval(settings)
        environ = os.environ if environ is None else environ
        parts = list(parts)
        paths = {name: environ[variable(name)]
                 for names, _ in parts for name in names if variable(name) in environ}
        if not paths or settings.secret_reload_interval == 0:
            return None
        values = {name: getattr(settings, name) for name in paths}
        return cls(paths, values, parts, settings.secret_reload_interval)

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
            if not self._refusing():
                FILES_REFUSED.labels("secrets").set(0)
        return first

    def _read_all(self) -> dict[str, str]:
        return {name: read_secret(variable(name), path, absent_is_empty=name in ABSENT_IS_EMPTY)
                for name, path in self.paths.items()}

    def take(self, values: Mapping[str, str]) -> bool:
        """Hand each part its ``values`` that differ from those it uses (and from the last it
        refused); whether any part took new ones. On the event loop."""
        changed: list[str] = []
        for taker in self._takers:
            changed += taker.take(values)
        FILES_REFUSED.labels("secrets").set(1 if self._refusing() or self._unreadable else 0)
        if not changed:
            return False
        self.generation += 1
        FILES_GENERATION.labels("secrets").set(self.generation)
        log.info("secret files reloaded (generation %d): %s", self.generation,
                 ", ".join(sorted(changed)))
        return True

    def _refusing(self) -> bool:
        return any(taker.refused is not None for taker in self._takers)

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
