"""Each Redis script carries the definitions of lib.lua it uses, and only those
(``_scripts.source``); the contract tests run every script on a real Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from services.message_svc.storage.redis import _scripts
from services.message_svc.storage.redis._scripts import NAMES, _definitions, source

LIB = resources.files(_scripts.__package__).joinpath("scripts", "lib.lua").read_text("utf-8")
DEFINED = {name: text for names, text in _definitions(LIB) for name in names}


def _words(lua: str) -> set[str]:
    """The words of the code, comments left out."""
    return set(re.findall(r"[A-Za-z_]\w*", re.sub(r"--[^\n]*", "", lua)))


def test_lib_is_cut_into_every_top_level_definition() -> None:
    parts = _definitions(LIB)
    head = LIB[: LIB.index(parts[0][1])]
    # What comes before the first definition is left out of every script: comments only.
    assert all(not line.strip() or line.startswith("--") for line in head.splitlines())
    # Each part is its definition and the comment lines right above it.
    for _, text in parts:
        assert re.match(r"(--[^\n]*\n)*local ", text)
    assert "".join(text for _, text in parts) == LIB[len(head):]
    top_level = set(re.findall(r"^local (?:function )?(\w+)", LIB, re.M))
    assert top_level <= set(DEFINED)
    assert {"read_message", "stale_version", "take_fair", "INDEXES", "GROUP"} <= set(DEFINED)


@pytest.mark.parametrize("name", NAMES)
def test_a_script_defines_each_lib_name_it_uses_before_its_body(name: str) -> None:
    text = source(name)
    body = resources.files(_scripts.__package__).joinpath("scripts", f"{name}.lua").read_text()
    assert text.endswith(body)
    carried = text[: len(text) - len(body)]
    for word in _words(text) & set(DEFINED):
        assert DEFINED[word] in carried, f"{name}.lua uses {word} but does not carry it"
    # And nothing it does not use: each carried definition is named by the script or by
    # another carried definition.
    for names, part in _definitions(LIB):
        if part in carried:
            rest = body + carried.replace(part, "")
            assert names & _words(rest), f"{name}.lua carries {sorted(names)} unused"


def test_scripts_carry_less_than_all_of_lib() -> None:
    # The hot path's posts and deletes carry a few definitions of lib each.
    carried = {n for names, text in _definitions(LIB) if text in source("post") for n in names}
    assert carried == {"stale_version", "fair_index"}
    assert len(source("post")) < len(LIB) / 3
    carried = {n for names, text in _definitions(LIB) if text in source("delete") for n in names}
    assert carried == {"INDEXES", "fair_unindex", "remove_message", "settle_group", "fair_add",
                       "fair_forget"}
