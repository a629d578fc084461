"""PostgreSQL backend: several replicas of a twin on one database.

psycopg 3 with an async connection pool (``pip install 'apitwin[postgres]'``). Each batch is one
transaction; rows a batch changes are locked (``FOR UPDATE``) before they are read, so concurrent
writers, in this process or another, never lose each other's updates, and versioned writes detect
conflicts exactly as with SQLite. Sequence numbers come from a database sequence, so they are
unique and increasing across replicas (in the order rows were written, not committed).

The schema is created and upgraded on open: a version table and numbered migrations, applied under
a transaction-scoped advisory lock, so replicas that start at the same time on an empty database
take turns and each migration runs once.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import orjson
import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from apitwin.errors import ConfigError, StorageFullError
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

# Numbered migrations: entry n brings the schema from version n to n + 1. Append only.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE SEQUENCE apitwin_item_seq",
        # data is json, not jsonb: it keeps the documents' key order (responses render from it).
        """CREATE TABLE apitwin_items (
            twin TEXT NOT NULL, conn TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL,
            parent TEXT NOT NULL DEFAULT '', seq BIGINT NOT NULL, version INTEGER NOT NULL,
            data JSON NOT NULL, created DOUBLE PRECISION NOT NULL,
            updated DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (twin, conn, kind, id))""",
        "CREATE INDEX apitwin_items_scope ON apitwin_items (twin, conn, kind, parent, seq)",
        "CREATE INDEX apitwin_items_seq ON apitwin_items (twin, conn, kind, seq)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
CONNECT_TIMEOUT: Final = 15.0
POOL_SIZE: Final = 10
_RETRIES: Final = 5  # a batch chosen as a deadlock victim is run again
_COLUMNS: Final = "twin, conn, kind, id, parent, seq, version, data, created, updated"
# data as text: orjson parses it faster than psycopg's json loader, and keeps key order.
_SELECT: Final = "twin, conn, kind, id, parent, seq, version, data::text, created, updated"
_KEY: Final = "twin=%s AND conn=%s AND kind=%s AND id=%s"

Connection = psycopg.AsyncConnection[tuple[Any, ...]]


def lock_id(name: str) -> int:
    """A stable signed 64-bit advisory lock id for ``name`` (apitwin's own namespace)."""
    digest = hashlib.sha256(f"apitwin:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def describe_url(url: str) -> str:
    """Where ``url`` points, for messages: never its password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "PostgreSQL (unparsable URL)"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    return f"PostgreSQL at {host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


class PostgresStore:
    shared = True

    def __init__(
        self, url: str, *, pool_size: int = POOL_SIZE, connect_timeout: float = CONNECT_TIMEOUT
    ) -> None:
        try:
            conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise ConfigError(f"not a usable PostgreSQL URL: {exc}", field="db") from None
        self.url = url
        self.connect_timeout = connect_timeout
        # Two at least: start-up holds one for its lock while the twin seeds through another.
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            open=False,
            kwargs={"autocommit": True},
            timeout=connect_timeout,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self.connect_timeout)
        except PoolTimeout:
            await self._pool.close()
            raise ConfigError(
                f"cannot connect to {describe_url(self.url)} within {self.connect_timeout:g} s; "
                "check the --db URL and that the server accepts connections",
                field="db",
            ) from None
        await self.migrate()

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> int:
        """Bring the schema up to date; returns the version found before."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id("migrate"),))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS apitwin_schema ("
                "version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
            )
            cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM apitwin_schema")
            row = await cursor.fetchone()
            found = int(row[0]) if row else 0
            if found > SCHEMA_VERSION:
                raise ConfigError(
                    f"the database's schema is version {found}, newer than this apitwin's "
                    f"{SCHEMA_VERSION}; upgrade apitwin",
                    field="db",
                )
            for version in range(found, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO apitwin_schema (version, applied) VALUES (%s, %s)",
                    (version + 1, time.time()),
                )
            return found

    async def schema_version(self) -> int:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT COALESCE(MAX(version), 0) FROM apitwin_schema")
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    def version(self, scope: Scope) -> int | None:
        return None  # other replicas write too: what was read is never known to be current

    @asynccontextmanager
    async def lock(self, name: str) -> AsyncIterator[None]:
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(name),))
            yield

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: Key) -> Item | None:
        async with self._pool.connection() as conn:
            return await _get(conn, key)

    async def query(self, query: Query) -> list[Item]:
        where, args = _where(query)
        if query.after_seq:
            where += " AND seq < %s" if query.descending else " AND seq > %s"
            args.append(query.after_seq)
        order = "DESC" if query.descending else "ASC"
        sql = (
            f"SELECT {_SELECT} FROM apitwin_items WHERE {where} "
            f"ORDER BY seq {order} LIMIT %s OFFSET %s"
        )
        async with self._pool.connection() as conn:
            cursor = await conn.execute(sql, (*args, query.limit, query.offset))
            return [_item(row) for row in await cursor.fetchall()]

    async def count(self, query: Query) -> int:
        where, args = _where(query)
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT COUNT(*) FROM apitwin_items WHERE {where}",
                args,
            )
            row = await cursor.fetchone()
            return int(row[0]) if row else 0

    # -- writes --------------------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> list[Item | None]:
        return await self._transaction(ops, claim=False)

    async def claim(self, ops: Sequence[Merge]) -> list[Item | None]:
        return await self._transaction(ops, claim=True)

    async def _transaction(self, ops: Sequence[Op], *, claim: bool) -> list[Item | None]:
        for attempt in range(_RETRIES):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    results: list[Item | None] = []
                    for index, op in enumerate(ops):
                        if claim and isinstance(op, Merge):
                            results.append(await _claim(conn, index, op))
                        else:
                            results.append(await _apply(conn, index, op))
                    return results
            except (errors.DeadlockDetected, errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
            except errors.DiskFull as exc:
                raise storage_full(exc) from exc
        raise AssertionError("unreachable")


def storage_full(exc: psycopg.Error) -> StorageFullError:
    """SQLSTATE 53100: the server's disk is full; the transaction was rolled back whole."""
    detail = exc.diag.message_primary or str(exc)
    return StorageFullError(
        f"the PostgreSQL server cannot write ({detail}): its disk is full; nothing of this "
        "change was applied"
    )


async def _get(conn: Connection, key: Key, lock: str = "") -> Item | None:
    cursor = await conn.execute(
        f"SELECT {_SELECT} FROM apitwin_items WHERE {_KEY} {lock}",
        (key.twin, key.conn, key.kind, key.id),
    )
    row = await cursor.fetchone()
    return _item(row) if row else None


async def _apply(conn: Connection, index: int, op: Op) -> Item | None:
    if isinstance(op, Put):
        return await _put(conn, index, op)
    if isinstance(op, Merge):
        current = await _get(conn, op.key, "FOR UPDATE")
        if current is None:
            raise StoreError("missing", op.key, index)
        if op.expect is not None and current.version != op.expect:
            raise StoreError("conflict", op.key, index)
        return await _merge(conn, op, current)
    if isinstance(op, Delete):
        cursor = await conn.execute(
            f"DELETE FROM apitwin_items WHERE {_KEY}",
            (op.key.twin, op.key.conn, op.key.kind, op.key.id),
        )
        if op.must_exist and cursor.rowcount == 0:
            raise StoreError("missing", op.key, index)
        return None
    if isinstance(op, Require):
        # KEY SHARE: the item cannot be deleted before this batch commits.
        if await _get(conn, op.key, "FOR KEY SHARE") is None:
            raise StoreError("missing", op.key, index)
        return None
    if isinstance(op, Trim):
        await _trim(conn, op)
        return None
    if isinstance(op, Append):
        await _append(conn, index, op)
        return None
    await _clear(conn, op)
    return None


async def _append(conn: Connection, index: int, op: Append) -> None:
    scope = op.scope
    rows = []
    for item_id, data, at in op.entries:
        now = at or time.time()
        rows.append((scope.twin, scope.conn, scope.kind, item_id, _json(data), now, now))
    if not rows:
        return
    try:
        # One pipelined statement for all, not a round trip per entry.
        async with conn.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO apitwin_items ({_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, '', nextval('apitwin_item_seq'), 1, %s, %s, %s)",
                rows,
            )
    except errors.UniqueViolation as exc:
        # The detail names the key: "Key (twin, conn, kind, id)=(t, c, k, <id>) already exists."
        taken = (exc.diag.message_detail or "").rpartition(", ")[2].partition(")")[0]
        raise StoreError("exists", scope.key(taken or op.entries[0][0]), index) from None


async def _trim(conn: Connection, op: Trim) -> None:
    scope = op.scope
    where = "twin=%s AND conn=%s AND kind=%s"
    args = (scope.twin, scope.conn, scope.kind)
    # The (keep+1)-th newest and everything older go; NULL (too few items) deletes nothing.
    await conn.execute(
        f"DELETE FROM apitwin_items WHERE {where} AND seq <= "
        f"(SELECT seq FROM apitwin_items WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET %s)",
        (*args, *args, max(0, op.keep)),
    )


async def _claim(conn: Connection, index: int, op: Merge) -> Item | None:
    current = await _get(conn, op.key, "FOR UPDATE SKIP LOCKED")
    if current is None or (op.expect is not None and current.version != op.expect):
        return None
    return await _merge(conn, op, current)


async def _merge(conn: Connection, op: Merge, current: Item) -> Item:
    data = {**merge_patch(current.data, op.patch), **dict.fromkeys(op.set_null)}
    now = op.now or time.time()
    key = op.key
    await conn.execute(
        f"UPDATE apitwin_items SET data=%s, version=version+1, updated=%s WHERE {_KEY}",
        (_json(data), now, key.twin, key.conn, key.kind, key.id),
    )
    return Item(key, data, current.parent, current.seq, current.version + 1, current.created, now)


async def _put(conn: Connection, index: int, op: Put) -> Item:
    key, data, now = op.key, dict(op.data), op.now or time.time()
    ident = (key.twin, key.conn, key.kind, key.id)
    if op.expect == "present" or isinstance(op.expect, int):
        guard = " AND version=%s" if isinstance(op.expect, int) else ""
        args = (*ident, op.expect) if isinstance(op.expect, int) else ident
        cursor = await conn.execute(
            f"UPDATE apitwin_items SET data=%s, parent=%s, version=version+1, updated=%s "
            f"WHERE {_KEY}{guard} RETURNING seq, version, created",
            (_json(data), op.parent, now, *args),
        )
        row = await cursor.fetchone()
        if row is None:
            exists = guard and await _get(conn, key) is not None
            raise StoreError("conflict" if exists else "missing", key, index)
        return Item(key, data, op.parent, row[0], row[1], row[2], now)
    insert = (
        f"INSERT INTO apitwin_items ({_COLUMNS}) "
        "VALUES (%s, %s, %s, %s, %s, nextval('apitwin_item_seq'), 1, %s, %s, %s) "
        "ON CONFLICT (twin, conn, kind, id) DO "
    )
    if op.expect == "absent":
        # DO NOTHING, not a check first: a row another replica inserts meanwhile is found here.
        insert += "NOTHING"
    else:
        insert += (
            "UPDATE SET data=excluded.data, parent=excluded.parent, "
            "version=apitwin_items.version+1, updated=excluded.updated"
        )
    cursor = await conn.execute(
        insert + " RETURNING seq, version, created",
        (*ident, op.parent, _json(data), now, now),
    )
    row = await cursor.fetchone()
    if row is None:
        raise StoreError("exists", key, index)
    return Item(key, data, op.parent, row[0], row[1], row[2], now)


async def _clear(conn: Connection, op: Clear) -> None:
    clauses: list[str] = ["twin=%s"]
    args: list[Any] = [op.twin]
    if op.conn is not None:
        clauses.append("conn=%s")
        args.append(op.conn)
    if op.kinds:
        clauses.append("kind = ANY(%s)")
        args.append(list(op.kinds))
    if op.keep:
        clauses.append("NOT (kind = ANY(%s))")
        args.append(list(op.keep))
    await conn.execute(
        f"DELETE FROM apitwin_items WHERE {' AND '.join(clauses)}",
        args,
    )


def _where(query: Query) -> tuple[str, list[Any]]:
    scope = query.scope
    clauses = ["twin=%s", "conn=%s", "kind=%s"]
    args: list[Any] = [scope.twin, scope.conn, scope.kind]
    if query.parent is not None:
        clauses.append("parent=%s")
        args.append(query.parent)
    for name, value in query.equals.items():
        # Compared as jsonb: true, 1 and "1" stay distinct, as JSON values are.
        clauses.append("(data -> %s)::jsonb = %s::jsonb")
        args.extend([name, _json(value)])
    for name, values in query.any_of.items():
        if not values:
            clauses.append("FALSE")
            continue
        clauses.append(f"(data -> %s)::jsonb IN ({', '.join(['%s::jsonb'] * len(values))})")
        args.extend([name, *(_json(v) for v in values)])
    return " AND ".join(clauses), args


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _item(row: tuple[Any, ...]) -> Item:
    twin, conn, kind, item_id, parent, seq, version, data, created, updated = row
    return Item(
        Key(twin, conn, kind, item_id), orjson.loads(data), parent, seq, version, created, updated
    )
