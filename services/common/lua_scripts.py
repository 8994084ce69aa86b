"""The text of a Redis store's Lua script: the definitions of the store's shared file that the
script uses, then the script itself.

Redis runs a script's whole text on every call, so every definition a script carries costs
every call (a closure or a table built, ~0.2 µs each; all 21 of the message store's
``lib.lua``: ~4 µs a call, about a quarter of what a post costs Redis). A script therefore carries
only the top-level definitions of the shared file that its code names, and those that theirs
name in turn, in the shared file's order (a definition only uses those above it).

The shared file is cut before each line that starts with ``local`` (with the comment lines
right above it), so it may hold only comments (the first lines: the key layout), top-level
``local`` definitions, and what continues them: indented lines, and ``end``, ``}`` or ``})``
at the start of a line. Anything else at the start of a line is refused (:class:`ValueError`):
a statement there would run only in the scripts that happen to carry the definition above it.
"""

from __future__ import annotations

import re
from importlib.abc import Traversable

# A top-level definition, with the comment lines right above it: ``local function name(`` or
# ``local a, b =``.
_DEFINITION = re.compile(r"^(?:--[^\n]*\n)*local (?:function )?([\w, ]+?)\s*[(=]", re.M)
_COMMENT = re.compile(r"--[^\n]*")
_WORD = re.compile(r"[A-Za-z_]\w*")
_CONTINUING = ("end", "}", "})")

Definition = tuple[frozenset[str], str]


def definitions(shared: str) -> list[Definition]:
    """``shared`` cut before each top-level ``local`` (and its comment): (the names it
    defines, its text) in order. The text before the first (comments) defines nothing."""
    starts = [m.start() for m in _DEFINITION.finditer(shared)]
    head = shared[: starts[0]] if starts else shared
    if any(line.strip() and not line.startswith("--") for line in head.splitlines()):
        raise ValueError("the shared Lua file has code before its first top-level local")
    parts = []
    for start, end in zip(starts, [*starts[1:], len(shared)], strict=True):
        text = shared[start:end]
        names = _DEFINITION.match(text)
        assert names is not None
        # The lines after the ``local`` one (the match ends on it).
        for line in text[names.end():].splitlines()[1:]:
            if line[:1] not in ("", " ", "\t", "-") and line.rstrip() not in _CONTINUING:
                raise ValueError(f"the shared Lua file has a top-level statement: {line!r}")
        parts.append((frozenset(n.strip() for n in names[1].split(",")), text))
    return parts


def names(lua: str) -> set[str]:
    """The words of ``lua``'s code, comments left out."""
    return set(_WORD.findall(_COMMENT.sub("", lua)))


def script_source(folder: Traversable, shared: str, name: str) -> str:
    """Script ``<name>.lua`` of ``folder``, after what it uses of ``<shared>.lua``."""
    body = folder.joinpath(f"{name}.lua").read_text("utf-8")
    parts = definitions(folder.joinpath(f"{shared}.lua").read_text("utf-8"))
    words = names(body)
    used: set[int] = set()
    grew = True
    while grew:
        grew = False
        for i, (defined, text) in enumerate(parts):
            if i not in used and defined & words:
                used.add(i)
                words |= names(text)
                grew = True
    return "".join(text for i, (_, text) in enumerate(parts) if i in used) + body
