"""One contract suite for every storage backend.

The PostgreSQL runs need a server (see tests/pgserver.py); each test gets its own database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import (
    Append,
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
    Trim,
    merge_patch,
)
from pgserver import fresh_database

pytestmark = pytest.mark.anyio

PROJECTS = Scope("twin", "acme", "record:projects")
EXPERTS = Scope("twin", "acme", "record:experts")
OTHER = Scope("twin", "globex", "record:projects")


StoreFactory = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "sqlite-logs", "postgres"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StoreFactory]:
    """Opens stores on one database (one file, one PostgreSQL database); closes them after."""
    async with AsyncExitStack() as stack:
        if request.param == "postgres":
            from apitwin.state.postgres import PostgresStore

            url = stack.enter_context(fresh_database())

            def make() -> Store:
                return PostgresStore(url)

        else:
            path = ":memory:" if request.param == "sqlite-memory" else tmp_path / "twin.db"
            # sqlite-logs: the kind most tests use is kept in the log table (the journal's).
            logs = (PROJECTS.kind,) if request.param == "sqlite-logs" else ()

            def make() -> Store:
                return SQLiteStore(path, logs=logs)

        opened: list[Store] = []

        async def factory() -> Store:
            if opened and request.param == "sqlite-memory":
                return opened[0]  # a second connection would open another, empty database
            backend = make()
            await backend.open()
            stack.push_async_callback(backend.close)
            opened.append(backend)
            return backend

        yield factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> Store:
    return await store_factory()


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


async def test_any_of_filters_match_one_of_the_values(store: Store) -> None:
    await store.write(
        [
            Put(PROJECTS.key("a"), {"tag": "dog", "n": 1}),
            Put(PROJECTS.key("b"), {"tag": "cat", "n": 2}),
            Put(PROJECTS.key("c"), {"tag": "bird", "n": 1}),
            Put(PROJECTS.key("d"), {"n": 1}),
        ]
    )
    both = Query(PROJECTS, any_of={"tag": ("dog", "bird")})
    assert [i.key.id for i in await store.query(both)] == ["a", "c"]
    assert await store.count(both) == 2
    mixed = Query(PROJECTS, equals={"n": 1}, any_of={"tag": ("dog", "cat")})
    assert [i.key.id for i in await store.query(mixed)] == ["a"]
    assert await store.query(Query(PROJECTS, any_of={"tag": ()})) == []
    assert [i.key.id for i in await store.query(Query(PROJECTS, any_of={"n": (2,)}))] == ["b"]


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


async def test_trim_keeps_the_newest_items_of_one_scope(store: Store) -> None:
    await store.write([Put(PROJECTS.key(f"p{i}"), {"i": i}) for i in range(5)])
    await store.write([Put(OTHER.key("p0"), {}), Put(EXPERTS.key("e0"), {})])
    await store.write([Trim(PROJECTS, 10)])  # fewer than kept: nothing goes
    assert await store.count(Query(PROJECTS)) == 5
    await store.write([Put(PROJECTS.key("p5"), {"i": 5}), Trim(PROJECTS, 2)])
    assert [i.data["i"] for i in await store.query(Query(PROJECTS))] == [4, 5]
    assert await store.get(OTHER.key("p0")) is not None  # other scopes untouched
    assert await store.get(EXPERTS.key("e0")) is not None
    await store.write([Trim(PROJECTS, 0)])
    assert await store.count(Query(PROJECTS)) == 0


async def test_append_adds_new_items_in_order_and_reads_see_them(store: Store) -> None:
    assert await store.get(PROJECTS.key("a1")) is None  # read first: known absent
    assert await store.count(Query(PROJECTS, equals={"v": 2})) == 0
    entries = [(f"a{i}", {"v": i, "nested": {"i": [i]}}, 100.0 + i) for i in range(3)]
    written = await store.write([Append(PROJECTS, entries), Put(OTHER.key("o"), {})])
    assert written[0] is None and written[1] is not None
    appended = await store.query(Query(PROJECTS))
    assert [(i.key.id, i.data["v"], i.version, i.created) for i in appended] == [
        ("a0", 0, 1, 100.0), ("a1", 1, 1, 101.0), ("a2", 2, 1, 102.0)
    ]  # fmt: skip
    assert [i.seq for i in appended] == sorted({i.seq for i in appended})
    found = await store.get(PROJECTS.key("a1"))
    assert found is not None and found.data == {"v": 1, "nested": {"i": [1]}}
    assert await store.count(Query(PROJECTS, equals={"v": 2})) == 1
    before = time.time()
    await store.write([Append(PROJECTS, [("a3", {"v": 3}, 0.0)]), Trim(PROJECTS, 2)])
    assert [i.key.id for i in await store.query(Query(PROJECTS))] == ["a2", "a3"]
    stamped = await store.get(PROJECTS.key("a3"))  # no time given: the time of the write
    assert stamped is not None and before <= stamped.created <= time.time()
    assert await store.write([Append(PROJECTS, [])]) == [None]


async def test_an_append_reusing_an_id_is_refused_whole(store: Store) -> None:
    await store.write([Append(PROJECTS, [("taken", {"v": 0}, 0.0)])])
    before = [(i.key.id, i.data) for i in await store.query(Query(PROJECTS))]
    for entries, taken in [
        ([("n1", {}, 0.0), ("taken", {}, 0.0), ("n2", {}, 0.0)], "taken"),
        ([("n1", {}, 0.0), ("twice", {}, 0.0), ("twice", {}, 0.0)], "twice"),
    ]:
        with pytest.raises(StoreError) as refused:
            await store.write([Append(PROJECTS, entries)])
        assert (refused.value.reason, refused.value.key, refused.value.index) == (
            "exists", PROJECTS.key(taken), 0
        )  # fmt: skip
        assert [(i.key.id, i.data) for i in await store.query(Query(PROJECTS))] == before
    # Beside other batches of the same moment, the refused one fails alone.
    outcomes = await asyncio.gather(
        store.write([Append(PROJECTS, [("b1", {}, 0.0)])]),
        store.write([Append(PROJECTS, [("b2", {}, 0.0), ("taken", {}, 0.0)])]),
        store.write([Append(PROJECTS, [("b3", {}, 0.0)])]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], StoreError) and outcomes[1].key == PROJECTS.key("taken")
    assert await store.get(PROJECTS.key("b2")) is None
    assert [i.key.id for i in await store.query(Query(PROJECTS))] == ["taken", "b1", "b3"]


async def test_kinds_and_fields_with_quotes_are_data_not_sql(store: Store) -> None:
    odd = Scope("twin", "acme", "record:o'brien\"s")
    await store.write([Put(odd.key("1"), {"it's": "x"}), Put(odd.key("2"), {"it's": "y"})])
    assert (await store.get(odd.key("1"))).data == {"it's": "x"}
    assert [i.key.id for i in await store.query(Query(odd, equals={"it's": "y"}))] == ["2"]
    await store.write([Trim(odd, 1)])
    assert [i.key.id for i in await store.query(Query(odd))] == ["2"]
    await store.write([Delete(odd.key("2"))])
    assert await store.count(Query(odd)) == 0
    await store.write([Put(odd.key("3"), {}), Clear("twin", "acme", (odd.kind,))])
    assert await store.count(Query(odd)) == 0


async def test_batches_written_together_fail_alone(store: Store) -> None:
    await store.write([Put(PROJECTS.key("taken"), {"v": 0})])
    outcomes = await asyncio.gather(
        store.write([Put(PROJECTS.key("a"), {"v": 1})]),
        store.write(
            [Put(PROJECTS.key("b"), {"v": 2}), Put(PROJECTS.key("taken"), {}, expect="absent")]
        ),
        store.write([Put(PROJECTS.key("c"), {"v": 3}), Merge(PROJECTS.key("a"), {"w": 1})]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], StoreError) and outcomes[1].index == 1
    assert await store.get(PROJECTS.key("b")) is None  # the failed batch left nothing behind
    assert (await store.get(PROJECTS.key("taken"))).data == {"v": 0}
    merged = await store.get(PROJECTS.key("a"))
    assert merged is not None and merged.data == {"v": 1, "w": 1} and merged.version == 2
    assert (await store.get(PROJECTS.key("c"))).data == {"v": 3}
    seqs = [i.seq for i in await store.query(Query(PROJECTS))]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_single_op_batches_written_together_fail_alone(store: Store) -> None:
    """Each kind of op that fails alone in its batch, beside batches that succeed in the same
    transaction: each failure is its own, changes nothing, and the others land."""
    await store.write([Put(PROJECTS.key("taken"), {"v": 0}), Put(PROJECTS.key("kept"), {"v": 0})])
    outcomes = await asyncio.gather(
        store.write([Put(PROJECTS.key("a"), {"v": 1})]),
        store.write([Put(PROJECTS.key("taken"), {"v": 9}, expect="absent")]),
        store.write([Put(PROJECTS.key("kept"), {"v": 9}, expect=7)]),
        store.write([Merge(PROJECTS.key("missing"), {"v": 9})]),
        store.write([Merge(PROJECTS.key("kept"), {"v": 9}, expect=3)]),
        store.write([Delete(PROJECTS.key("gone"))]),
        store.write([Require(PROJECTS.key("gone"))]),
        store.write([Merge(PROJECTS.key("taken"), {"w": 1})]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], list)
    assert [type(o) for o in outcomes[1:7]] == [StoreError] * 6
    assert [o.reason for o in outcomes[1:7]] == [  # type: ignore[union-attr]
        "exists", "conflict", "missing", "conflict", "missing", "missing"
    ]  # fmt: skip
    assert isinstance(outcomes[7], list)
    assert (await store.get(PROJECTS.key("kept"))).data == {"v": 0}  # type: ignore[union-attr]
    assert (await store.get(PROJECTS.key("taken"))).data == {"v": 0, "w": 1}  # type: ignore[union-attr]
    assert await store.get(PROJECTS.key("missing")) is None
    assert sorted(i.key.id for i in await store.query(Query(PROJECTS))) == ["a", "kept", "taken"]


async def test_reads_see_every_write_that_follows_them(store: Store) -> None:
    """Each read is repeated after each kind of write: a backend that caches reads must drop
    exactly what the write changed (the same reads, unchanged, for other scopes)."""

    async def seen() -> tuple[object, ...]:
        one = await store.get(PROJECTS.key("p1"))
        listed = await store.query(Query(PROJECTS))
        filtered = await store.query(Query(PROJECTS, equals={"v": 2}))
        return (
            one.data if one else None,
            one.version if one else None,
            [(i.key.id, i.data) for i in listed],
            [i.key.id for i in filtered],
            await store.count(Query(PROJECTS)),
            await store.count(Query(OTHER)),
        )

    assert await seen() == (None, None, [], [], 0, 0)
    await store.write([Put(PROJECTS.key("p1"), {"v": 1}), Put(OTHER.key("p9"), {})])
    assert await seen() == ({"v": 1}, 1, [("p1", {"v": 1})], [], 1, 1)
    await store.write([Merge(PROJECTS.key("p1"), {"v": 2})])
    assert await seen() == ({"v": 2}, 2, [("p1", {"v": 2})], ["p1"], 1, 1)
    await store.claim([Merge(PROJECTS.key("p1"), {"v": 3}, expect=2)])
    assert await seen() == ({"v": 3}, 3, [("p1", {"v": 3})], [], 1, 1)
    await store.write([Put(PROJECTS.key("p2"), {"v": 2}), Trim(PROJECTS, 1)])
    assert await seen() == (None, None, [("p2", {"v": 2})], ["p2"], 1, 1)
    await store.write([Put(PROJECTS.key("p1"), {"v": 4})])
    await store.write([Delete(PROJECTS.key("p1"))])
    assert await seen() == (None, None, [("p2", {"v": 2})], ["p2"], 1, 1)
    await store.write([Put(PROJECTS.key("p1"), {"v": 5}), Clear("twin", "acme")])
    assert await seen() == (None, None, [], [], 0, 1)


async def test_callers_get_their_own_copy_of_the_data(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {"tags": ["a"], "v": 1})])
    (await store.get(PROJECTS.key("p1"))).data["tags"].append("mutated")  # type: ignore[union-attr]
    (await store.query(Query(PROJECTS)))[0].data["v"] = "mutated"
    again = await store.get(PROJECTS.key("p1"))
    assert again is not None and again.data == {"tags": ["a"], "v": 1}
    assert [i.data for i in await store.query(Query(PROJECTS))] == [{"tags": ["a"], "v": 1}]


async def test_a_failed_batch_leaves_no_trace_in_later_reads(store: Store) -> None:
    assert await store.get(PROJECTS.key("b")) is None  # read before: known absent
    assert await store.count(Query(PROJECTS)) == 0
    outcomes = await asyncio.gather(
        store.write([Put(PROJECTS.key("a"), {"v": 1})]),
        store.write([Put(PROJECTS.key("b"), {"v": 2}), Require(PROJECTS.key("missing"))]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], StoreError)
    assert await store.get(PROJECTS.key("b")) is None
    assert [i.key.id for i in await store.query(Query(PROJECTS))] == ["a"]
    await store.write([Put(PROJECTS.key("b"), {"v": 3})])
    found = await store.get(PROJECTS.key("b"))
    assert found is not None and found.data == {"v": 3}


async def test_sqlite_a_clear_covers_what_a_batch_committed_with_it_put(tmp_path: Path) -> None:
    # SQLite commits the batches of one moment together, in order (PostgreSQL commits each on
    # its own, in no promised order): what the first put, the second removed, cache or not.
    store = SQLiteStore(tmp_path / "group.db")
    await store.open()
    try:
        assert await store.get(PROJECTS.key("p1")) is None  # read by key: cached from now on
        await asyncio.gather(
            store.write([Put(PROJECTS.key("p1"), {"v": 1})]),
            store.write([Clear("twin", "acme")]),
        )
        assert await store.get(PROJECTS.key("p1")) is None
        await asyncio.gather(
            store.write([Put(PROJECTS.key("p1"), {"v": 2})]),
            store.write([Trim(PROJECTS, 0)]),
        )
        assert await store.get(PROJECTS.key("p1")) is None
        assert await store.count(Query(PROJECTS)) == 0
    finally:
        await store.close()


async def test_a_store_sees_what_another_store_on_the_database_wrote(
    store_factory: StoreFactory,
) -> None:
    first, second = await store_factory(), await store_factory()
    await first.write([Put(PROJECTS.key("p1"), {"v": 1})])
    assert (await second.get(PROJECTS.key("p1"))).data == {"v": 1}  # type: ignore[union-attr]
    assert await second.count(Query(PROJECTS)) == 1
    assert await second.get(PROJECTS.key("p2")) is None
    await first.write([Merge(PROJECTS.key("p1"), {"v": 2}), Put(PROJECTS.key("p2"), {})])
    assert (await second.get(PROJECTS.key("p1"))).data == {"v": 2}  # type: ignore[union-attr]
    assert await second.get(PROJECTS.key("p2")) is not None
    assert await second.count(Query(PROJECTS)) == 2
    assert len(await second.query(Query(PROJECTS))) == 2


async def test_concurrent_merges_lose_no_update(store: Store) -> None:
    await store.write([Put(PROJECTS.key("p1"), {})])

    async def writer(n: int) -> None:
        await store.write([Merge(PROJECTS.key("p1"), {f"k{n}": n})])

    await asyncio.gather(*(writer(n) for n in range(50)))
    found = await store.get(PROJECTS.key("p1"))
    assert found is not None and len(found.data) == 50 and found.version == 51


async def test_claim_skips_items_whose_version_moved_or_that_are_gone(store: Store) -> None:
    await store.write([Put(PROJECTS.key("a"), {"n": 0}), Put(PROJECTS.key("b"), {"n": 0})])
    await store.write([Merge(PROJECTS.key("b"), {"n": 1})])
    claimed = await store.claim(
        [
            Merge(PROJECTS.key("a"), {"lease": 1}, expect=1),
            Merge(PROJECTS.key("b"), {"lease": 1}, expect=1),
            Merge(PROJECTS.key("gone"), {"lease": 1}, expect=1),
        ]
    )
    assert [None if c is None else (c.key.id, c.version) for c in claimed] == [
        ("a", 2),
        None,
        None,
    ]
    found = await store.get(PROJECTS.key("b"))
    assert found is not None and found.data == {"n": 1}


async def test_concurrent_claims_from_separate_stores_have_one_winner(
    store_factory: StoreFactory,
) -> None:
    """Two stores on one database stand for two replicas: each item is claimed once."""
    first, second = await store_factory(), await store_factory()
    await first.write([Put(PROJECTS.key(f"d{i}"), {"status": "pending"}) for i in range(20)])
    items = await first.query(Query(PROJECTS, limit=100))

    async def claim_all(backend: Store, worker: str) -> list[str]:
        won: list[str] = []
        for item in items:
            [got] = await backend.claim([Merge(item.key, {"owner": worker}, item.version)])
            if got is not None:
                won.append(item.key.id)
        return won

    a, b = await asyncio.gather(claim_all(first, "a"), claim_all(second, "b"))
    assert sorted(a + b) == sorted(i.key.id for i in items)
    assert not set(a) & set(b)
    owners = {i.key.id: i.data["owner"] for i in await second.query(Query(PROJECTS, limit=100))}
    assert owners == {**dict.fromkeys(a, "a"), **dict.fromkeys(b, "b")}


async def test_concurrent_merges_through_two_stores_lose_no_update(
    store_factory: StoreFactory,
) -> None:
    first, second = await store_factory(), await store_factory()
    await first.write([Put(PROJECTS.key("p1"), {})])

    async def writer(backend: Store, n: int) -> None:
        await backend.write([Merge(PROJECTS.key("p1"), {f"k{n}": n})])

    await asyncio.gather(*(writer(first if n % 2 else second, n) for n in range(40)))
    found = await first.get(PROJECTS.key("p1"))
    assert found is not None and len(found.data) == 40 and found.version == 41


async def test_absent_puts_racing_through_two_stores_create_once(
    store_factory: StoreFactory,
) -> None:
    first, second = await store_factory(), await store_factory()

    async def create(backend: Store, n: int) -> str:
        try:
            await backend.write([Put(PROJECTS.key("only"), {"by": n}, expect="absent")])
        except StoreError as exc:
            return exc.reason
        return "created"

    outcomes = await asyncio.gather(*(create(first if n % 2 else second, n) for n in range(10)))
    assert sorted(outcomes) == ["created"] + ["exists"] * 9


async def test_the_lock_is_held_by_one_holder_at_a_time(store_factory: StoreFactory) -> None:
    first, second = await store_factory(), await store_factory()
    if not first.shared:
        pytest.skip("a store no other process shares needs no lock between processes")
    inside: list[str] = []
    overlaps: list[list[str]] = []

    async def hold(backend: Store, name: str) -> None:
        async with backend.lock("start-up"):
            inside.append(name)
            overlaps.append(list(inside))
            await asyncio.sleep(0.05)
            inside.remove(name)

    await asyncio.gather(hold(first, "a"), hold(second, "b"), hold(first, "c"))
    assert all(len(seen) == 1 for seen in overlaps) and len(overlaps) == 3


async def test_sequence_numbers_stay_increasing_across_stores(
    store_factory: StoreFactory,
) -> None:
    first, second = await store_factory(), await store_factory()
    seqs = []
    for n in range(6):
        backend = first if n % 2 else second
        [item] = await backend.write([Put(PROJECTS.key(f"p{n}"), {})])
        assert item is not None
        seqs.append(item.seq)
    assert seqs == sorted(seqs) and len(set(seqs)) == 6


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


async def test_sqlite_checkpoints_the_wal_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        before = path.stat().st_size
        await store.write([Put(PROJECTS.key(f"p{i}"), {"text": "x" * 1000}) for i in range(500)])
        # No commit crosses a checkpoint threshold any more: the thread copies the WAL over.
        for _ in range(100):
            if path.stat().st_size > before + 400_000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > before + 400_000
        assert await store.count(Query(PROJECTS)) == 500
    finally:
        await store.close()


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


async def test_replicas_starting_together_migrate_an_empty_database_once() -> None:
    from apitwin.state.postgres import SCHEMA_VERSION, PostgresStore

    with fresh_database() as url:
        stores = [PostgresStore(url) for _ in range(4)]
        await asyncio.gather(*(s.open() for s in stores))
        try:
            assert [await s.schema_version() for s in stores] == [SCHEMA_VERSION] * 4
            assert [await s.migrate() for s in stores] == [SCHEMA_VERSION] * 4  # nothing to do
            await stores[0].write([Put(PROJECTS.key("p1"), {"x": 1})])
            found = await stores[3].get(PROJECTS.key("p1"))
            assert found is not None and found.data == {"x": 1}
        finally:
            for s in stores:
                await s.close()


async def test_a_postgres_claim_skips_a_row_another_transaction_holds() -> None:
    import psycopg

    from apitwin.state.postgres import PostgresStore

    with fresh_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.write([Put(PROJECTS.key("d1"), {"status": "pending"})])
            claim = [Merge(PROJECTS.key("d1"), {"status": "delivering"}, expect=1)]
            async with await psycopg.AsyncConnection.connect(url) as other, other.transaction():
                await other.execute("SELECT 1 FROM apitwin_items WHERE id = 'd1' FOR UPDATE")
                # Held elsewhere: skipped at once instead of waited for (the bound is a guard).
                assert await asyncio.wait_for(store.claim(claim), 30) == [None]
            [claimed] = await store.claim(claim)
            assert claimed is not None and claimed.data == {"status": "delivering"}
        finally:
            await store.close()


async def test_postgres_keeps_everything_across_reopen() -> None:
    from apitwin.state.postgres import PostgresStore

    with fresh_database() as url:
        first = PostgresStore(url)
        await first.open()
        await first.write([Put(PROJECTS.key("p1"), {"b": 1, "a": 2})])
        await first.close()
        second = PostgresStore(url)
        await second.open()
        try:
            found = await second.get(PROJECTS.key("p1"))
            # Key order survives (documents are rendered from what is stored).
            assert found is not None and list(found.data) == ["b", "a"]
            [item] = await second.write([Put(PROJECTS.key("p2"), {})])
            assert item is not None and item.seq > found.seq
        finally:
            await second.close()


async def test_a_full_postgres_disk_is_a_storage_full_error_and_nothing_is_applied() -> None:
    import psycopg

    from apitwin.errors import StorageFullError
    from apitwin.state.postgres import PostgresStore

    with fresh_database() as url:
        store = PostgresStore(url)
        await store.open()
        try:
            await store.write([Put(PROJECTS.key("p1"), {"n": 1})])
            # The server raises what a full disk raises (SQLSTATE 53100) for the second insert.
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(
                    "CREATE FUNCTION full_disk() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "IF NEW.id = 'p3' THEN RAISE EXCEPTION 'could not extend file' "
                    "USING ERRCODE = 'disk_full'; END IF; RETURN NEW; END $$"
                )
                admin.execute(
                    "CREATE TRIGGER full_disk BEFORE INSERT ON apitwin_items "
                    "FOR EACH ROW EXECUTE FUNCTION full_disk()"
                )
            batch = [
                Merge(PROJECTS.key("p1"), {"n": 2}),
                Put(PROJECTS.key("p2"), {}),
                Put(PROJECTS.key("p3"), {}),
            ]
            with pytest.raises(StorageFullError, match="disk is full; nothing of this change"):
                await store.write(batch)
            found = await store.get(PROJECTS.key("p1"))
            assert found is not None and found.data == {"n": 1}
            assert await store.get(PROJECTS.key("p2")) is None
        finally:
            await store.close()


async def test_an_unreachable_postgres_server_is_a_clear_config_error() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    import socket

    from apitwin.errors import ConfigError
    from apitwin.state.postgres import PostgresStore

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = PostgresStore(f"postgresql://twin:s3cret@127.0.0.1:{port}/twin", connect_timeout=1)
    with pytest.raises(ConfigError) as caught:
        await store.open()
    assert f"127.0.0.1:{port}/twin" in caught.value.message
    assert "s3cret" not in caught.value.message


def test_a_postgres_url_without_the_driver_names_the_extra() -> None:
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from apitwin.errors import ConfigError\n"
        "from apitwin.server.app import open_store\n"
        "try:\n    open_store('postgresql://twin@127.0.0.1/twin')\n"
        "except ConfigError as exc:\n    print(exc.message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'apitwin[postgres]'" in result.stdout


async def test_sqlite_wal_restarts_under_a_steady_stream_of_writes(tmp_path: Path) -> None:
    # Background passes alone never reach the end of a WAL that keeps growing, so it never
    # restarts; past the limit the checkpointer copies the rest with this process held back.
    path = tmp_path / "stream.db"
    store = SQLiteStore(path)
    await store.open()
    store.wal_restart_bytes = 1 * 2**20
    wal = Path(f"{path}-wal")
    largest = written = 0
    try:
        deadline = time.monotonic() + 2.5
        while written < 40_000 and time.monotonic() < deadline:
            batch = [Put(PROJECTS.key(f"p{written + i}"), {"text": "x" * 500}) for i in range(20)]
            await asyncio.gather(*(store.write([op]) for op in batch))  # one group commit
            written += len(batch)
            largest = max(largest, wal.stat().st_size)
            await asyncio.sleep(0.002)
        assert written >= 2_000  # enough to outgrow the limit many times over
        assert largest < 16 * 2**20, f"the WAL grew to {largest} bytes"
        assert await store.count(Query(PROJECTS)) == written
    finally:
        await store.close()


async def test_a_scopes_version_moves_with_every_change_to_it_and_only_then(
    store_factory: StoreFactory,
) -> None:
    store = await store_factory()
    if store.shared:
        # Other replicas write too: no version can be vouched for, so none is given.
        assert store.version(PROJECTS) is None
        return
    await store.write([Put(PROJECTS.key("p1"), {"n": 1}), Put(PROJECTS.key("p2"), {"n": 2})])
    seen = [store.version(PROJECTS)]
    assert store.version(PROJECTS) == seen[0]  # standing while nothing changes
    # Other kinds and other connections leave it standing.
    await store.write([Put(EXPERTS.key("e1"), {"n": 1}), Put(OTHER.key("p1"), {"n": 1})])
    await store.write([Trim(EXPERTS, 0), Clear("twin", "globex")])
    assert store.version(PROJECTS) == seen[0]
    changes = [
        [Put(PROJECTS.key("p3"), {"n": 3})],
        [Merge(PROJECTS.key("p1"), {"n": 10})],
        [Delete(PROJECTS.key("p2"))],
        [Trim(PROJECTS, 1)],
        [Clear("twin", "acme", ("record:projects",))],
        [Put(PROJECTS.key("p4"), {"n": 4})],
        [Clear("twin")],
    ]
    for ops in changes:
        await store.write(ops)
        version = store.version(PROJECTS)
        assert version is not None and version not in seen, ops
        seen.append(version)
    # A commit by another connection to the same database moves it too.
    other = await store_factory()
    await other.write([Put(PROJECTS.key("p5"), {"n": 5})])
    assert store.version(PROJECTS) not in seen
