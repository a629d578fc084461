"""The SQLite store's log table: the journal's entries live there, and a file opened with other
log kinds than it was written with keeps every item, in order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from apitwin.journal import REQUEST_KIND
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Clear, Put, Query, Scope, Trim

pytestmark = pytest.mark.anyio

ENTRIES = Scope("twin", "acme", "entries")
NOTES = Scope("twin", "acme", "notes")


def tables(path: Path) -> dict[str, list[str]]:
    """Kinds in each table of the file, read with a connection of its own."""
    with sqlite3.connect(path) as db:
        return {
            table: [k for (k,) in db.execute(f"SELECT kind FROM {table} ORDER BY seq")]
            for table in ("items", "logs")
        }


async def test_the_journal_kind_is_a_log_by_default(tmp_path: Path) -> None:
    assert REQUEST_KIND in SQLiteStore(tmp_path / "x.db").logs
    store = SQLiteStore(tmp_path / "x.db")
    await store.open()
    try:
        scope = Scope("twin", "acme", REQUEST_KIND)
        await store.write([Put(scope.key("r1"), {"status": 200}), Put(NOTES.key("n1"), {})])
    finally:
        await store.close()
    assert tables(tmp_path / "x.db") == {"items": ["notes"], "logs": [REQUEST_KIND]}


@pytest.mark.parametrize(("before", "after"), [((), ("entries",)), (("entries",), ())])
async def test_items_move_to_their_table_when_the_log_kinds_change(
    tmp_path: Path, before: tuple[str, ...], after: tuple[str, ...]
) -> None:
    path = tmp_path / "moved.db"
    store = SQLiteStore(path, logs=before)
    await store.open()
    try:
        await store.write([Put(ENTRIES.key(f"e{i}"), {"i": i}) for i in range(5)])
        await store.write([Put(NOTES.key("n1"), {"text": "kept"})])
        seqs = [item.seq for item in await store.query(Query(ENTRIES))]
    finally:
        await store.close()
    store = SQLiteStore(path, logs=after)
    await store.open()
    try:
        found = await store.query(Query(ENTRIES))
        assert [(item.data["i"], item.seq) for item in found] == list(
            zip(range(5), seqs, strict=True)
        )
        assert await store.count(Query(ENTRIES, equals={"i": 3})) == 1
        note = await store.get(NOTES.key("n1"))
        assert note is not None and note.data == {"text": "kept"}
        await store.write([Trim(ENTRIES, 2)])
        assert [item.data["i"] for item in await store.query(Query(ENTRIES))] == [3, 4]
        # Sequence numbers go on from where they were, in both tables.
        [written] = await store.write([Put(ENTRIES.key("e5"), {"i": 5})])
        assert written is not None and written.seq > max(seqs)
    finally:
        await store.close()
    moved = tables(path)
    assert moved["logs" if after else "items"].count("entries") == 3
    assert moved["items" if after else "logs"].count("entries") == 0


async def test_a_clear_empties_both_tables(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "clear.db", logs=("entries",))
    await store.open()
    try:
        await store.write([Put(ENTRIES.key("e1"), {}), Put(NOTES.key("n1"), {})])
        await store.write([Clear("twin", "acme", (), keep=("notes",))])
        assert await store.get(ENTRIES.key("e1")) is None
        assert await store.get(NOTES.key("n1")) is not None
        await store.write([Clear("twin", None)])
        assert await store.get(NOTES.key("n1")) is None
    finally:
        await store.close()
    assert tables(tmp_path / "clear.db") == {"items": [], "logs": []}
