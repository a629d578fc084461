"""One contract suite for every storage backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import (
    Clear,
    Delete,
    Key,
    Merge,
    Put,
    Query,
    Require,
    Scope,
    Store,
    StoreError,
    merge_patch,
)

pytestmark = pytest.mark.anyio

PROJECTS = Scope("twin", "acme", "record:projects")
EXPERTS = Scope("twin", "acme", "record:experts")
OTHER = Scope("twin", "globex", "record:projects")


@pytest.fixture(params=["sqlite-file", "sqlite-memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    path = tmp_path / "twin.db" if request.param == "sqlite-file" else ":memory:"
    backend = SQLiteStore(path)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def test_put_then_get_returns_the_item_with_version_one(store: Store) -> None:
    [item] = await store.write([Put(PROJECTS.key("p1"), {"title": "Batteries"}, now=10.0)])
    assert item is not None and item.version == 1 and item.created == 10.0
    found = await store.get(PROJECTS.key("p1"))
    assert found is not None and found.data == {"title": "Batteries"}


async def test_put_expecting_absent_refuses_a_duplicate_and_changes_nothing(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {"v": 1})])
    with pytest.raises(StoreError) as caught:
        await store.write(
            [Put(PROJECTS.key("p2"), {"v": 2}), Put(PROJECTS.key("p1"), {"v": 3}, expect="absent")]
        )
    assert caught.value.reason == "exists" and caught.value.index == 1
    assert await store.get(PROJECTS.key("p2")) is None
    found = await store.get(PROJECTS.key("p1"))
    assert found is not None and found.data == {"v": 1}


async def test_versioned_put_detects_a_conflicting_update(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {"v": 1})])
    await store.write([Put(PROJECTS.key("p1"), {"v": 2}, expect=1)])
    with pytest.raises(StoreError, match="conflict"):
        await store.write([Put(PROJECTS.key("p1"), {"v": 3}, expect=1)])


async def test_merge_applies_a_json_merge_patch(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {"a": 1, "b": {"c": 2, "d": 3}})])
    [item] = await store.write([Merge(PROJECTS.key("p1"), {"a": None, "b": {"c": 9}})])
    assert item is not None and item.data == {"b": {"c": 9, "d": 3}} and item.version == 2
    with pytest.raises(StoreError, match="missing"):
        await store.write([Merge(PROJECTS.key("nope"), {"a": 1})])


async def test_require_guards_nested_creates(store: Store) -> None:
    with pytest.raises(StoreError, match="missing"):
        await store.write([Require(PROJECTS.key("p1")), Put(EXPERTS.key("e1"), {}, "projects/p1")])
    assert await store.get(EXPERTS.key("e1")) is None


async def test_delete_removes_and_reports_missing(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {})])
    await store.write([Delete(PROJECTS.key("p1"))])
    assert await store.get(PROJECTS.key("p1")) is None
    with pytest.raises(StoreError, match="missing"):
        await store.write([Delete(PROJECTS.key("p1"))])
    await store.write([Delete(PROJECTS.key("p1"), must_exist=False)])


async def test_query_pages_in_insertion_order_with_parent_and_field_filters(store: Store) -> None:
    ops = [
        Put(
            EXPERTS.key(f"e{i}"),
            {"status": "new" if i % 2 else "old", "n": i},
            f"projects/p{i % 3}",
        )
        for i in range(10)
    ]
    await store.write(ops)
    page = await store.query(Query(EXPERTS, limit=4))
    assert [i.key.id for i in page] == ["e0", "e1", "e2", "e3"]
    rest = await store.query(Query(EXPERTS, after_seq=page[-1].seq, limit=100))
    assert [i.key.id for i in rest] == [f"e{i}" for i in range(4, 10)]
    scoped = await store.query(Query(EXPERTS, parent="projects/p1", equals={"status": "new"}))
    assert [i.key.id for i in scoped] == ["e1", "e7"]
    assert await store.count(Query(EXPERTS, equals={"n": 4})) == 1
    newest = await store.query(Query(EXPERTS, limit=2, descending=True))
    assert [i.key.id for i in newest] == ["e9", "e8"]


async def test_boolean_and_null_filters_match_json_values(store: Store) -> None:
    await store.write(
        [Put(PROJECTS.key("a"), {"open": True}), Put(PROJECTS.key("b"), {"open": False})]
    )
    found = await store.query(Query(PROJECTS, equals={"open": True}))
    assert [i.key.id for i in found] == ["a"]


async def test_connections_never_see_each_others_items(store: Store) -> None:
    await store.write(
        [Put(PROJECTS.key("p1"), {"who": "acme"}), Put(OTHER.key("p1"), {"who": "globex"})]
    )
    mine = await store.query(Query(PROJECTS))
    theirs = await store.query(Query(OTHER))
    assert [i.data["who"] for i in mine] == ["acme"]
    assert [i.data["who"] for i in theirs] == ["globex"]


async def test_clear_resets_one_connection_or_a_whole_twin(store: Store) -> None:
    await store.write(
        [Put(PROJECTS.key("p1"), {}), Put(EXPERTS.key("e1"), {}), Put(OTHER.key("p1"), {})]
    )
    await store.write([Clear("twin", "acme", ("record:experts",))])
    assert await store.get(EXPERTS.key("e1")) is None
    assert await store.get(PROJECTS.key("p1")) is not None
    await store.write([Clear("twin", "acme")])
    assert await store.get(PROJECTS.key("p1")) is None
    assert await store.get(OTHER.key("p1")) is not None
    await store.write([Clear("twin")])
    assert await store.get(OTHER.key("p1")) is None


async def test_concurrent_merges_lose_no_update(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {})])

    async def writer(n: int) -> None:
        await store.write([Merge(PROJECTS.key("p1"), {f"k{n}": n})])

    await asyncio.gather(*(writer(n) for n in range(50)))
    found = await store.get(PROJECTS.key("p1"))
    assert found is not None and len(found.data) == 50 and found.version == 51


async def test_sqlite_file_keeps_everything_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keep.db"
    first = SQLiteStore(path)
    await first.open()
    await first.write([Put(PROJECTS.key("p1"), {"x": 1})])
    await first.close()
    second = SQLiteStore(path)
    await second.open()
    try:
        found = await second.get(PROJECTS.key("p1"))
        assert found is not None and found.data == {"x": 1}
        [item] = await second.write([Put(PROJECTS.key("p2"), {})])
        assert item is not None and item.seq > found.seq
    finally:
        await second.close()


def test_merge_patch_follows_rfc_7396() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [1]}, {"a": [2]}) == {"a": [2]}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch([1, 2], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": 1}, ["x"]) == ["x"]


def test_keys_compare_by_value() -> None:
    assert Key("t", "c", "k", "1") == Scope("t", "c", "k").key("1")
