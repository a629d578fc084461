"""The SQLite store's read caches stay within their memory bound and stay right past it."""

from __future__ import annotations

from pathlib import Path

import pytest

from apitwin.state import sqlite
from apitwin.state.sqlite import SQLiteStore, _size
from apitwin.state.store import Merge, Put, Query, Scope

pytestmark = pytest.mark.anyio

NOTES = Scope("twin", "acme", "record:notes")


async def test_caches_stay_bounded_and_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "MAX_CACHED_BYTES", 40_000)
    store = SQLiteStore(tmp_path / "bounded.db")
    await store.open()
    try:
        await store.write(
            [Put(NOTES.key(f"n{i}"), {"i": i, "text": "x" * 2000}) for i in range(60)]
        )
        for round_ in range(2):
            for i in range(60):
                found = await store.get(NOTES.key(f"n{i}"))
                assert found is not None and found.data["i"] == i
                page = await store.query(Query(NOTES, after_seq=i, limit=3))
                assert [item.data["i"] for item in page] == [n for n in (i, i + 1, i + 2) if n < 60]
                assert 0 < store._rows_bytes <= 40_000
                assert store._rows_bytes == sum(map(_size, store._rows.values()))
                held = [rows for _, rows in store._results.values()]
                assert store._results_bytes == sum(sum(map(_size, rows)) for rows in held)
                assert 0 < store._results_bytes <= 40_000
            # Written through, past the bound too: every value read back is the latest.
            await store.write([Merge(NOTES.key(f"n{i}"), {"round": round_}) for i in range(60)])
            for i in range(60):
                found = await store.get(NOTES.key(f"n{i}"))
                assert found is not None and found.data["round"] == round_
            assert store._rows_bytes == sum(map(_size, store._rows.values())) <= 40_000
    finally:
        await store.close()


async def test_another_connections_commit_is_looked_for_once_per_turn_of_the_loop(
    tmp_path: Path,
) -> None:
    """Reads of one turn share one look at the file's data version; a read in a later turn
    sees what another store committed meanwhile."""
    import asyncio

    store = SQLiteStore(tmp_path / "turns.db")
    other = SQLiteStore(tmp_path / "turns.db")
    await store.open()
    await other.open()
    try:
        await store.write([Put(NOTES.key("n"), {"v": 1})])
        await asyncio.sleep(0)
        looks: list[str] = []
        store.db.set_trace_callback(lambda sql: looks.append(sql) if "data_v" in sql else None)
        for _ in range(5):
            found = await store.get(NOTES.key("n"))  # from the cache: no statement but the look
            assert found is not None and found.data == {"v": 1}
        assert len(looks) == 1
        await other.write([Put(NOTES.key("n"), {"v": 2})])
        await asyncio.sleep(0)
        found = await store.get(NOTES.key("n"))
        assert found is not None and found.data == {"v": 2}
        assert len(looks) == 2
    finally:
        store.db.set_trace_callback(None)
        await other.close()
        await store.close()
