"""The storage port: a small async protocol every backend (SQLite, PostgreSQL) implements.

Everything a twin keeps is an *item*: a JSON document under (twin, connection, kind, id), with an
optional parent (for nested resources), an insertion sequence (stable cursors), and a version
(optimistic concurrency). Writes are batches of operations applied atomically: a record change and
the events it causes commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Key:
    twin: str
    conn: str
    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class Scope:
    twin: str
    conn: str
    kind: str

    def key(self, item_id: str) -> Key:
        return Key(self.twin, self.conn, self.kind, item_id)


@dataclass(frozen=True, slots=True)
class Item:
    key: Key
    data: dict[str, Any]
    parent: str = ""
    seq: int = 0
    version: int = 1
    created: float = 0.0
    updated: float = 0.0


# -- write operations (applied in order, all or nothing) -------------------------------------


@dataclass(frozen=True, slots=True)
class Put:
    """Create or replace. ``expect``: "absent", "present", a version number, or None (any)."""

    key: Key
    data: Mapping[str, Any]
    parent: str = ""
    expect: str | int | None = None
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Merge:
    """JSON merge patch (RFC 7396) onto an existing item, applied inside the transaction."""

    key: Key
    patch: Mapping[str, Any]
    expect: int | None = None
    now: float = 0.0
    set_null: tuple[str, ...] = ()  # top-level fields set to null after the patch


@dataclass(frozen=True, slots=True)
class Delete:
    key: Key
    must_exist: bool = True


@dataclass(frozen=True, slots=True)
class Require:
    """Precondition: the item exists (e.g. the parent of a nested create)."""

    key: Key


@dataclass(frozen=True, slots=True)
class Clear:
    """Remove every item of a twin (``conn`` None: all connections), optionally of some kinds."""

    twin: str
    conn: str | None = None
    kinds: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # kinds left alone (e.g. a connection's webhook endpoints)


@dataclass(frozen=True, slots=True)
class Trim:
    """Remove the oldest items of one scope beyond the newest ``keep`` (a ring buffer's tail)."""

    scope: Scope
    keep: int


@dataclass(frozen=True, slots=True)
class Append:
    """New items of one scope, each under an id not used before (a log's entries): cheaper than
    a Put each, as nothing is looked up or handed back. An id in use fails the batch."""

    scope: Scope
    entries: Sequence[tuple[str, Mapping[str, Any], float]]  # (id, data, time; 0: now)


Op = Put | Merge | Delete | Require | Clear | Trim | Append


@dataclass(frozen=True, slots=True)
class Query:
    scope: Scope
    parent: str | None = None
    equals: Mapping[str, Any] = field(default_factory=dict)  # top-level JSON field equality
    after_seq: int = 0
    offset: int = 0
    limit: int = 100
    descending: bool = False
    # A top-level JSON field equal to one of the values (`?tags=dog&tags=cat`); () matches nothing.
    any_of: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)


class StoreError(Exception):
    """A batch was refused; nothing in it was applied."""

    def __init__(self, reason: str, key: Key, index: int) -> None:
        super().__init__(f"{reason}: {key.kind} {key.id!r}")
        self.reason = reason  # "missing", "exists", "conflict"
        self.key = key
        self.index = index


class Store(Protocol):
    # True when other processes may share the data (several replicas on one database): caches
    # of stored state must then be re-read, and the virtual clock lives in the store.
    shared: bool

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def get(self, key: Key) -> Item | None: ...

    async def query(self, query: Query) -> list[Item]: ...

    async def count(self, query: Query) -> int: ...

    async def write(self, ops: Sequence[Op]) -> list[Item | None]:
        """Apply ``ops`` atomically; returns the resulting item per op (None for deletes, trims,
        clears and appends)."""
        ...

    async def claim(self, ops: Sequence[Merge]) -> list[Item | None]:
        """Apply each versioned merge on its own terms, in one transaction: an item that is gone,
        whose version moved, or that another transaction holds right now (``SKIP LOCKED``) is
        skipped (None) instead of failing the batch. Workers claim leases with it."""
        ...

    def version(self, scope: Scope) -> int | None:
        """A number that moves on whenever the items of ``scope`` may have changed, for caches of
        what was read from it; None when the store cannot tell cheaply (then nothing is kept)."""
        ...

    def lock(self, name: str) -> AbstractAsyncContextManager[None]:
        """Held by one process at a time among those sharing the store (e.g. start-up)."""
        ...


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return patch
    result = dict(target) if isinstance(target, Mapping) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result
