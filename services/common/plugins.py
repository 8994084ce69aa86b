"""Extensions from other packages, found by entry point.

A package extends zaqar-grpc by declaring entry points in one of :data:`GROUPS`, e.g. in its
``pyproject.toml``::

    [project.entry-points."zaqar_grpc.message_stores"]
    memory = "my_package.store:MemoryMessageStore"

The built-in backends and filters are declared the same way in zaqar-grpc's own
``pyproject.toml``, so they are found by the same code and have no special case. Finding a
plugin reads only the installed packages' metadata; a plugin is imported when it is used, and
a plugin that cannot be imported is one :class:`ConfigurationError` line that names the
package it comes from.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from typing import Any

from services.common.config import ConfigurationError

# kind -> entry point group
GROUPS: dict[str, str] = {
    "queue store": "zaqar_grpc.queue_stores",
    "message store": "zaqar_grpc.message_stores",
    "notifier store": "zaqar_grpc.notifier_stores",
    "message filter": "zaqar_grpc.message_filters",
}


@dataclass(frozen=True, slots=True)
class Plugin:
    """One entry point of one group: ``name`` (a URI scheme for stores, a filter's name) →
    ``target`` (``module:attribute``), from ``distribution`` at ``version``."""

    kind: str
    group: str
    name: str
    target: str
    distribution: str
    version: str


def _group(kind: str) -> str:
    try:
        return GROUPS[kind]
    except KeyError:
        raise ValueError(f"unknown plugin kind {kind!r} (known: {', '.join(GROUPS)})") from None


def entry_points(kind: str) -> dict[str, importlib.metadata.EntryPoint]:
    """The installed entry points of ``kind`` ("message store", ...), by name.

    When two packages declare one name, the first found wins, as Python's own lookup does;
    :func:`installed` lists both.
    """
    found: dict[str, importlib.metadata.EntryPoint] = {}
    for entry in importlib.metadata.entry_points(group=_group(kind)):
        found.setdefault(entry.name, entry)
    return found


def _distribution(entry: importlib.metadata.EntryPoint) -> tuple[str, str]:
    dist = entry.dist
    if dist is None:
        return "?", "?"
    return dist.metadata["Name"] or dist.name, dist.version


def load(kind: str, name: str) -> Any:
    """The object that plugin ``name`` of ``kind`` names, imported now.

    Raises:
        ConfigurationError: no installed package declares it (the message names those that
            are installed), or it cannot be imported (the message names its package).
    """
    entries = entry_points(kind)
    entry = entries.get(name)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigurationError(f"no {kind} named {name!r} is installed (installed: {known})")
    try:
        return entry.load()
    except Exception as exc:  # ImportError, or any error the plugin's module raises
        distribution, version = _distribution(entry)
        raise ConfigurationError(
            f"{kind} {name!r} from package {distribution} {version} cannot be loaded "
            f"({entry.value}: {type(exc).__name__}: {exc}){_install_hint(entry, exc)}"
        ) from exc


def _install_hint(entry: importlib.metadata.EntryPoint, exc: Exception) -> str:
    """``; install it, e.g. pip install '<requirement>'`` when ``exc`` is a module missing
    that the plugin's package requires (an optional driver left out), else ``""``."""
    missing = exc.name if isinstance(exc, ImportError) else None
    if not missing or entry.dist is None:
        return ""
    wanted = _normalize(missing.partition(".")[0])
    for requirement in entry.dist.requires or ():
        spec = requirement.partition(";")[0].strip()
        match = re.match(r"[A-Za-z0-9._-]+", spec)
        if match and _normalize(match.group()) == wanted:
            return f"; install it, e.g. pip install '{spec}'"
    return ""


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> list[Plugin]:
    """Every installed plugin of every group, sorted by kind and name."""
    plugins = []
    for kind, group in GROUPS.items():
        for entry in importlib.metadata.entry_points(group=group):
            distribution, version = _distribution(entry)
            plugins.append(Plugin(kind, group, entry.name, entry.value, distribution, version))
    return sorted(plugins, key=lambda p: (list(GROUPS).index(p.kind), p.name, p.distribution))
