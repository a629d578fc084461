"""The journal: each inbound request, what the twin answered, and why.

Entries are kept in the store (kind ``request``) under (twin, connection), so they survive a
restart and a test can ask "was submitExpert called three times with 201?" through
:meth:`Journal.count`.

Secrets never reach the store: credential headers, cookies and sensitive query parameters are
masked, JSON and form bodies have sensitive fields masked, and every credential value seen in the
request is then scrubbed from all text of the entry (path, bodies, headers, explanation). Binary
(base64) bodies are kept as they are.

Cost per request: a request's exchange is queued as it is answered, and its entry is built and
stored by one writer for every request answered in the same turn of the event loop, in one
transaction (group commit). The request returns once its entry is stored, so a journal read
after a request sees it, on any replica. (Answering first and journalling after was measured too:
under load it gave fewer requests per second and a p99 ten times longer, as requests no longer
paced themselves on the writes.)

Storage: in a store one process owns (SQLite), the entries of one connection written together
are one item, a *chunk* (up to ``_CHUNK`` of them, their JSON compressed: ``{"packed": base64
of zlib}``). An item per entry cost twice as much to write, and the entries of a moment are
much alike (the same headers and bodies): compressed tenfold, a chunk fits in a page of the
database, where its JSON spilled over several, each written to the WAL and copied again.

Reads see the newest ``ring_size`` entries of a connection, exactly; every ``prune_every``
entries (default a tenth of the ring, at most 100) the chunks wholly older than those are
deleted in the same transaction. The journal knows the sizes of the chunks it wrote; chunks from
before a restart go once the newer ones hold a whole ring. In a store several replicas share
(PostgreSQL), where no replica knows the others' chunks, each entry is an item of its own (the
entry's fields, as older files hold them too) and the oldest beyond ``ring_size`` are deleted
every ``prune_every`` writes of a replica. Reads scan a connection's ring in Python (a thousand
entries take a few milliseconds).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import difflib
import functools
import itertools
import logging
import random
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import unquote, unquote_plus

import orjson

from apitwin.changes import Change, ChangeFeed
from apitwin.clock import VirtualClock
from apitwin.errors import InvalidInputError, StorageFullError
from apitwin.http import MockResponse
from apitwin.service.exchange import Exchange
from apitwin.spec.model import SecurityScheme
from apitwin.state.store import Append, Clear, Op, Query, Scope, Store, Trim
from apitwin.tenants import mask

REQUEST_KIND: Final = "request"
DEFAULT_RING: Final = 1000
DEFAULT_BODY_LIMIT: Final = 16 * 1024
_DECODE_CAP: Final = 1 << 20  # bodies beyond this are masked on their first MiB only
_MIN_SCRUB: Final = 6  # shorter values would mangle ordinary text
# Items read per query while scanning a ring: a few first (the newest page is in them), then more.
_SCAN_BATCHES: Final = (4, 50)
_CHUNK: Final = 100  # entries per stored item at most
_KEPT_NAMES: Final = 4096
log = logging.getLogger("apitwin")

# Names (of headers, query parameters, body fields) whose values are credentials.
SENSITIVE: Final = re.compile(
    r"authori[sz]ation|cookie|api[-_]?key|token|secret|passw|credential|session|signature"
    r"|private[-_]?key|client[-_]?assertion",
    re.IGNORECASE,
)
# Every match of SENSITIVE contains one of these once casefolded: a substring test rules out most
# texts far faster than the regex (which costs tens of µs on an ordinary response body).
_SENSITIVE_STEMS: Final = (
    "authori", "cookie", "api", "token", "secret", "passw", "credential", "session",
    "signature", "private", "client",
)  # fmt: skip
# Fields named like credentials that only describe one ("token_type": "Bearer", "expires_in").
_METADATA: Final = re.compile(r"(type|_in|_at|expires?|count|url|uri)$", re.IGNORECASE)
_STATUS_CLASS: Final = re.compile(r"^[1-5]xx$", re.IGNORECASE)

Suggest = Callable[[str, str], Sequence[str]]


class _EntryIds:
    """Entry ids in the order they are made: the store's index of ids then grows at one end, as
    its entries do (random ids touch a page of it anywhere, several times the bytes written).

    Microseconds since the epoch (13 hex digits, until 2112), one more than the previous id's
    when the clock has not moved on, so unique within a process; then 24 random bits drawn per
    process, which keep the ids of replicas writing to one database apart.
    """

    def __init__(self) -> None:
        self._last = 0
        self._tag = f"{random.SystemRandom().getrandbits(24):06x}"

    def next(self) -> str:
        self._last = now = max(time.time_ns() // 1000, self._last + 1)
        return f"req_{now:013x}{self._tag}"


_ids = _EntryIds()


@dataclass(frozen=True, slots=True)
class Redaction:
    """Names to mask beyond the built-in patterns: the spec's apiKey header and query names."""

    headers: frozenset[str] = frozenset()  # lower case
    query: frozenset[str] = frozenset()
    # Answers of plain_header so far (the same few names come with every request).
    _plain: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def header(self, name: str) -> bool:
        return name in self.headers or _sensitive_name(name)

    def plain_header(self, name: str) -> bool:
        """A header (lower-case name) whose value is kept as it is."""
        plain = self._plain.get(name)
        if plain is None:
            if len(self._plain) >= _KEPT_NAMES:
                self._plain.clear()
            plain = name not in _CREDENTIAL_HEADERS and not self.header(name)
            self._plain[name] = plain
        return plain

    def parameter(self, name: str) -> bool:
        return name in self.query or _sensitive_name(name)


@functools.lru_cache(maxsize=4096)
def _sensitive_name(name: str) -> bool:
    # Cached: the same few header names come with every request.
    return SENSITIVE.search(name) is not None


def redaction_for(schemes: Iterable[SecurityScheme]) -> Redaction:
    headers, query = set(), set()
    for scheme in schemes:
        name = scheme.param_name or scheme.name
        if scheme.type == "apiKey" and scheme.location == "header":
            headers.add(name.lower())
        elif scheme.type == "apiKey" and scheme.location == "query":
            query.add(name)
    return Redaction(frozenset(headers), frozenset(query))


@dataclass(frozen=True, slots=True)
class BodyRecord:
    text: str = ""
    encoding: Literal["utf-8", "base64"] = "utf-8"
    size: int = 0  # bytes on the wire
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: str
    at: float  # virtual-clock time the request arrived
    connection: str
    method: str
    path: str
    query: str
    operation: str | None
    route: str | None  # "METHOD /template" of the matched operation
    request_headers: dict[str, str]
    request_body: BodyRecord
    valid: bool | None  # None: not validated (unmatched, unauthenticated)
    violations: list[dict[str, Any]]
    status: int
    response_headers: list[tuple[str, str]]
    response_body: BodyRecord
    latency_ms: float
    fault: str | None = None
    fault_kind: str | None = None
    why: str = ""

    def as_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies field by field, a measurable share of a request.
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        data["request_headers"] = dict(self.request_headers)
        data["request_body"] = _body_dict(self.request_body)
        data["violations"] = [dict(v) for v in self.violations]
        data["response_headers"] = [list(pair) for pair in self.response_headers]
        data["response_body"] = _body_dict(self.response_body)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JournalEntry:
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        known["request_body"] = BodyRecord(**data["request_body"])
        known["response_body"] = BodyRecord(**data["response_body"])
        known["response_headers"] = [(k, v) for k, v in data["response_headers"]]
        return cls(**known)


def _body_dict(body: BodyRecord) -> dict[str, Any]:
    return {
        "text": body.text,
        "encoding": body.encoding,
        "size": body.size,
        "truncated": body.truncated,
    }


@dataclass(slots=True)
class _Queued:
    """A finished exchange waiting for its entry to be built and stored."""

    exchange: Exchange
    entry_id: str
    at: float
    latency_ms: float
    connection: str
    fault: tuple[str | None, str | None]
    data: dict[str, Any] | None = None  # built already (``record``)
    stored: asyncio.Future[None] | None = None  # done once the entry is stored (``submit``)


@dataclass(frozen=True, slots=True)
class JournalPage:
    entries: list[JournalEntry]
    cursor: str | None  # pass back for the next page; None when there is none


@dataclass(frozen=True, slots=True)
class Filters:
    operation: str | None = None  # operationId, or "METHOD /template"
    method: str | None = None
    status: int | str | None = None  # 201, or a class such as "4xx"
    since: float | None = None
    until: float | None = None
    text: str | None = None  # substring of path, query or either body, any case
    fault: str | bool | None = None  # a rule id, or True/False: faulted or not

    def equals(self) -> dict[str, Any]:
        """The filters the store can apply (top-level field equality)."""
        found: dict[str, Any] = {}
        if self.operation is not None:
            found["route" if " " in self.operation else "operation"] = _route(self.operation)
        if self.method is not None:
            found["method"] = self.method.upper()
        if isinstance(self.status, str):
            if not _STATUS_CLASS.match(self.status):
                raise InvalidInputError(
                    f"status must be a number or a class like '4xx': {self.status!r}",
                    field="status",
                )
            found["status_class"] = self.status.lower()
        elif self.status is not None:
            found["status"] = int(self.status)
        if isinstance(self.fault, bool):
            found["faulted"] = self.fault
        elif self.fault is not None:
            found["fault"] = self.fault
        return found

    def matcher(self) -> Callable[[dict[str, Any]], bool]:
        """Whether a stored entry passes every filter (checks the filters' values first)."""
        equals = list(self.equals().items())
        since, until = self.since, self.until
        needle = self.text.casefold() if self.text else None

        def matches(data: dict[str, Any]) -> bool:
            for name, value in equals:
                found = data.get(name)
                if found != value or type(found) is not type(value):  # True is not 1
                    return False
            if since is not None and data["at"] < since:
                return False
            if until is not None and data["at"] > until:
                return False
            if needle is not None:
                texts = (data["path"], data["query"], data["request_body"]["text"])
                return any(needle in t.casefold() for t in (*texts, data["response_body"]["text"]))
            return True

        return matches


class Journal:
    def __init__(
        self,
        store: Store,
        twin: str,
        clock: VirtualClock,
        ring_size: int = DEFAULT_RING,
        *,
        redaction: Redaction | None = None,
        suggest: Suggest | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
        prune_every: int | None = None,
    ) -> None:
        if ring_size < 1:
            raise ValueError("ring_size must be at least 1")
        self.store = store
        self.twin = twin
        self.clock = clock
        self.ring_size = ring_size
        self.redaction = redaction or Redaction()
        self.suggest = suggest
        self.body_limit = body_limit
        self.prune_every = prune_every or max(1, min(100, ring_size // 10))
        self._unpruned: dict[str, int] = {}
        # Sizes of the chunks written to each connection (oldest first), as far as still kept.
        self._chunks: dict[str, collections.deque[int]] = {}
        self._queue: list[_Queued] = []
        self._writer: asyncio.Task[None] | None = None
        self._bodies: dict[tuple[bytes, str], tuple[dict[str, Any], frozenset[str]]] = {}
        self.changes = ChangeFeed()  # told of every entry recorded

    def scope(self, conn: str) -> Scope:
        return Scope(self.twin, conn, REQUEST_KIND)

    def forget(self, conn: str) -> None:
        """A connection was removed (its entries with it)."""
        self._unpruned.pop(conn, None)
        self._chunks.pop(conn, None)

    async def record(
        self,
        exchange: Exchange,
        fault_id: str | None = None,
        *,
        fault_kind: str | None = None,
        connection: str | None = None,
    ) -> JournalEntry | None:
        """Journal a finished exchange and wait until it is stored; returns the entry."""
        queued = self._queue_exchange(exchange, fault_id, fault_kind, connection)
        if queued is None:
            return None
        queued.data = self._build(queued)
        await self.flush()
        return JournalEntry.from_dict(queued.data)

    async def submit(
        self,
        exchange: Exchange,
        fault_id: str | None = None,
        *,
        fault_kind: str | None = None,
        connection: str | None = None,
    ) -> None:
        """Journal a finished exchange, with the others of this turn of the loop; returns once
        it is stored."""
        queued = self._queue_exchange(exchange, fault_id, fault_kind, connection)
        if queued is None:
            return
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or writer.get_loop() is not loop:
            await self.flush()
            return
        # A future of its own, set by the writer once this entry is stored: cheaper than a
        # shield of the writer per request, and cancelling the request cancels no one else.
        queued.stored = stored = loop.create_future()
        await stored

    def _queue_exchange(
        self,
        exchange: Exchange,
        fault_id: str | None,
        fault_kind: str | None,
        connection: str | None,
    ) -> _Queued | None:
        if exchange.response is None:
            return None
        latency = max(0.0, time.perf_counter() - exchange.started)
        queued = _Queued(
            exchange,
            _ids.next(),
            self.clock.now() - latency,
            round(latency * 1000, 2),
            exchange.connection if connection is None else connection,
            (fault_id, fault_kind),
        )
        self._queue.append(queued)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return queued

    async def flush(self) -> None:
        """Store every queued entry (a reader calls this first, to see what was answered).

        A reader on another event loop (a test driving the service beside a server's thread)
        waits on the writer's loop; if that loop has stopped, it stores the queue itself.
        """
        while (writer := self._writer) is not None:
            loop = writer.get_loop()
            if loop is asyncio.get_running_loop():
                # Shielded: a reader cancelled meanwhile must not cancel the others' write.
                await asyncio.shield(writer)
            elif loop.is_running():
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.flush(), loop))
            else:
                self._writer = None
                queued, self._queue = self._queue, []
                if queued:
                    await self._store(queued)

    async def _write(self) -> None:
        try:
            await asyncio.sleep(0)  # one turn of the loop: requests answered now join this write
            while self._queue:
                queued, self._queue = self._queue, []
                try:
                    await self._store(queued)
                except StorageFullError as exc:
                    # Reads keep working on a full disk; only their journal entries are lost.
                    log.warning("%d request(s) not journalled: %s", len(queued), exc.message)
                except Exception:
                    log.exception("%d request(s) not journalled", len(queued))
                finally:
                    _release(queued)
        finally:
            self._writer = None
            _release(self._queue)  # a writer cancelled early: its requests wait no longer

    async def _store(self, queued: list[_Queued]) -> None:
        by_conn: dict[str, list[dict[str, Any]]] = {}
        for item in queued:
            data = item.data or self._build(item)
            entries = by_conn.get(item.connection)
            if entries is None:
                entries = by_conn[item.connection] = []
            entries.append(data)
        ops: list[Op] = []
        written: list[tuple[str, list[int], int | None]] = []  # chunk sizes, items kept
        for conn, entries in by_conn.items():
            scope = self.scope(conn)
            sizes: list[int] = []
            if self.store.shared:
                ops.append(Append(scope, [(e["id"], e, e["at"]) for e in entries]))
            else:
                for first in range(0, len(entries), _CHUNK):
                    chunk = entries[first : first + _CHUNK]
                    head = chunk[0]
                    ops.append(Append(scope, [(head["id"], pack(chunk), head["at"])]))
                    sizes.append(len(chunk))
            unpruned = self._unpruned.get(conn, 0) + len(entries)
            keep = None
            if unpruned >= self.prune_every:
                keep = self._keep(conn, sizes)
                if keep is not None:
                    ops.append(Trim(scope, keep))
                unpruned = 0
            self._unpruned[conn] = unpruned
            written.append((conn, sizes, keep))
        await self.store.write(ops)
        # Known only once stored: a chunk counted that a failed write never stored would make
        # later trims keep too few.
        for conn, sizes, keep in written:
            if sizes:
                chunks = self._chunks.setdefault(conn, collections.deque())
                chunks.extend(sizes)
                while keep is not None and len(chunks) > keep:
                    chunks.popleft()
        if self.changes.listening:
            for item in queued:
                self.changes.publish(Change("request", item.connection, item.entry_id))

    def _keep(self, conn: str, sizes: list[int]) -> int | None:
        """How many of a connection's newest items hold its ring, once chunks of ``sizes`` are
        added: None while unknown (the chunks this journal wrote hold less than a ring, and
        older ones may hold the rest)."""
        if self.store.shared:
            return self.ring_size
        held = 0
        newest_first = itertools.chain(reversed(sizes), reversed(self._chunks.get(conn, ())))
        for count, size in enumerate(newest_first, 1):
            held += size
            if held >= self.ring_size:
                return count
        return None

    def _build(self, queued: _Queued) -> dict[str, Any]:
        return entry_data(
            queued.exchange,
            entry_id=queued.entry_id,
            at=queued.at,
            latency_ms=queued.latency_ms,
            connection=queued.connection,
            redaction=self.redaction,
            body_limit=self.body_limit,
            suggest=self.suggest,
            fault=queued.fault,
            bodies=self._bodies,
        )

    async def prune(self, conn: str) -> None:
        """Delete what lies beyond the newest ``ring_size`` entries."""
        await self.flush()
        keep = 0
        async for position, _ in self._ring(conn):
            keep = position[2]
        await self.store.write([Trim(self.scope(conn), keep)])
        self._unpruned[conn] = 0

    async def get(self, conn: str, entry_id: str) -> JournalEntry | None:
        await self.flush()
        async for _, data in self._ring(conn):
            if data["id"] == entry_id:
                return JournalEntry.from_dict(data)
        return None

    async def query(
        self,
        conn: str,
        *,
        operation: str | None = None,
        method: str | None = None,
        status: int | str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        fault: str | bool | None = None,
        limit: int = 20,
        cursor: str | None = None,
        newest_first: bool = True,
    ) -> JournalPage:
        matches = Filters(operation, method, status, since, until, text, fault).matcher()
        limit = max(1, min(limit, 500))
        after = _cursor(cursor)
        await self.flush()
        found: list[tuple[_Position, dict[str, Any]]] = []
        if newest_first:
            async for position, data in self._ring(conn):
                if (after is None or position[:2] < after) and matches(data):
                    found.append((position, data))
                    if len(found) > limit:
                        break
        else:
            ring = [pair async for pair in self._ring(conn)]
            for position, data in reversed(ring):
                if (after is None or position[:2] > after) and matches(data):
                    found.append((position, data))
                    if len(found) > limit:
                        break
        more = len(found) > limit
        entries = [JournalEntry.from_dict(data) for _, data in found[:limit]]
        last = found[limit - 1][0] if more else None
        return JournalPage(entries, f"{last[0]}.{last[1]}" if last else None)

    async def count(
        self,
        conn: str,
        *,
        operation: str | None = None,
        method: str | None = None,
        status: int | str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        fault: str | bool | None = None,
    ) -> int:
        matches = Filters(operation, method, status, since, until, text, fault).matcher()
        await self.flush()
        return sum([matches(data) async for _, data in self._ring(conn)])

    async def clear(self, conn: str | None = None) -> None:
        await self.flush()
        await self.store.write([Clear(self.twin, conn, (REQUEST_KIND,))])
        if conn is None:
            self._chunks.clear()
        else:
            self._chunks.pop(conn, None)

    async def _ring(self, conn: str) -> AsyncIterator[tuple[_Position, dict[str, Any]]]:
        """The stored entries of a connection's ring, newest first, each with its position:
        (item sequence, index in the item, items read so far)."""
        left = self.ring_size
        after = 0
        items = 0
        size = _SCAN_BATCHES[0]
        while True:
            query = Query(self.scope(conn), None, {}, after, 0, size, True)
            batch = await self.store.query(query)
            for item in batch:
                items += 1
                chunk = unpack(item.data)
                for index in range(len(chunk) - 1, -1, -1):
                    yield (item.seq, index, items), chunk[index]
                    left -= 1
                    if left == 0:
                        return
            if len(batch) < size:
                return
            after = batch[-1].seq
            size = _SCAN_BATCHES[1]


_Position = tuple[int, int, int]


def pack(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored form of a chunk of entries."""
    # Level 1: a tenth of the size at a third of level 6's cost; the entries of a chunk repeat
    # each other's headers and bodies.
    packed = zlib.compress(orjson.dumps(entries), 1)
    return {"packed": base64.b64encode(packed).decode("ascii")}


def unpack(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The entries of a stored item: a chunk's, or an entry stored as an item of its own (in a
    shared store, and in files written before chunks)."""
    packed = data.get("packed")
    if packed is None:
        return [data]
    entries: list[dict[str, Any]] = orjson.loads(zlib.decompress(base64.b64decode(packed)))
    return entries


def _release(queued: list[_Queued]) -> None:
    for item in queued:
        if item.stored is not None and not item.stored.done():
            item.stored.set_result(None)


def _cursor(cursor: str | None) -> tuple[int, int] | None:
    if not cursor:
        return None
    seq, _, index = cursor.partition(".")
    try:
        return int(seq), int(index or 0)
    except ValueError:
        raise InvalidInputError(
            f"cursor {cursor!r} is not one this journal issued; pass the next_cursor of the "
            "previous page, or none for the newest entries",
            field="cursor",
        ) from None


def _route(operation: str) -> str:
    method, sep, template = operation.partition(" ")
    return f"{method.upper()} {template.strip()}" if sep else operation


# -- building an entry (pure) ------------------------------------------------------------------


@dataclass(slots=True)
class _Secrets:
    """Credential values seen while masking, scrubbed from every text of the entry at the end."""

    values: set[str] = field(default_factory=set)

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if len(v) >= _MIN_SCRUB)

    def scrub(self, text: str) -> str:
        if not self.values:
            return text
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, mask(value))
        return text


def entry_data(
    exchange: Exchange,
    *,
    entry_id: str,
    at: float,
    latency_ms: float,
    connection: str,
    redaction: Redaction,
    body_limit: int = DEFAULT_BODY_LIMIT,
    suggest: Suggest | None = None,
    fault: tuple[str | None, str | None] = (None, None),
    bodies: dict[tuple[bytes, str], tuple[dict[str, Any], frozenset[str]]] | None = None,
) -> dict[str, Any]:
    """The stored form of a journal entry (JournalEntry.as_dict and the filter fields), built
    straight from the exchange: one is built per request.

    ``bodies`` keeps the masked form of response bodies already seen (a read answered from a
    kept answer repeats its bytes), with the credentials found in each."""
    request, response = exchange.request, exchange.response
    assert response is not None
    found = _Secrets()
    headers: dict[str, str] = {}
    plain = redaction.plain_header
    for name, value in request.headers.items():
        headers[name] = value if plain(name) else _mask_header(name, value, redaction, found)
    query = _mask_pairs(request.query, redaction, found) if request.query else ""
    raw = request.body
    request_body = (
        _body_dict(_body(raw, request.content_type, body_limit, redaction, found))
        if raw
        else _empty_body()
    )
    answer: list[list[str]] = []
    response_type = ""
    for name, value in response.headers:
        lower = name.lower()
        if lower == "content-type" and not response_type:
            response_type = value.split(";")[0].strip().lower()
        if not plain(lower):
            value = _mask_header(lower, value, redaction, found)
        answer.append([name, value])
    response_body = _response_body(
        response.body, response_type, body_limit, redaction, found, bodies
    )
    op = exchange.match.operation if exchange.match else None
    violations = _violations(exchange, response)
    path = request.path
    why = (
        explain(exchange, response, suggest, fault[0]) if response.status >= 400 or fault[0] else ""
    )
    if found.values:  # a credential was seen: no text of the entry may repeat it
        path, query, why = found.scrub(path), found.scrub(query), found.scrub(why)
        headers = {k: found.scrub(v) for k, v in headers.items()}
        answer = [[k, found.scrub(v)] for k, v in answer]
        request_body = _scrubbed(request_body, found)
        response_body = _scrubbed(response_body, found)
    status = response.status
    return {
        "id": entry_id,
        "at": at,
        "connection": connection,
        "method": request.method,
        "path": path,
        "query": query,
        "operation": op.operation_id if op else response.operation_id,
        "route": op.key if op else None,
        "request_headers": headers,
        "request_body": request_body,
        "valid": None if exchange.outcome is None else not exchange.outcome.violations,
        "violations": violations,
        "status": status,
        "response_headers": answer,
        "response_body": response_body,
        "latency_ms": latency_ms,
        "fault": fault[0],
        "fault_kind": fault[1],
        "why": why,
        "status_class": _STATUS_CLASSES.get(status) or f"{status // 100}xx",
        "faulted": fault[0] is not None,
    }


_STATUS_CLASSES: Final = {s: f"{s // 100}xx" for s in range(100, 600)}
_CREDENTIAL_HEADERS: Final = frozenset(
    ("authorization", "proxy-authorization", "cookie", "set-cookie")
)
_KEPT_BODIES: Final = 512
_KEPT_BODY_BYTES: Final = 64 * 1024


def _empty_body() -> dict[str, Any]:
    return {"text": "", "encoding": "utf-8", "size": 0, "truncated": False}


def _response_body(
    raw: bytes,
    content_type: str,
    limit: int,
    redaction: Redaction,
    found: _Secrets,
    bodies: dict[tuple[bytes, str], tuple[dict[str, Any], frozenset[str]]] | None,
) -> dict[str, Any]:
    if not raw:
        return _empty_body()
    if bodies is None or len(raw) > _KEPT_BODY_BYTES:
        return _body_dict(_body(raw, content_type, limit, redaction, found))
    key = (raw, content_type)
    kept = bodies.get(key)
    if kept is None:
        own = _Secrets()
        record = _body_dict(_body(raw, content_type, limit, redaction, own))
        if len(bodies) >= _KEPT_BODIES:
            bodies.clear()
        kept = bodies[key] = (record, frozenset(own.values))
    found.values.update(kept[1])
    return dict(kept[0])  # entries are stored, and may be scrubbed, one by one


def _violations(exchange: Exchange, response: MockResponse) -> list[dict[str, Any]]:
    if exchange.outcome is not None and exchange.outcome.violations:
        return [dict(v.as_dict()) for v in exchange.outcome.violations]
    return list(response.violations)


def explain(
    exchange: Exchange, response: MockResponse, suggest: Suggest | None, fault_id: str | None
) -> str:
    """Why an error status came about: the pipeline's note, plus near misses for a 404."""
    why = response.note if response.status >= 400 else ""
    request = exchange.request
    if response.status == 404 and why.startswith("no operation matches") and suggest:
        closest = suggest(request.method, request.path)
        if closest:
            why += "; closest: " + ", ".join(closest)
    if fault_id is not None and fault_id not in why:
        why = f"{why}; injected by fault {fault_id}" if why else f"injected by fault {fault_id}"
    return why


def _mask_header(name: str, value: str, redaction: Redaction, found: _Secrets) -> str:
    if name in ("authorization", "proxy-authorization"):
        scheme, sep, credential = value.partition(" ")
        if not sep:
            found.add(value)
            return mask(value)
        found.add(credential.strip(), *_basic_parts(scheme, credential))
        return f"{scheme} {mask(credential.strip())}"
    if name in ("cookie", "set-cookie"):
        return _mask_cookies(value, name == "set-cookie", found)
    if redaction.header(name):
        found.add(value)
        return mask(value)
    return value


def _basic_parts(scheme: str, credential: str) -> tuple[str, ...]:
    if scheme.lower() != "basic":
        return ()
    try:
        decoded = base64.b64decode(credential.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ()
    return (decoded, decoded.partition(":")[2])


def _mask_cookies(value: str, response: bool, found: _Secrets) -> str:
    # Set-Cookie: only the first pair is the cookie; the rest are attributes (Path, Expires...).
    pieces = value.split(";")
    masked = []
    for index, piece in enumerate(pieces):
        name, sep, content = piece.partition("=")
        if sep and (not response or index == 0):
            found.add(content.strip())
            piece = f"{name}={mask(content.strip())}"
        masked.append(piece)
    return ";".join(masked)


def _mask_pairs(text: str, redaction: Redaction, found: _Secrets) -> str:
    """A query string or form body with sensitive parameters masked, otherwise byte for byte."""
    if not text:
        return text
    pairs = []
    for pair in text.split("&"):
        name, sep, value = pair.partition("=")
        if sep and redaction.parameter(unquote_plus(name)):
            found.add(value, unquote_plus(value), unquote(value))
            pair = f"{name}={mask(unquote_plus(value))}"
        pairs.append(pair)
    return "&".join(pairs)


def _body(
    raw: bytes, content_type: str, limit: int, redaction: Redaction, found: _Secrets
) -> BodyRecord:
    if not raw:
        return BodyRecord()
    text = _decode(raw[:_DECODE_CAP])
    if text is None:
        clipped = raw[: limit * 3 // 4]
        encoded = base64.b64encode(clipped).decode("ascii")
        return BodyRecord(encoded, "base64", len(raw), len(clipped) < len(raw))
    text = _mask_text(text, content_type, redaction, found)
    truncated = len(text) > limit or len(raw) > _DECODE_CAP
    return BodyRecord(text[:limit], "utf-8", len(raw), truncated)


def _decode(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the cap is not a sign of binary content.
        if len(raw) == _DECODE_CAP and exc.start >= len(raw) - 3:
            return raw[: exc.start].decode("utf-8", "replace")
        return None


def _mask_text(text: str, content_type: str, redaction: Redaction, found: _Secrets) -> str:
    named = _names_a_secret(text) or any(n in text for n in redaction.query)
    if not named:
        return text  # the usual case: nothing named like a credential anywhere
    if text.lstrip()[:1] in ("{", "["):
        return _mask_json(text, found)
    if "x-www-form-urlencoded" in content_type:
        return _mask_pairs(text, redaction, found)
    return text


def _names_a_secret(text: str) -> bool:
    folded = text.casefold()
    # map over the bound method: the substring tests run without a Python frame each.
    return any(map(folded.__contains__, _SENSITIVE_STEMS)) and SENSITIVE.search(text) is not None


def _mask_json(text: str, found: _Secrets) -> str:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    # Iterative, so a deeply nested body cannot exhaust the stack.
    changed = False
    stack: list[tuple[Any, bool]] = [(value, False)]
    while stack:
        node, secret = stack.pop()
        slots: Iterable[tuple[Any, Any]] = (
            node.items() if isinstance(node, dict) else enumerate(node)
        )
        for key, child in list(slots):
            hidden = secret or (isinstance(key, str) and _sensitive_field(key))
            if isinstance(child, str) and hidden:
                found.add(child)
                node[key] = mask(child)
                changed = True
            elif isinstance(child, (dict, list)):
                stack.append((child, hidden))
    return orjson.dumps(value).decode() if changed else text


def _sensitive_field(name: str) -> bool:
    return SENSITIVE.search(name) is not None and _METADATA.search(name) is None


def _scrubbed(body: dict[str, Any], found: _Secrets) -> dict[str, Any]:
    if body["encoding"] != "utf-8" or not found.values:
        return body
    return {**body, "text": found.scrub(body["text"])}


# -- near misses for a 404 -------------------------------------------------------------------


def closest_operations(
    routes: Iterable[tuple[str, str]], method: str, path: str, limit: int = 3
) -> list[str]:
    """The ``limit`` operations ("GET /pets/{id}") whose templates look most like ``path``."""
    parts = [p for p in path.split("/") if p]
    scored = []
    for route_method, template in routes:
        score = _similarity(parts, [p for p in template.split("/") if p])
        score += 0.05 if route_method.upper() == method.upper() else 0.0
        scored.append((score, f"{route_method.upper()} {template}"))
    scored.sort(key=lambda pair: -pair[0])
    return [name for score, name in scored[:limit] if score >= 0.4]


def _similarity(parts: list[str], template: list[str]) -> float:
    if not parts and not template:
        return 1.0
    total = 0.0
    for given, expected in zip(parts, template, strict=False):
        if expected.startswith("{") and expected.endswith("}"):
            total += 0.8
        elif given == expected:
            total += 1.0
        else:
            total += 0.7 * difflib.SequenceMatcher(None, given, expected).ratio()
    return total / max(len(parts), len(template))


def suggester(routes: Iterable[tuple[str, str]], base_path: str = "") -> Suggest:
    """A ``suggest`` callable for :class:`Journal`, for paths under ``base_path``."""
    known = list(routes)
    base = base_path.rstrip("/")

    def suggest(method: str, path: str) -> list[str]:
        relative = path[len(base) :] if base and path.startswith(base) else path
        return closest_operations(known, method, relative or "/")

    return suggest
