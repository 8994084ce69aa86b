"""Each Redis script carries the definitions of its store's shared Lua file that it uses, and
only those (``services/common/lua_scripts.py``); the contract tests run every script on a real
Redis."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from services.common.lua_scripts import definitions, script_source
from services.message_svc.storage.redis import _scripts
from services.message_svc.storage.redis._scripts import NAMES, source
from services.notifier_svc.storage.redis import store as notifier_store

MESSAGE = resources.files(_scripts.__package__).joinpath("scripts")
NOTIFIER = resources.files(notifier_store.__package__).joinpath("scripts")
STORES = {"message": (MESSAGE, "lib"), "notifier": (NOTIFIER, "_common")}
SCRIPTS = [
    ("message", name) for name in NAMES
] + [
    ("notifier", name) for name in notifier_store.SCRIPTS
]


def _words(lua: str) -> set[str]:
    """The words of the code, comments left out."""
    return set(re.findall(r"[A-Za-z_]\w*", re.sub(r"--[^\n]*", "", lua)))


def _shared(store: str) -> str:
    folder, shared = STORES[store]
    return folder.joinpath(f"{shared}.lua").read_text("utf-8")


@pytest.mark.parametrize("store", STORES)
def test_the_shared_file_is_cut_into_every_top_level_definition(store: str) -> None:
    shared = _shared(store)
    parts = definitions(shared)
    head = shared[: shared.index(parts[0][1])]
    # What comes before the first definition is left out of every script: comments only.
    assert head and all(not line.strip() or line.startswith("--") for line in head.splitlines())
    # Each part is its definition and the comment lines right above it, and they are all of
    # the rest.
    for _, text in parts:
        assert re.match(r"(--[^\n]*\n)*local ", text)
    assert "".join(text for _, text in parts) == shared[len(head):]
    defined = {name for names, _ in parts for name in names}
    assert set(re.findall(r"^local (?:function )?(\w+)", shared, re.M)) <= defined


@pytest.mark.parametrize(("store", "name"), SCRIPTS)
def test_a_script_carries_each_shared_name_it_uses_and_no_other(store: str, name: str) -> None:
    folder, shared = STORES[store]
    text = script_source(folder, shared, name)
    body = folder.joinpath(f"{name}.lua").read_text("utf-8")
    assert text.endswith(body)
    carried = text[: len(text) - len(body)]
    parts = definitions(_shared(store))
    by_name = {n: part for names, part in parts for n in names}
    for word in _words(text) & set(by_name):
        assert by_name[word] in carried, f"{name}.lua uses {word} but does not carry it"
    for names, part in parts:
        if part in carried:
            rest = body + carried.replace(part, "")
            assert names & _words(rest), f"{name}.lua carries {sorted(names)} unused"


def test_the_hot_paths_scripts_carry_a_few_definitions() -> None:
    parts = definitions(_shared("message"))

    def carried(name: str) -> set[str]:
        return {n for names, text in parts if text in source(name) for n in names}

    assert carried("post") == {"stale_version", "fair_index"}
    assert carried("delete") == {"INDEXES", "HELD_INDEXES", "fair_unindex", "remove_message",
                                 "settle_group", "fair_add", "fair_forget"}
    assert len(source("post")) < len(_shared("message")) / 3


@pytest.mark.parametrize("line", ["redis.replicate_commands()", "x = 1", "return 1"])
def test_a_top_level_statement_in_the_shared_file_is_refused(line: str) -> None:
    # It would run only in the scripts that carry the definition above it.
    shared = "-- header\nlocal A = 1\n" + line + "\nlocal function f()\n  return A\nend\n"
    with pytest.raises(ValueError, match="top-level statement"):
        definitions(shared)
    with pytest.raises(ValueError, match="before its first"):
        definitions(line + "\nlocal A = 1\n")
