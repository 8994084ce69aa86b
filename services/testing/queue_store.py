"""Contract of the queue store (``services/queue_svc/storage/base.py``), for any backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.common.errors import PatchConflict, QueueNotFound, QuotaExceeded, Unavailable
from services.queue_svc.storage.base import MetadataPatch, QueueRecord, QueueStore
from services.queue_svc.storage.registry import open_queue_store
from services.testing.fixtures import Clock


async def names(store: QueueStore, project: str, **kwargs: Any) -> list[str]:
    kwargs.setdefault("limit", 20)
    page = await store.list(project, **kwargs)
    return [q.name for q in page.queues]


class QueueStoreContract:
    """The contract suite: subclass it in a test module and provide the ``store_uri``
    fixture (``services/testing/__init__.py``)."""

    @pytest.fixture
    def clock(self) -> Clock:
        return Clock()

    @pytest.fixture
    async def queue_store(self, store_uri: str) -> AsyncIterator[QueueStore]:
        store = await open_queue_store(store_uri)
        yield store
        await store.close()

    async def test_create_new_queue_then_get_it(self, queue_store: QueueStore) -> None:
        # When a queue is created with metadata
        created = await queue_store.create("p", "q1", {"description": "demo", "n": 1})
        # Then it is new, exists, and reads back with its metadata
        assert created is True
        assert await queue_store.exists("p", "q1")
        record = await queue_store.get("p", "q1")
        assert record is not None
        assert (record.project, record.name) == ("p", "q1")
        assert dict(record.metadata) == {"description": "demo", "n": 1}

    async def test_a_queue_keeps_the_pool_it_was_created_on(self, queue_store: QueueStore) -> None:
        # Given queues created on pools, by create and by ensure, in two projects
        assert await queue_store.create("p", "q1", {"a": 1}, pool="a") is True
        assert (await queue_store.ensure("p", "q2", pool="a")).pool == "a"
        await queue_store.create("other", "q1", {}, pool="a")
        await queue_store.create("p", "q3", {}, pool="b")
        await queue_store.create("p", "plain", {})
        # Then each reads back with its pool, and the pool's queues are counted across projects
        record = await queue_store.get("p", "q1")
        assert record is not None and record.pool == "a"
        plain = await queue_store.get("p", "plain")
        assert plain is not None and plain.pool is None
        assert (await queue_store.count_on_pool("a"),
                await queue_store.count_on_pool("b")) == (3, 1)
        assert await queue_store.count_on_pool("nowhere") == 0
        # When existing queues are created, ensured or updated again (with another pool)
        assert await queue_store.create("p", "q1", {"b": 2}, pool="b") is False
        assert (await queue_store.ensure("p", "q2", pool="b")).pool == "a"
        updated = await queue_store.update_metadata("p", "q1", [MetadataPatch("add", "c", 3)])
        # Then they keep their pool, and the listing is not disturbed by it
        assert updated.pool == "a" and dict(updated.metadata) == {"b": 2, "c": 3}
        assert await queue_store.count_on_pool("a") == 3
        assert await names(queue_store, "p") == ["plain", "q1", "q2", "q3"]
        assert (await queue_store.list("p", limit=10, with_count=True)).count == 4
        # And a deleted queue takes its pool with it
        assert await queue_store.delete("p", "q1") is True
        assert await queue_store.count_on_pool("a") == 2
        await queue_store.create("p", "q1", {})
        again = await queue_store.get("p", "q1")
        assert again is not None and again.pool is None

    async def test_create_existing_queue_replaces_whole_metadata(
        self, queue_store: QueueStore
    ) -> None:
        # Given a queue with two keys
        await queue_store.create("p", "q1", {"a": 1, "b": 2})
        # When it is created again with other metadata
        created = await queue_store.create("p", "q1", {"c": 3})
        # Then it was not new, and the old keys are gone
        assert created is False
        record = await queue_store.get("p", "q1")
        assert record is not None and dict(record.metadata) == {"c": 3}

    async def test_create_with_empty_metadata(self, queue_store: QueueStore) -> None:
        assert await queue_store.create("p", "empty", {}) is True
        record = await queue_store.get("p", "empty")
        assert record is not None and dict(record.metadata) == {}

    async def test_absent_queue_is_none_and_does_not_exist(self, queue_store: QueueStore) -> None:
        assert await queue_store.get("p", "nope") is None
        assert await queue_store.exists("p", "nope") is False

    async def test_metadata_round_trips_values_and_key_order(self, queue_store: QueueStore) -> None:
        # Given metadata with every JSON type, nested values, unicode and a deliberate key order
        metadata = {
            "zeta": "last-alphabetically-first-stored",
            "_default_message_ttl": 120,
            "float": 1.5,
            "whole_float": 2.0,
            "big": 12345678901234567890,
            "flag": False,
            "nothing": None,
            "nested": {"b": [1, "two", {"three": 3}], "a": True},
            "unicode": "héllo ✓ 日本",
            "alpha": [],
        }
        await queue_store.create("p", "types", metadata)
        # Then it reads back equal, with the same key order and number types
        record = await queue_store.get("p", "types")
        assert record is not None
        assert list(record.metadata) == list(metadata)
        assert dict(record.metadata) == metadata
        assert isinstance(record.metadata["whole_float"], float)
        assert isinstance(record.metadata["_default_message_ttl"], int)
        assert record.metadata["big"] == 12345678901234567890

    async def test_concurrent_creates_report_exactly_one_new_queue(
        self, queue_store: QueueStore
    ) -> None:
        # When many callers create the same absent queue at once
        results = await asyncio.gather(
            *(queue_store.create("p", "race", {"writer": i}) for i in range(10))
        )
        # Then exactly one of them created it, and one writer's metadata won whole
        assert sorted(results) == [False] * 9 + [True]
        record = await queue_store.get("p", "race")
        assert record is not None and list(record.metadata) == ["writer"]

    async def test_a_quota_refuses_a_new_queue_beyond_it_and_nothing_else(
        self, queue_store: QueueStore
    ) -> None:
        # Given a project with as many queues as its quota, by create and by ensure
        assert await queue_store.create("p", "a", {"n": 1}, quota=2) is True
        assert (await queue_store.ensure("p", "b", quota=2)).name == "b"
        # When a third is created or ensured
        for attempt in (queue_store.create("p", "c", {}, quota=2),
                        queue_store.ensure("p", "c", quota=2)):
            with pytest.raises(QuotaExceeded) as refused:
                await attempt
            # Then it is refused, saying which project, how many and which setting
            assert refused.value.description.startswith(
                "Project p has 2 queues, the most it may have (ZAQAR_PROJECT_MAX_QUEUES)"
            )
        # And nothing of it was stored
        assert not await queue_store.exists("p", "c")
        assert await names(queue_store, "p") == ["a", "b"]
        # While the queues it has may still be replaced and ensured, and other projects and a
        # larger quota or none are not held back
        assert await queue_store.create("p", "a", {"n": 2}, quota=2) is False
        assert dict((await queue_store.ensure("p", "a", quota=2)).metadata) == {"n": 2}
        assert await queue_store.create("other", "c", {}, quota=2) is True
        assert await queue_store.create("p", "c", {}, quota=3) is True
        assert await queue_store.create("p", "d", {}) is True
        # And once queues are deleted, new ones fit again
        for name in ("c", "d"):
            assert await queue_store.delete("p", name)
        assert await queue_store.create("p", "e", {}, quota=3) is True

    async def test_concurrent_creates_at_a_quota_never_go_beyond_it(
        self, queue_store: QueueStore
    ) -> None:
        # Given a project two queues short of its quota
        await queue_store.create("p", "first", {})
        # When ten new queues are created and ensured at once
        results = await asyncio.gather(
            *(queue_store.create("p", f"c{i}", {}, quota=3) for i in range(5)),
            *(queue_store.ensure("p", f"e{i}", quota=3) for i in range(5)),
            return_exceptions=True,
        )
        # Then each call made its queue or was refused, and each queue made is there
        made = [r for r in results if not isinstance(r, QuotaExceeded)]
        assert all(r is True or isinstance(r, QueueRecord) for r in made), results
        assert len(await names(queue_store, "p")) == 1 + len(made)
        # And exactly two were made: the count and the insert are one atomic step
        assert len(made) == 2, results

    async def test_ensure_creates_absent_queue_with_empty_metadata(
        self, queue_store: QueueStore
    ) -> None:
        record = await queue_store.ensure("p", "auto")
        assert (record.name, dict(record.metadata)) == ("auto", {})
        assert await queue_store.exists("p", "auto")

    async def test_ensure_keeps_existing_metadata(self, queue_store: QueueStore) -> None:
        # Given a queue with metadata
        await queue_store.create("p", "kept", {"_default_message_ttl": 300})
        # When it is ensured
        record = await queue_store.ensure("p", "kept")
        # Then its metadata is untouched, and it was not created again
        assert dict(record.metadata) == {"_default_message_ttl": 300}
        assert await queue_store.create("p", "kept", {"_default_message_ttl": 300}) is False

    async def test_update_applies_add_replace_remove_and_persists(
        self, queue_store: QueueStore
    ) -> None:
        # Given a queue with keys a, b, c
        await queue_store.create("p", "q", {"a": 1, "b": 2, "c": 3})
        # When a, c are changed, b removed and d added
        record = await queue_store.update_metadata("p", "q", [
            MetadataPatch("replace", "a", 10),
            MetadataPatch("remove", "b"),
            MetadataPatch("add", "d", {"x": [1]}),
            MetadataPatch("add", "c", 30),
        ])
        # Then the result keeps replaced keys in place and adds new keys last, and is stored
        expected = {"a": 10, "c": 30, "d": {"x": [1]}}
        assert dict(record.metadata) == expected
        assert list(record.metadata) == ["a", "c", "d"]
        stored = await queue_store.get("p", "q")
        assert stored is not None and dict(stored.metadata) == expected
        assert list(stored.metadata) == ["a", "c", "d"]

    async def test_update_applies_operations_in_order(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {})
        # When a key is added, replaced, removed and added again in one update
        record = await queue_store.update_metadata("p", "q", [
            MetadataPatch("add", "k", 1),
            MetadataPatch("replace", "k", 2),
            MetadataPatch("remove", "k"),
            MetadataPatch("add", "k", 4),
            MetadataPatch("add", "other", None),
        ])
        # Then each operation saw the previous one's result
        assert dict(record.metadata) == {"k": 4, "other": None}

    @pytest.mark.parametrize("op", ["replace", "remove"])
    async def test_strict_patch_of_absent_key_conflicts_and_changes_nothing(
        self,
        queue_store: QueueStore, op: str
    ) -> None:
        # Given a queue with one key
        await queue_store.create("p", "q", {"keep": 1})
        # When an update adds a key and then replaces/removes a key that is not there
        with pytest.raises(PatchConflict) as caught:
            await queue_store.update_metadata("p", "q", [
                MetadataPatch("add", "added", 2),
                MetadataPatch(op, "missing", 3),  # type: ignore[arg-type]
            ])
        # Then it conflicts, naming the key, and the earlier add was not stored either
        assert caught.value.description == f"Can't {op} non-existent object missing."
        record = await queue_store.get("p", "q")
        assert record is not None and dict(record.metadata) == {"keep": 1}

    async def test_lenient_patch_of_absent_key_sets_or_ignores(
        self, queue_store: QueueStore
    ) -> None:
        await queue_store.create("p", "q", {"a": 1})
        # When non-strict replace/remove name keys that are not stored
        record = await queue_store.update_metadata("p", "q", [
            MetadataPatch("replace", "_default_message_ttl", 120, strict=False),
            MetadataPatch("remove", "_default_message_delay", strict=False),
        ])
        # Then the replace set the key and the remove did nothing
        assert dict(record.metadata) == {"a": 1, "_default_message_ttl": 120}

    async def test_lenient_remove_of_present_key_removes_it(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {"_default_message_ttl": 120, "a": 1})
        record = await queue_store.update_metadata(
            "p", "q", [MetadataPatch("remove", "_default_message_ttl", strict=False)]
        )
        assert dict(record.metadata) == {"a": 1}

    async def test_update_of_absent_queue_is_not_found(self, queue_store: QueueStore) -> None:
        with pytest.raises(QueueNotFound) as caught:
            await queue_store.update_metadata("p", "ghost", [MetadataPatch("add", "a", 1)])
        assert caught.value.description == "Queue ghost does not exist for project p"
        # And the update did not create it
        assert not await queue_store.exists("p", "ghost")

    async def test_update_check_sees_result_and_can_veto(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {"a": 1})
        seen: list[dict[str, Any]] = []

        class Veto(Exception):
            pass

        def check(metadata: Any) -> None:
            seen.append(dict(metadata))
            raise Veto

        # When the check rejects the patched metadata
        with pytest.raises(Veto):
            await queue_store.update_metadata("p", "q", [MetadataPatch("add", "b", 2)], check=check)
        # Then it saw the would-be result, and nothing was stored
        assert seen == [{"a": 1, "b": 2}]
        record = await queue_store.get("p", "q")
        assert record is not None and dict(record.metadata) == {"a": 1}

    async def test_concurrent_updates_lose_nothing(self, queue_store: QueueStore) -> None:
        # Given a queue
        await queue_store.create("p", "q", {})
        # When 20 updates each add their own key at once
        await asyncio.gather(*(
            queue_store.update_metadata("p", "q", [MetadataPatch("add", f"k{i}", i)])
            for i in range(20)
        ))
        # Then every key is there (each read-modify-write was atomic)
        record = await queue_store.get("p", "q")
        assert record is not None
        assert dict(record.metadata) == {f"k{i}": i for i in range(20)}

    async def test_cancelled_update_leaves_the_store_usable(self, queue_store: QueueStore) -> None:
        # Given an update whose caller gives up right away
        await queue_store.create("p", "q", {})
        task = asyncio.ensure_future(
            queue_store.update_metadata("p", "q", [MetadataPatch("add", "a", 1)])
        )
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Then later calls work, and the update either fully happened or not at all
        record = await queue_store.update_metadata("p", "q", [MetadataPatch("add", "b", 2)])
        assert dict(record.metadata) in ({"b": 2}, {"a": 1, "b": 2})

    async def test_delete_is_idempotent(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {"a": 1})
        # When the queue is deleted twice
        first = await queue_store.delete("p", "q")
        second = await queue_store.delete("p", "q")
        # Then only the first found it, and it is gone
        assert (first, second) == (True, False)
        assert await queue_store.get("p", "q") is None
        assert not await queue_store.exists("p", "q")
        assert await names(queue_store, "p") == []

    async def test_recreated_queue_starts_with_new_metadata(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {"old": True})
        await queue_store.delete("p", "q")
        assert await queue_store.create("p", "q", {"new": True}) is True
        record = await queue_store.get("p", "q")
        assert record is not None and dict(record.metadata) == {"new": True}

    async def test_list_is_sorted_by_name_in_code_point_order(
        self, queue_store: QueueStore
    ) -> None:
        # Given queues created out of order, with upper case, digits and punctuation
        for name in ["b", "a", "B", "a-1", "a.1", "a_1", "10", "9", "A"]:
            await queue_store.create("p", name, {})
        # Then they list in code point order (upper case before lower case, "10" before "9")
        assert await names(queue_store, "p") == sorted(
            ["b", "a", "B", "a-1", "a.1", "a_1", "10", "9", "A"]
        )
        assert await names(queue_store, "p") == ["10", "9", "A", "B", "a", "a-1", "a.1", "a_1", "b"]

    async def test_list_limit_and_exclusive_marker_page_through_everything(
        self,
        queue_store: QueueStore,
    ) -> None:
        # Given 7 queues
        all_names = [f"q{i}" for i in range(7)]
        for name in reversed(all_names):
            await queue_store.create("p", name, {"i": name})
        # When paging 3 at a time, each page starting after the previous page's last name
        pages, marker = [], ""
        while True:
            page = await queue_store.list("p", limit=3, marker=marker)
            if not page.queues:
                break
            pages.append([q.name for q in page.queues])
            marker = page.queues[-1].name
        # Then every queue appears exactly once, in order, 3 + 3 + 1
        assert pages == [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]

    async def test_list_returns_metadata_as_stored(self, queue_store: QueueStore) -> None:
        await queue_store.create("p", "q", {"b": 1, "a": 2})
        page = await queue_store.list("p", limit=1)
        assert [(q.project, q.name, list(q.metadata.items())) for q in page.queues] == [
            ("p", "q", [("b", 1), ("a", 2)])
        ]
        assert page.count is None

    async def test_list_marker_need_not_exist(self, queue_store: QueueStore) -> None:
        for name in ["apple", "banana", "cherry"]:
            await queue_store.create("p", name, {})
        assert await names(queue_store, "p", marker="b") == ["banana", "cherry"]
        assert await names(queue_store, "p", marker="banana") == ["cherry"]
        assert await names(queue_store, "p", marker="zzz") == []

    async def test_list_name_filter_is_a_literal_case_sensitive_substring(
        self,
        queue_store: QueueStore,
    ) -> None:
        for name in ["orders", "my-orders", "ORDERS", "order_s", "ordersx", "audit"]:
            await queue_store.create("p", name, {})
        assert await names(queue_store, "p", name_contains="orders") == [
            "my-orders", "orders", "ordersx"
        ]
        # "_" and "%" are no wildcards
        assert await names(queue_store, "p", name_contains="r_s") == ["order_s"]
        assert await names(queue_store, "p", name_contains="%") == []

    async def test_list_metadata_filters_compare_json_values(self, queue_store: QueueStore) -> None:
        # Given queues with values of different JSON types under the same keys
        await queue_store.create("p", "int5", {"v": 5, "color": "red"})
        await queue_store.create("p", "float5", {"v": 5.0})
        await queue_store.create("p", "str5", {"v": "5", "color": "blue"})
        await queue_store.create("p", "true", {"v": True})
        await queue_store.create("p", "one", {"v": 1})
        await queue_store.create("p", "null", {"v": None})
        await queue_store.create("p", "absent", {"other": 5})
        await queue_store.create("p", "obj", {"v": {"a": 1, "b": [1, 2]}})
        await queue_store.create("p", "arr", {"v": [1, "x"]})
        # Then numbers match by value, and no type matches another
        assert await names(queue_store, "p", metadata_filters={"v": 5}) == ["float5", "int5"]
        assert await names(queue_store, "p", metadata_filters={"v": 5.0}) == ["float5", "int5"]
        assert await names(queue_store, "p", metadata_filters={"v": "5"}) == ["str5"]
        assert await names(queue_store, "p", metadata_filters={"v": True}) == ["true"]
        assert await names(queue_store, "p", metadata_filters={"v": 1}) == ["one"]
        assert await names(queue_store, "p", metadata_filters={"v": False}) == []
        assert await names(queue_store, "p", metadata_filters={"v": None}) == ["null"]
        assert await names(queue_store, "p", metadata_filters={"v": {"a": 1, "b": [1, 2]}}) == [
            "obj"
        ]
        assert await names(queue_store, "p", metadata_filters={"v": [1, "x"]}) == ["arr"]
        assert await names(queue_store, "p", metadata_filters={"missing": None}) == []
        # And several filters must all hold
        assert await names(queue_store, "p", metadata_filters={"v": 5, "color": "red"}) == ["int5"]
        assert await names(queue_store, "p", metadata_filters={"v": 5, "color": "blue"}) == []

    async def test_list_filter_keys_are_matched_literally(self, queue_store: QueueStore) -> None:
        # Keys with characters that JSON paths treat specially are plain keys here
        await queue_store.create("p", "dots", {"a.b": 1, 'qu"ote': "x", "$": 2})
        await queue_store.create("p", "nested", {"a": {"b": 1}})
        assert await names(queue_store, "p", metadata_filters={"a.b": 1}) == ["dots"]
        assert await names(queue_store, "p", metadata_filters={'qu"ote': "x"}) == ["dots"]
        assert await names(queue_store, "p", metadata_filters={"$": 2}) == ["dots"]

    async def test_list_filters_match_whole_values_not_array_elements(
        self, queue_store: QueueStore
    ) -> None:
        # Given values that contain the filtered value inside an array or an object
        await queue_store.create("p", "scalar", {"v": 5})
        await queue_store.create("p", "array", {"v": [5]})
        await queue_store.create("p", "nested", {"v": [[1, "x"]]})
        await queue_store.create("p", "object", {"v": {"v": 5}})
        # Then only equal whole values match
        assert await names(queue_store, "p", metadata_filters={"v": 5}) == ["scalar"]
        assert await names(queue_store, "p", metadata_filters={"v": [1, "x"]}) == []
        assert await names(queue_store, "p", metadata_filters={"v": [5]}) == ["array"]

    async def test_list_filters_combine_with_paging(self, queue_store: QueueStore) -> None:
        # Given 6 queues of which every other one is red
        for i in range(6):
            await queue_store.create("p", f"q{i}", {"color": "red" if i % 2 == 0 else "blue"})
        # When listing red ones two at a time
        first = await queue_store.list("p", limit=2, metadata_filters={"color": "red"})
        second = await queue_store.list(
            "p", limit=2, marker=first.queues[-1].name, metadata_filters={"color": "red"}
        )
        # Then pages hold only matches, full until the end
        assert [q.name for q in first.queues] == ["q0", "q2"]
        assert [q.name for q in second.queues] == ["q4"]

    async def test_list_count_ignores_marker_and_limit_but_not_filters(
        self,
        queue_store: QueueStore,
    ) -> None:
        for i in range(5):
            await queue_store.create("p", f"q{i}", {"even": i % 2 == 0})
        await queue_store.create("p", "other", {"even": True})
        page = await queue_store.list("p", limit=1, marker="q0", with_count=True)
        assert [q.name for q in page.queues] == ["q1"]
        assert page.count == 6
        filtered = await queue_store.list(
            "p", limit=1, name_contains="q", metadata_filters={"even": True}, with_count=True
        )
        assert filtered.count == 3
        empty = await queue_store.list("nobody", limit=1, with_count=True)
        assert (list(empty.queues), empty.count) == ([], 0)

    async def test_projects_are_isolated(self, queue_store: QueueStore) -> None:
        # Given project A's queue
        await queue_store.create("A", "shared-name", {"owner": "A"})
        await queue_store.create("A", "a-only", {})
        # Then project B sees nothing of it
        assert await queue_store.get("B", "shared-name") is None
        assert not await queue_store.exists("B", "a-only")
        assert await names(queue_store, "B") == []
        assert (await queue_store.list("B", limit=5, with_count=True)).count == 0
        with pytest.raises(QueueNotFound):
            await queue_store.update_metadata("B", "a-only", [MetadataPatch("add", "x", 1)])
        assert await queue_store.delete("B", "a-only") is False
        # And B's queue of the same name is its own
        assert await queue_store.create("B", "shared-name", {"owner": "B"}) is True
        await queue_store.update_metadata("B", "shared-name", [MetadataPatch("add", "x", 1)])
        await queue_store.delete("B", "shared-name")
        record = await queue_store.get("A", "shared-name")
        assert record is not None and dict(record.metadata) == {"owner": "A"}
        assert await names(queue_store, "A") == ["a-only", "shared-name"]

    async def test_project_ids_are_compared_exactly(self, queue_store: QueueStore) -> None:
        await queue_store.create("proj", "q", {})
        for other in ["Proj", "proj ", "pro", "proj2"]:
            assert not await queue_store.exists(other, "q")
            assert await names(queue_store, other) == []

    async def test_data_survives_reopening(self, store_uri: str) -> None:
        store = await open_queue_store(store_uri)
        await store.create("p", "durable", {"a": 1})
        await store.close()
        reopened = await open_queue_store(store_uri)
        try:
            record = await reopened.get("p", "durable")
            assert record is not None and dict(record.metadata) == {"a": 1}
        finally:
            await reopened.close()

    async def test_closed_store_fails_as_unavailable(self, store_uri: str) -> None:
        store = await open_queue_store(store_uri)
        await store.close()
        await store.close()  # idempotent
        with pytest.raises(Unavailable):
            await store.get("p", "q")
