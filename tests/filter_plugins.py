"""Message filters that only the tests install, as a real distribution.

:func:`install` writes the metadata of a distribution ``zaqar-grpc-test-filters`` (a
``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``) into a folder. With that
folder on ``sys.path`` (in-process tests) or ``PYTHONPATH`` (``zaqar-grpc up``'s processes),
``importlib.metadata`` finds the filters below in the ``zaqar_grpc.message_filters`` group, as
it finds any installed package's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson

from services.message_svc.filters import FilterContext, Message, MessageFilter

DISTRIBUTION = "zaqar-grpc-test-filters"
FILTERS = {
    "stamp": "Stamp",
    "redact": "Redact",
    "crash": "Crash",
    "crash_on_read": "CrashOnRead",
    "wrong_count": "WrongCount",
    "not_a_filter": "NotAFilter",
}
BROKEN = {"unimportable": "tests.no_such_module:Filter"}


class Stamp(MessageFilter):
    """Adds ``"stamp": "<operation>"`` to object bodies on post."""

    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        return [_with(m, stamp=context.operation) for m in messages]


class Redact(MessageFilter):
    """Shows ``"secret"`` of object bodies as ``"***"`` on the way out."""

    def on_read(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        out = []
        for m in messages:
            body = orjson.loads(m.body)
            if isinstance(body, dict) and "secret" in body:
                out.append(replace(m, body=orjson.dumps({**body, "secret": "***"})))
            else:
                out.append(m)
        return out


class Crash(MessageFilter):
    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        raise RuntimeError("crash filter crashed on post")


class CrashOnRead(MessageFilter):
    def on_read(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        raise RuntimeError("crash filter crashed on read")


class WrongCount(MessageFilter):
    """Drops the last message, which a filter may not do."""

    def on_post(self, context: FilterContext, messages: Sequence[Message]) -> Sequence[Message]:
        return list(messages)[:-1]


class NotAFilter:
    pass


def _with(message: Message, **fields: str) -> Message:
    body = orjson.loads(message.body)
    if not isinstance(body, dict):
        return message
    return replace(message, body=orjson.dumps({**body, **fields}))


def install(folder: Path, broken: bool = False) -> Path:
    """Write the distribution's metadata into ``folder`` (made if needed); ``broken`` adds a
    filter whose module does not exist. Returns ``folder``."""
    info = folder / f"{DISTRIBUTION.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 1.0\n"
    )
    entries = {name: f"{__name__}:{attribute}" for name, attribute in FILTERS.items()}
    if broken:
        entries.update(BROKEN)
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[zaqar_grpc.message_filters]\n{lines}")
    return folder
