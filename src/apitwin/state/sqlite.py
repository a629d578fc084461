"""Embedded SQLite backend (the default): stdlib sqlite3, WAL mode.

Statements are serialised by one lock, so concurrent writers cannot lose each other's updates, and
each batch is one transaction. A call runs on the event loop's thread when the lock is free (a
typical statement takes microseconds, far less than handing the GIL to a thread and back) and
queues on one worker thread behind a call in flight otherwise. The price: while another process
holds the database's write lock, a write on the loop's thread waits for it (up to busy_timeout).

Writes are group-committed: the batches of every task that writes in the same turn of the event
loop share one transaction, each inside its own savepoint, so one batch failing (a conflict, a
missing item) rolls back that batch alone. A commit costs several times a typical batch; under
concurrent requests this is most of what a write costs.

Reads are cached in memory: items read by key (and written since, once committed) and query
results, each dropped as soon as a write touches its kind in that connection, and all of them when
another connection to the file committed (``PRAGMA data_version``, a fraction of a lookup's
cost). A cached read skips the statement, never the decoding: every caller gets its own copy.

Kinds named as logs (the journal's, by default) live in a table of their own, ordered by
sequence, which costs about half as much to write; every store opened on one file must name
the same log kinds (opening one moves items to the table its kinds belong in).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import orjson

from apitwin.errors import StorageFullError
from apitwin.state.store import (
    Append,
    Clear,
    Delete,
    Item,
    Key,
    Merge,
    Op,
    Put,
    Query,
    Require,
    Scope,
    StoreError,
    Trim,
    merge_patch,
)

T = TypeVar("T")
_Waiting = tuple[Sequence["Op"], bool, "asyncio.Future[list[Item | None]]"]

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS items (
        twin TEXT NOT NULL, conn TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, version INTEGER NOT NULL,
        data TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (twin, conn, kind, id))""",
    "CREATE INDEX IF NOT EXISTS items_scope ON items (twin, conn, kind, parent, seq)",
    "CREATE INDEX IF NOT EXISTS items_seq ON items (twin, conn, kind, seq)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    # The webhook dispatcher and the pending-delivery limit look deliveries up by status; without
    # this, each lookup reads every delivery kept. Partial: no other kind pays for it. Because of
    # it, statements name their kind as a literal, never a bound parameter: SQLite re-prepares a
    # statement whose bound value might change its use of a partial index, on every execution
    # (four times the cost of a lookup by key).
    "CREATE INDEX IF NOT EXISTS items_delivery_status ON items "
    """(twin, conn, json_extract(data, '$."status"'), seq) WHERE kind = 'delivery'""",
    # Log kinds (the journal's entries): the same items, kept in sequence order. Two b-trees
    # per row instead of the four above: an entry is written for every request.
    """CREATE TABLE IF NOT EXISTS logs (
        twin TEXT NOT NULL, conn TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
        parent TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL, version INTEGER NOT NULL,
        data TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (twin, conn, kind, seq)) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS logs_id ON logs (twin, conn, kind, id)",
]
# The journal's kind (apitwin.journal.REQUEST_KIND): by default the only log kind.
DEFAULT_LOGS: Final = ("request",)
_COLUMNS = "twin, conn, kind, id, parent, seq, version, data, created, updated"
CHECKPOINT_INTERVAL = 0.2  # seconds between checkpoints of the WAL
# Past this size the WAL is made to restart (see _checkpoint_loop), and when it restarts its file
# is cut back to this size, not to nothing: truncating and regrowing it stalled the writer.
WAL_RESTART_BYTES = 64 * 2**20
_TABLES: Final = ("items", "logs")
_INSERT: Final = {t: f"INSERT INTO {t} ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)" for t in _TABLES}
_UPSERT: Final = {
    t: f"INSERT OR REPLACE INTO {t} ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)" for t in _TABLES
}
# Bounds of each read cache, in bytes of the rows it holds (their JSON, plus a share for the
# bookkeeping); past one, that cache starts over empty.
MAX_CACHED_BYTES = 16 * 1024 * 1024
_ROW_OVERHEAD = 200
_Row = tuple[Any, ...]
# Ops that change at most one row with one statement, after their checks (see _write_group).
_ONE_STATEMENT: Final = frozenset({Put, Merge, Delete, Require})
_ScopeKey = tuple[str, str, str]


class SQLiteStore:
    # One process owns the file: its caches and clock need no re-reading.
    shared = False

    def __init__(
        self, path: str | Path = ":memory:", *, logs: Iterable[str] = DEFAULT_LOGS
    ) -> None:
        """``logs``: kinds appended to, read in sequence order and trimmed from the oldest; kept
        in a table of their own, cheaper to write (their items behave as any other's)."""
        self.path = str(path)
        self.logs = frozenset(logs)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="apitwin-sqlite")
        self._db: sqlite3.Connection | None = None
        self._seq = 0
        self._lock = threading.Lock()
        # Batches waiting for the next group commit, per event loop (a test may drive one store
        # from two loops; a future belongs to its loop).
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Waiting]]
        self._waiting = weakref.WeakKeyDictionary()
        self._committing: set[asyncio.Task[None]] = set()
        self._checkpointer: threading.Thread | None = None
        self.wal_restart_bytes = WAL_RESTART_BYTES
        self._stop_checkpoints = threading.Event()
        # Read caches. _rows: item rows by key (None: known absent), for the kinds read by key;
        # _results: query and count results with the generation of their scope when read;
        # _generations: of the scopes with cached results or a version handed out, moved on by
        # every write to them (to a fresh stamp: never reused, so a value read before the cache
        # was dropped can never match again);
        # _written: rows of the batch under way, cached once its transaction commits.
        self._rows: dict[Key, _Row | None] = {}
        self._keyed_kinds: set[str] = set()
        self._results: dict[tuple[Any, ...], tuple[int, Any]] = {}
        self._rows_bytes = 0
        self._results_bytes = 0
        self._generations: dict[_ScopeKey, int] = {}
        self._stamps = itertools.count(1)
        self._written: dict[Key, _Row | None] = {}
        self._group_written: dict[Key, _Row | None] = {}  # earlier batches of the same commit
        self._data_version = -1
        # The loop in whose current turn data_version was read (another loop, or a loop run
        # again after it stopped, looks afresh).
        self._looked: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=1024
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        for statement in SCHEMA:
            db.execute(statement)
        self._move_logs(db)
        row = db.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        self._seq = int(row[0]) if row else 0
        self._db = db
        if self.path != ":memory:":
            # Checkpoints (copying the WAL into the database, with an fsync) are done by a thread
            # of their own: done by the commit that crosses the WAL's threshold, as by default,
            # they stall the event loop for tens to hundreds of milliseconds.
            db.execute("PRAGMA wal_autocheckpoint=0")
            # A restarted WAL reuses its file's space. On a full disk, a write that needs more
            # (a longer WAL, or a database file that must grow to take a checkpoint) fails
            # with 507; what fits is written durably.
            db.execute(f"PRAGMA journal_size_limit={WAL_RESTART_BYTES}")
            self._stop_checkpoints.clear()
            self._checkpointer = threading.Thread(
                target=self._checkpoint_loop, name="apitwin-sqlite-checkpoint", daemon=True
            )
            self._checkpointer.start()

    def _move_logs(self, db: sqlite3.Connection) -> None:
        """Items of a kind this store keeps as a log that are in the other table (a file
        written before there were logs, or with other log kinds) move to the right one."""
        kinds = ",".join(map(_literal, sorted(self.logs)))
        moves = [
            ("items", "logs", f"kind IN ({kinds})" if kinds else "0"),
            ("logs", "items", f"kind NOT IN ({kinds})" if kinds else "1"),
        ]
        db.execute("BEGIN IMMEDIATE")
        try:
            for source, target, where in moves:
                if db.execute(f"SELECT 1 FROM {source} WHERE {where} LIMIT 1").fetchone():
                    db.execute(
                        f"INSERT OR REPLACE INTO {target} ({_COLUMNS}) "
                        f"SELECT {_COLUMNS} FROM {source} WHERE {where}"
                    )
                    db.execute(f"DELETE FROM {source} WHERE {where}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _table(self, kind: str) -> str:
        return "logs" if kind in self.logs else "items"

    def _checkpoint_loop(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
                # PASSIVE: never waits for (nor blocks) the writer or readers. A failure (a full
                # disk, say) is left to the next round; writes report it where it matters.
                with contextlib.suppress(sqlite3.Error):
                    _, frames, _ = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames * page_size > self.wal_restart_bytes:
                        # Under a steady stream of writes a pass never reaches the WAL's end, so
                        # the WAL never restarts and grows without bound (40 MB a second under
                        # the bench's POSTs). The frames written since that pass are copied with
                        # this process's statements held back (a few ms); the next write then
                        # starts the WAL over.
                        with self._lock:
                            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            db.close()

    async def close(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._lock.acquire(blocking=False):
            try:
                return fn()
            finally:
                self._lock.release()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._locked, fn)

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._lock:
            return fn()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: Key) -> Item | None:
        return await self._run(lambda: self._cached_get(key))

    def _cached_get(self, key: Key) -> Item | None:
        self._check_others()
        if key in self._rows:
            row = self._rows[key]
        else:
            row = self._get_row(key)
            self._keyed_kinds.add(key.kind)
            self._keep_row(key, row)
        return _item(row) if row else None

    def _keep_row(self, key: Key, row: _Row | None) -> None:
        self._drop_row(key)
        self._rows_bytes += _size(row)
        if self._rows_bytes > MAX_CACHED_BYTES:
            self._drop_rows()
            self._rows_bytes = _size(row)
        self._rows[key] = row

    def _drop_row(self, key: Key) -> None:
        if key in self._rows:
            self._rows_bytes -= _size(self._rows.pop(key))

    def _drop_rows(self) -> None:
        self._rows.clear()
        self._rows_bytes = 0

    def _check_others(self) -> None:
        """Drops every cached read once another connection (another store or process on the
        same file) has committed since the last look.

        Looked at once per turn of the event loop: the reads of one turn (the requests that
        arrived together) are concurrent with a commit made meanwhile elsewhere, so they may
        all be answered as before it; a read that starts after that commit has returned
        starts in a later turn, and sees it.
        """
        if self.path == ":memory:":
            return  # no other connection can reach it
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # the worker thread: look every time
        if loop is not None:
            if self._looked is loop:
                return
            self._looked = loop
            loop.call_soon(self._look_again)
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._drop_rows()
            self._drop_results()
            self._generations.clear()  # every version handed out before is stale

    def _look_again(self) -> None:
        self._looked = None

    def _get(self, key: Key) -> Item | None:
        row = self._get_row(key)
        return _item(row) if row else None

    def _get_row(self, key: Key) -> _Row | None:
        row: _Row | None = self.db.execute(
            f"SELECT {_COLUMNS} FROM {self._table(key.kind)} WHERE twin=? AND conn=? "
            f"AND kind={_literal(key.kind)} AND id=?",
            (key.twin, key.conn, key.id),
        ).fetchone()
        return row

    async def query(self, query: Query) -> list[Item]:
        return [_item(row) for row in await self._run(lambda: self._query_rows(query))]

    def _where(self, query: Query) -> tuple[str, list[Any]]:
        scope = query.scope
        # Kind and field paths are written into the statement, not bound: only then can SQLite
        # match a partial or expression index (items_delivery_status) to the query.
        clauses = ["twin=?", "conn=?", f"kind={_literal(scope.kind)}"]
        args: list[Any] = [scope.twin, scope.conn]
        if query.parent is not None:
            clauses.append("parent=?")
            args.append(query.parent)
        for name, value in query.equals.items():
            clauses.append(f"json_extract(data, {_path(name)}) = ?")
            args.append(_sql_value(value))
        for name, values in query.any_of.items():
            if not values:
                clauses.append("0")
                continue
            clauses.append(f"json_extract(data, {_path(name)}) IN ({', '.join('?' * len(values))})")
            args.extend(_sql_value(v) for v in values)
        return " AND ".join(clauses), args

    def _query_rows(self, query: Query) -> list[_Row]:
        where, args = self._where(query)
        if query.after_seq:
            where += " AND seq < ?" if query.descending else " AND seq > ?"
            args.append(query.after_seq)
        order = "DESC" if query.descending else "ASC"
        table = self._table(query.scope.kind)
        sql = f"SELECT {_COLUMNS} FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ? OFFSET ?"
        args += (query.limit, query.offset)
        rows: list[_Row] = self._cached(query.scope, sql, args, lambda c: c.fetchall())
        return rows

    async def count(self, query: Query) -> int:
        def run() -> int:
            where, args = self._where(query)
            sql = f"SELECT COUNT(*) FROM {self._table(query.scope.kind)} WHERE {where}"
            return int(self._cached(query.scope, sql, args, lambda c: c.fetchone()[0]))

        return await self._run(run)

    def _cached(
        self, scope: Scope, sql: str, args: list[Any], fetch: Callable[[sqlite3.Cursor], Any]
    ) -> Any:
        """The result of a read statement, from the cache while its scope was not written."""
        self._check_others()
        key = (sql, *args)
        # A scope has a generation once a result of it is cached; writes bump only those.
        generation = self._generation((scope.twin, scope.conn, scope.kind))
        try:
            found = self._results.get(key)
        except TypeError:  # a filter value that cannot be a key: read, do not keep
            return fetch(self.db.execute(sql, args))
        if found is not None and found[0] == generation:
            return found[1]
        result = fetch(self.db.execute(sql, args))
        size = sum(map(_size, result)) if isinstance(result, list) else _ROW_OVERHEAD
        if found is not None:
            old = found[1]
            self._results_bytes -= sum(map(_size, old)) if isinstance(old, list) else _ROW_OVERHEAD
        if self._results_bytes + size > MAX_CACHED_BYTES:
            self._drop_results()
        self._results[key] = (generation, result)
        self._results_bytes += size
        return result

    def _drop_results(self) -> None:
        self._results.clear()
        self._results_bytes = 0

    def _generation(self, scope: _ScopeKey) -> int:
        generation = self._generations.get(scope)
        if generation is None:
            generation = self._generations[scope] = next(self._stamps)
        return generation

    def version(self, scope: Scope) -> int | None:
        """A number that moves on whenever the items of ``scope`` may have changed (any write
        to it, a clear, another connection's commit); None while the store is busy."""
        if not self._lock.acquire(blocking=False):
            return None  # a statement in flight on the worker thread: no cheap answer now
        try:
            self._check_others()
            return self._generation((scope.twin, scope.conn, scope.kind))
        finally:
            self._lock.release()

    # -- writes --------------------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> list[Item | None]:
        return await self._grouped(ops, claim=False)

    async def claim(self, ops: Sequence[Merge]) -> list[Item | None]:
        return await self._grouped(ops, claim=True)

    async def _grouped(self, ops: Sequence[Op], *, claim: bool) -> list[Item | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Item | None]] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = []
            task = loop.create_task(self._commit_group(loop, waiting))
            self._committing.add(task)
            task.add_done_callback(self._committing.discard)
        waiting.append((ops, claim, future))
        return await future

    async def _commit_group(self, loop: asyncio.AbstractEventLoop, waiting: list[_Waiting]) -> None:
        """Runs after the writers of this turn of the loop queued their batches."""
        if self._waiting.get(loop) is waiting:
            del self._waiting[loop]
        try:
            outcomes = await self._run(lambda: self._write_group([(o, c) for o, c, _ in waiting]))
        except BaseException as exc:
            for _, _, future in waiting:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, _, future), outcome in zip(waiting, outcomes, strict=True):
            if future.done():
                continue  # its writer was cancelled; the batch is stored all the same
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _write_group(
        self, group: list[tuple[Sequence[Op], bool]]
    ) -> list[list[Item | None] | BaseException]:
        if len(group) == 1:
            try:
                return [self._write(*group[0])]
            except (StoreError, sqlite3.IntegrityError) as exc:
                return [exc]
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        row = db.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        self._seq = seq_before = max(self._seq, int(row[0])) if row else self._seq
        outcomes: list[list[Item | None] | BaseException] = []
        written: dict[Key, _Row | None] = {}
        self._group_written = written
        try:
            for ops, claim in group:
                # A batch of one op that writes with one statement needs no savepoint: a
                # statement that fails changes nothing, and such an op fails before or in it.
                alone = len(ops) == 1 and type(ops[0]) in _ONE_STATEMENT
                if not alone:
                    db.execute("SAVEPOINT batch")
                seq_at = self._seq
                self._written = {}
                try:
                    outcomes.append(self._apply_all(ops, claim))
                    written.update(self._written)
                except Exception as exc:
                    if not db.in_transaction:
                        raise  # SQLite gave up the whole transaction (a full disk, ...)
                    if not alone:
                        db.execute("ROLLBACK TO batch")
                    self._seq = seq_at
                    outcomes.append(exc)
                if not alone:
                    db.execute("RELEASE batch")
            self._save_seq(seq_before)
            db.execute("COMMIT")
        except BaseException as exc:
            self._abort(seq_before, exc)
        self._cache_written(written)
        return outcomes

    def _cache_written(self, written: dict[Key, _Row | None]) -> None:
        """Rows a committed transaction wrote, kept for reads by key of kinds read that way."""
        self._written, self._group_written = {}, {}
        for key, row in written.items():
            self._keep_row(key, row)

    def _save_seq(self, seq_before: int) -> None:
        if self._seq != seq_before:
            self.db.execute(
                "INSERT INTO counters (name, value) VALUES ('seq', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (self._seq,),
            )

    def _abort(self, seq_before: int, exc: BaseException) -> NoReturn:
        # SQLite rolls back by itself on some errors (a full disk among them); a second
        # ROLLBACK would fail and hide the error that matters.
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._seq = seq_before
        if isinstance(exc, sqlite3.Error) and _no_room(exc):
            raise StorageFullError(
                f"the database {self.path} cannot be written ({exc}): the disk is full or a "
                "file size limit was reached; nothing of this change was applied"
            ) from exc
        raise exc

    def _write(self, ops: Sequence[Op], claim: bool = False) -> list[Item | None]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        # Re-read under the write lock: another process may have written to the same file.
        row = db.execute("SELECT value FROM counters WHERE name = 'seq'").fetchone()
        self._seq = seq_before = max(self._seq, int(row[0])) if row else self._seq
        self._written, self._group_written = {}, {}
        try:
            results = self._apply_all(ops, claim)
            self._save_seq(seq_before)
            db.execute("COMMIT")
        except BaseException as exc:
            self._abort(seq_before, exc)
        self._cache_written(self._written)
        return results

    def _apply_all(self, ops: Sequence[Op], claim: bool) -> list[Item | None]:
        """A claim's merges yield None instead of failing when their item moved on or went."""
        return [
            self._claim(index, op) if claim and isinstance(op, Merge) else self._apply(index, op)
            for index, op in enumerate(ops)
        ]

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        # Batches are already serialised by the single worker thread and process.
        yield

    def _claim(self, index: int, op: Merge) -> Item | None:
        current = self._get(op.key)
        if current is None or (op.expect is not None and current.version != op.expect):
            return None
        return self._apply(index, op)

    def _forget(self, key: Key) -> None:
        """A write to ``key`` is under way: its cached reads are stale from now on (even if the
        write rolls back, a dropped entry is merely read again)."""
        if key.kind in self._keyed_kinds:
            self._drop_row(key)
        self._moved((key.twin, key.conn, key.kind))

    def _moved(self, scope: _ScopeKey) -> None:
        if scope in self._generations:
            self._generations[scope] = next(self._stamps)

    def _apply(self, index: int, op: Op) -> Item | None:
        if isinstance(op, Append):
            self._append(index, op)
            return None
        if not isinstance(op, (Require, Clear, Trim)):
            self._forget(op.key)
        if isinstance(op, Put):
            return self._put(index, op)
        if isinstance(op, Merge):
            current = self._existing(index, op.key, op.expect)
            data = {**merge_patch(current.data, op.patch), **dict.fromkeys(op.set_null)}
            return self._store(op.key, data, current.parent, current, op.now)
        if isinstance(op, Delete):
            cursor = self.db.execute(
                f"DELETE FROM {self._table(op.key.kind)} WHERE twin=? AND conn=? "
                f"AND kind={_literal(op.key.kind)} AND id=?",
                (op.key.twin, op.key.conn, op.key.id),
            )
            if op.must_exist and cursor.rowcount == 0:
                raise StoreError("missing", op.key, index)
            if op.key.kind in self._keyed_kinds:
                self._written[op.key] = None
            return None
        if isinstance(op, Require):
            self._existing(index, op.key, None)
            return None
        if isinstance(op, Trim):
            self._trim(op)
            return None
        self._clear(op)
        return None

    def _trim(self, op: Trim) -> None:
        scope = op.scope
        self._forget_scope(scope.twin, scope.conn, scope.kind)
        where = f"twin=? AND conn=? AND kind={_literal(scope.kind)}"
        args = (scope.twin, scope.conn)
        # The (keep+1)-th newest and everything older go; NULL (too few items) deletes nothing.
        table = self._table(scope.kind)
        self.db.execute(
            f"DELETE FROM {table} WHERE {where} AND seq <= "
            f"(SELECT seq FROM {table} WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (*args, *args, max(0, op.keep)),
        )

    def _put(self, index: int, op: Put) -> Item:
        if op.expect is None or op.expect == "absent":
            # New keys are the usual case (records, journal entries, deliveries): insert first.
            item = self._insert(op)
            if item is not None:
                return item
            if op.expect == "absent":
                raise StoreError("exists", op.key, index)
        current = self._get(op.key)
        if op.expect == "absent" and current is not None:
            raise StoreError("exists", op.key, index)
        if op.expect == "present" and current is None:
            raise StoreError("missing", op.key, index)
        if isinstance(op.expect, int) and (current is None or current.version != op.expect):
            raise StoreError("conflict" if current else "missing", op.key, index)
        return self._store(op.key, dict(op.data), op.parent, current, op.now)

    def _existing(self, index: int, key: Key, expect: int | None) -> Item:
        current = self._get(key)
        if current is None:
            raise StoreError("missing", key, index)
        if expect is not None and current.version != expect:
            raise StoreError("conflict", key, index)
        return current

    def _insert(self, op: Put) -> Item | None:
        """Store ``op`` as a new item; None (and nothing changed) when its key exists."""
        now = op.now or time.time()
        key = op.key
        data = orjson.dumps(op.data).decode()
        row = (key.twin, key.conn, key.kind, key.id, op.parent, self._seq + 1, 1, data, now, now)
        try:
            self.db.execute(_INSERT[self._table(key.kind)], row)
        except sqlite3.IntegrityError:
            return None
        self._seq += 1
        if key.kind in self._keyed_kinds:
            self._written[key] = row
        return Item(key, dict(op.data), op.parent, self._seq, 1, now, now)

    def _append(self, index: int, op: Append) -> None:
        scope = op.scope
        twin, conn, kind = scope.twin, scope.conn, scope.kind
        self._moved((twin, conn, kind))
        keyed = kind in self._keyed_kinds
        seq = self._seq
        rows = []
        for item_id, data, at in op.entries:
            seq += 1
            now = at or time.time()
            row = (twin, conn, kind, item_id, "", seq, 1, orjson.dumps(data).decode(), now, now)
            rows.append(row)
            if keyed:
                key = Key(twin, conn, kind, item_id)
                self._drop_row(key)
                self._written[key] = row
        try:
            # One statement prepared once for every row (a Put each is twice the cost).
            self.db.executemany(_INSERT[self._table(kind)], rows)
        except sqlite3.IntegrityError:
            raise StoreError("exists", scope.key(self._taken(op)), index) from None
        self._seq = seq

    def _taken(self, op: Append) -> str:
        """The first id of ``op`` stored before it (or given twice): why its insert failed."""
        seen: set[str] = set()
        for item_id, _, _ in op.entries:
            row = self._get_row(op.scope.key(item_id))
            # Rows this op inserted before failing have sequences past self._seq.
            if item_id in seen or (row is not None and row[5] <= self._seq):
                return item_id
            seen.add(item_id)
        return op.entries[0][0] if op.entries else ""

    def _store(self, key: Key, data: Any, parent: str, current: Item | None, now: float) -> Item:
        now = now or time.time()
        if current is None:
            self._seq += 1
            item = Item(key, data, parent, self._seq, 1, now, now)
        else:
            item = Item(key, data, parent, current.seq, current.version + 1, current.created, now)
        row = (
            key.twin,
            key.conn,
            key.kind,
            key.id,
            item.parent,
            item.seq,
            item.version,
            orjson.dumps(item.data).decode(),
            item.created,
            item.updated,
        )
        self.db.execute(_UPSERT[self._table(key.kind)], row)
        if key.kind in self._keyed_kinds:
            self._written[key] = row
        return item

    def _forget_scope(self, twin: str, conn: str | None, kind: str | None) -> None:
        """Cached reads of a whole scope (or, with None, of every kind or connection) are
        stale: rarely done (a trim of the journal, a reset), so a pass over the cache will do."""

        def kept(rows: dict[Key, _Row | None]) -> dict[Key, _Row | None]:
            return {
                k: row
                for k, row in rows.items()
                if not (k.twin == twin and conn in (None, k.conn) and kind in (None, k.kind))
            }

        # Only kinds read by key have rows kept (the journal's, trimmed every 100 entries, has
        # none unless an entry was looked up by id).
        if kind is None or kind in self._keyed_kinds:
            self._rows = kept(self._rows)
            self._rows_bytes = sum(map(_size, self._rows.values()))
            # Rows written earlier in this transaction are not cached after it either.
            self._written = kept(self._written)
            group = kept(self._group_written)
            self._group_written.clear()
            self._group_written.update(group)
        if conn is not None and kind is not None:
            self._moved((twin, conn, kind))
        else:
            self._drop_results()
            for scope in self._generations:
                if scope[0] == twin and conn in (None, scope[1]) and kind in (None, scope[2]):
                    self._generations[scope] = next(self._stamps)

    def _clear(self, op: Clear) -> None:
        self._forget_scope(op.twin, op.conn, None)
        clauses, args = ["twin=?"], [op.twin]
        if op.conn is not None:
            clauses.append("conn=?")
            args.append(op.conn)
        if op.kinds:
            clauses.append(f"kind IN ({','.join(map(_literal, op.kinds))})")
        if op.keep:
            clauses.append(f"kind NOT IN ({','.join(map(_literal, op.keep))})")
        where = " AND ".join(clauses)
        for table in _TABLES:
            if table == "items" or self.logs:
                self.db.execute(f"DELETE FROM {table} WHERE {where}", args)


# Failures that mean "no room to write": ENOSPC is SQLITE_FULL; EFBIG (a file size limit)
# surfaces as a failed write.
_NO_ROOM = frozenset(
    {"SQLITE_FULL", "SQLITE_IOERR_WRITE", "SQLITE_IOERR_FSYNC", "SQLITE_IOERR_TRUNCATE"}
)


def _no_room(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in _NO_ROOM


@functools.lru_cache(maxsize=4096)
def _literal(text: str) -> str:
    """``text`` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _path(name: str) -> str:
    """The JSON path of top-level field ``name``, as an SQL string literal."""
    return _literal(f'$."{name}"')


def _size(row: _Row | None) -> int:
    """What a cached row costs, roughly: its JSON and a share for the bookkeeping."""
    return _ROW_OVERHEAD + (len(row[7]) if row else 0)


def _sql_value(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


def _item(row: tuple[Any, ...]) -> Item:
    twin, conn, kind, item_id, parent, seq, version, data, created, updated = row
    return Item(
        Key(twin, conn, kind, item_id), orjson.loads(data), parent, seq, version, created, updated
    )
