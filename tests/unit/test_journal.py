"""The request journal: masking, truncation, the ring bound, filters, counts, persistence."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apitwin.clock import VirtualClock
from apitwin.errors import InvalidInputError, StorageFullError
from apitwin.http import InboundRequest, MockResponse
from apitwin.journal import (
    SENSITIVE,
    Journal,
    JournalEntry,
    _names_a_secret,
    closest_operations,
    redaction_for,
    suggester,
    unpack,
)
from apitwin.matching import Match, MatchKind
from apitwin.service.exchange import Exchange
from apitwin.spec.model import Operation, SecurityScheme
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Clear, Put, Query
from apitwin.tenants import Identity
from apitwin.validation import Outcome, ValidRequest, Violation

pytestmark = pytest.mark.anyio

TOKEN = "at_Zm9vYmFyYmF6cXV4cXV1eDEyMzQ1Njc4"
API_KEY = "ak_9f8e7d6c5b4a39281706f5e4d3c2b1a0"
PARTNER_KEY = "pk-live-0123456789abcdef"
SESSION = "sess-4f1b2c3d4e5f60718293"
QUERY_KEY = "qk-aa11bb22cc33dd44"
PASSWORD = "correct-horse-battery"
CLIENT_SECRET = "cs_nested_secret_value_42"
SET_COOKIE = "sid-0a1b2c3d4e5f6a7b8c9d"
SECRETS = [TOKEN, API_KEY, PARTNER_KEY, SESSION, QUERY_KEY, PASSWORD, CLIENT_SECRET, SET_COOKIE]


async def stored(store: SQLiteStore, journal: Journal, conn: str) -> list[dict[str, Any]]:
    """Every entry of a connection as stored, read from the store's items (chunks) directly."""
    items = await store.query(Query(journal.scope(conn), limit=1000))
    return [entry for item in items for entry in unpack(item.data)]


SUBMIT = Operation("post", "/experts", "submitExpert", "", (), (), None, {}, ())
LIST = Operation("get", "/experts", "listExperts", "", (), (), None, {}, ())
ROUTES = [("POST", "/experts"), ("GET", "/experts"), ("GET", "/experts/{expertId}")]


def exchange(
    op: Operation | None,
    status: int,
    *,
    conn: str = "acme",
    path: str = "/v1/experts",
    query: str = "",
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    response_body: bytes = b"{}",
    response_headers: list[tuple[str, str]] | None = None,
    note: str = "",
    violations: list[Violation] | None = None,
) -> Exchange:
    method = op.method.upper() if op else "GET"
    request = InboundRequest(method, path, query, headers or {}, body)
    found = Exchange(request, time.perf_counter())
    if op is not None:
        found.match = Match(MatchKind.FULL, op, template=op.path)
        found.identity = Identity(conn, "api key")
        found.outcome = Outcome(ValidRequest(), violations or [], 400 if violations else 200)
    found.response = MockResponse(
        status,
        response_headers or [("content-type", "application/json")],
        response_body,
        operation_id=op.operation_id if op else None,
        note=note,
    )
    return found


# -- masking -----------------------------------------------------------------------------------


async def test_no_secret_appears_anywhere_in_an_entry(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    scheme = SecurityScheme("partner", "apiKey", "header", "X-Partner-Key")
    journal = Journal(store, "experts", clock, redaction=redaction_for([scheme]))
    body = {"name": "Ada", "password": PASSWORD, "auth": {"client_secret": CLIENT_SECRET}}
    echoed = {"token": TOKEN, "note": f"welcome back, key {API_KEY}", "token_type": "Bearer"}
    entry = await journal.record(
        exchange(
            SUBMIT,
            201,
            path=f"/v1/experts/{PARTNER_KEY}",
            query=f"api_key={QUERY_KEY}&page=2",
            headers={
                "authorization": f"Bearer {TOKEN}",
                "x-api-key": API_KEY,
                "x-partner-key": PARTNER_KEY,
                "cookie": f"session={SESSION}; theme=dark",
                "content-type": "application/json",
            },
            body=orjson.dumps(body),
            response_body=orjson.dumps(echoed),
            response_headers=[
                ("content-type", "application/json"),
                ("set-cookie", f"sid={SET_COOKIE}; Path=/; HttpOnly"),
            ],
        )
    )
    assert entry is not None
    [kept] = await stored(store, journal, "acme")
    assert kept["id"] == entry.id
    for text in (orjson.dumps(entry.as_dict()).decode(), orjson.dumps(kept).decode()):
        leaked = [secret for secret in SECRETS if secret in text]
        assert leaked == []
    headers = entry.request_headers
    assert headers["authorization"] == "Bearer at_…Njc4"
    assert headers["x-api-key"] == "ak_…b1a0" and "theme=dark" not in headers["cookie"]
    assert entry.query.endswith("&page=2")
    assert orjson.loads(entry.response_body.text)["token_type"] == "Bearer"
    assert ("set-cookie", "sid=…8c9d; Path=/; HttpOnly") in entry.response_headers
    assert entry.path == "/v1/experts/…cdef"  # a credential echoed anywhere is scrubbed too


@pytest.mark.parametrize("fault", [(None, None), ("f1", "status")])
async def test_the_stored_form_is_the_entry_and_its_filter_fields(
    store: SQLiteStore, clock: VirtualClock, fault: tuple[str | None, str | None]
) -> None:
    """Entries are stored as built, without going through JournalEntry: the stored document
    must still be exactly an entry (every field, nothing else) plus the two filter fields."""
    journal = Journal(store, "experts", clock)
    bad = [Violation("body", "", "/name", "5 is not of type 'string'", "type")]
    entry = await journal.record(
        exchange(
            SUBMIT,
            400,
            query="a=1",
            headers={"content-type": "application/json", "x-trace": "t1"},
            body=b'{"name": 5}',
            response_headers=[("content-type", "application/json"), ("x-a", "1")],
            note="the body is invalid",
            violations=bad,
        ),
        fault[0],
        fault_kind=fault[1],
    )
    assert entry is not None
    [kept] = await stored(store, journal, "acme")
    expected = {
        **entry.as_dict(),
        "status_class": "4xx",
        "faulted": fault[0] is not None,
    }
    assert kept == expected
    assert JournalEntry.from_dict(kept) == entry
    assert entry.violations[0]["pointer"] == "/name" and entry.response_headers[1] == ("x-a", "1")
    assert entry.fault == fault[0] and entry.fault_kind == fault[1] and entry.valid is False


async def test_basic_credentials_and_form_secrets_are_masked(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock)
    basic = base64.b64encode(f"client-one:{PASSWORD}".encode()).decode()
    form = f"grant_type=client_credentials&client_secret={CLIENT_SECRET}"
    entry = await journal.record(
        exchange(
            None,
            200,
            path="/oauth/token",
            headers={
                "authorization": f"Basic {basic}",
                "content-type": "application/x-www-form-urlencoded",
            },
            body=form.encode(),
            response_body=orjson.dumps({"access_token": TOKEN, "expires_in": 3600}),
        ),
        connection="acme",
    )
    assert entry is not None
    text = orjson.dumps(entry.as_dict()).decode()
    assert not [s for s in (basic, PASSWORD, CLIENT_SECRET, TOKEN) if s in text]
    assert entry.request_body.text.startswith("grant_type=client_credentials&client_secret=")
    assert orjson.loads(entry.response_body.text)["expires_in"] == 3600


async def test_a_repeated_response_body_is_masked_and_scrubbed_every_time(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """Answers repeat byte for byte (a read answered from a kept answer): the journal keeps the
    masked form of a body it has seen, and must still treat each entry as if it were the first."""
    journal = Journal(store, "experts", clock)
    answer = orjson.dumps({"name": "Ada", "password": PASSWORD})
    entries = []
    for path in ("/v1/experts/1", f"/v1/experts/1/{PASSWORD}"):
        entries.append(await journal.record(exchange(LIST, 200, path=path, response_body=answer)))
    first, second = entries
    assert first is not None and second is not None
    for entry in entries:
        assert orjson.loads(entry.response_body.text) == {"name": "Ada", "password": "…tery"}
        assert PASSWORD not in orjson.dumps(entry.as_dict()).decode()
    assert second.path == "/v1/experts/1/…tery"  # found in the kept body, scrubbed here too
    assert first.response_body == second.response_body


# -- bodies --------------------------------------------------------------------------------------


async def test_large_bodies_are_truncated_and_binary_ones_base64(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock, body_limit=1000)
    big = b'{"notes": "' + b"x" * 40_000 + b'"}'
    binary = bytes(range(256)) * 20
    entry = await journal.record(exchange(SUBMIT, 201, body=big, response_body=binary))
    assert entry is not None
    request, response = entry.request_body, entry.response_body
    assert (request.size, request.truncated, len(request.text)) == (len(big), True, 1000)
    assert request.encoding == "utf-8"
    assert response.encoding == "base64" and response.truncated and response.size == len(binary)
    assert base64.b64decode(response.text) == binary[:750]
    small = await journal.record(exchange(SUBMIT, 201, body=b'{"a": 1}'))
    assert small is not None and not small.request_body.truncated
    assert small.request_body.text == '{"a": 1}'


# -- the ring ------------------------------------------------------------------------------------


async def test_the_ring_keeps_the_newest_entries_per_connection(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock, ring_size=5)
    for index in range(12):
        await journal.record(exchange(LIST, 200, path=f"/v1/experts?{index}"))
    await journal.record(exchange(LIST, 200, conn="globex"))
    assert await journal.count("acme") == 5
    assert await journal.count("globex") == 1
    page = await journal.query("acme", limit=10)
    assert [e.path for e in page.entries] == [f"/v1/experts?{i}" for i in range(11, 6, -1)]


async def test_pruning_in_batches_keeps_the_bound_approximately(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock, ring_size=20, prune_every=4)
    for _ in range(50):
        await journal.record(exchange(LIST, 200))
        assert await journal.count("acme") <= 20 + 4 - 1
    await journal.prune("acme")
    assert await journal.count("acme") == 20


async def submit_together(journal: Journal, paths: list[str], conn: str = "acme") -> None:
    """Requests answered in one turn of the loop: their entries are written together."""
    await asyncio.gather(*(journal.submit(exchange(LIST, 200, path=p, conn=conn)) for p in paths))


async def test_the_ring_is_exact_over_entries_written_together_in_any_numbers(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """Entries written together are stored as one item: reads still see exactly the newest
    ring of them, page through it in either order, and the items wholly older go."""
    journal = Journal(store, "experts", clock, ring_size=10, prune_every=3)
    paths = [f"/v1/experts/{i}" for i in range(40)]
    written = 0
    for size in (1, 4, 2, 7, 3, 1, 9, 5, 8):
        await submit_together(journal, paths[written : written + size])
        written += size
        newest = paths[max(0, written - 10) : written][::-1]
        assert await journal.count("acme") == len(newest)
        assert [e.path for e in (await journal.query("acme", limit=50)).entries] == newest
        assert len(await stored(store, journal, "acme")) < 10 + 9  # one item beyond the ring
    pages: list[list[str]] = []
    for newest_first in (True, False):
        cursor, seen = None, []
        while True:
            page = await journal.query("acme", limit=3, cursor=cursor, newest_first=newest_first)
            seen.extend(e.path for e in page.entries)
            if page.cursor is None:
                break
            cursor = page.cursor
        pages.append(seen)
    assert pages == [paths[30:40][::-1], paths[30:40]]
    first = (await journal.query("acme", newest_first=False, limit=1)).entries[0]
    assert await journal.get("acme", first.id) == first
    # Still stored (its chunk holds entries of the ring), but beyond the ring: not found.
    [beyond] = [e for e in await stored(store, journal, "acme") if e["path"] == paths[29]]
    assert await journal.get("acme", beyond["id"]) is None
    await journal.prune("acme")  # the last two items (5 and 8 entries) hold the ring
    assert [e["path"] for e in await stored(store, journal, "acme")] == paths[27:40]


async def test_a_write_that_failed_counts_for_nothing_in_later_trims(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """Entries whose write failed (a full disk) were never stored: trims that counted them would
    delete entries still in the ring."""
    journal = Journal(store, "experts", clock, ring_size=5, prune_every=1)
    for i in range(4):
        await submit_together(journal, [f"/kept/{i}"])
    write = store.write

    async def full(ops: Any) -> Any:
        raise StorageFullError("the disk is full")

    store.write = full  # type: ignore[method-assign]
    await submit_together(journal, [f"/lost/{i}" for i in range(10)])  # logged, not stored
    store.write = write  # type: ignore[method-assign]
    await submit_together(journal, ["/new/0"])
    assert [e.path for e in (await journal.query("acme")).entries] == [
        "/new/0", "/kept/3", "/kept/2", "/kept/1", "/kept/0"
    ]  # fmt: skip


async def test_more_entries_than_a_chunk_holds_are_split(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock, ring_size=500)
    await submit_together(journal, [f"/v1/experts/{i}" for i in range(250)])
    items = await store.query(Query(journal.scope("acme")))
    assert [len(unpack(item.data)) for item in items] == [100, 100, 50]
    assert await journal.count("acme") == 250


async def test_a_reopened_journal_keeps_the_ring_and_drops_older_items_later(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """A journal started again (a restart) does not know the sizes of the items already
    stored: it reads them, and deletes them once its own hold a whole ring."""
    first = Journal(store, "experts", clock, ring_size=6, prune_every=2)
    await submit_together(journal=first, paths=[f"/old/{i}" for i in range(5)])
    again = Journal(store, "experts", clock, ring_size=6, prune_every=2)
    await submit_together(again, ["/new/0", "/new/1"])
    assert [e.path for e in (await again.query("acme")).entries] == [
        "/new/1", "/new/0", "/old/4", "/old/3", "/old/2", "/old/1"
    ]  # fmt: skip
    assert len(await stored(store, again, "acme")) == 7  # not known to be beyond the ring yet
    for i in range(2, 6):
        await submit_together(again, [f"/new/{i}"])
    assert [e["path"] for e in await stored(store, again, "acme")] == [
        f"/new/{i}" for i in range(6)
    ]


async def test_entries_stored_one_per_item_are_read_as_well(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """Files written before entries were stored together (and shared stores) hold an item
    per entry: read beside chunks, in order, within the ring."""
    journal = Journal(store, "experts", clock, ring_size=3)
    old = await journal.record(exchange(SUBMIT, 201, path="/v1/experts/old"))
    assert old is not None
    [chunk] = await store.query(Query(journal.scope("acme")))
    await store.write(
        [Clear("experts", "acme"), Put(journal.scope("acme").key(old.id), unpack(chunk.data)[0])]
    )
    again = Journal(store, "experts", clock, ring_size=3)
    await submit_together(again, ["/v1/experts/a", "/v1/experts/b"])
    assert [e.path for e in (await again.query("acme")).entries] == [
        "/v1/experts/b", "/v1/experts/a", "/v1/experts/old"
    ]  # fmt: skip
    assert await again.get("acme", old.id) == old
    assert await again.count("acme", operation="submitExpert") == 1
    await submit_together(again, ["/v1/experts/c"])
    assert await again.get("acme", old.id) is None


async def test_exchanges_submitted_together_are_stored_in_one_write(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    writes: list[list[tuple[str, list[int]]]] = []
    write = store.write

    async def counted(ops: Any) -> Any:
        writes.append(
            [
                (type(op).__name__, [len(unpack(d)) for _, d, _ in getattr(op, "entries", ())])
                for op in ops
            ]
        )
        return await write(ops)

    store.write = counted  # type: ignore[method-assign]
    journal = Journal(store, "experts", clock, ring_size=5, prune_every=2)
    seen: list[str] = []
    journal.changes.subscribe(lambda change: seen.append(change.id))
    await asyncio.gather(
        *(journal.submit(exchange(LIST, 200, path=f"/v1/experts?{i}")) for i in range(12))
    )
    # Twelve entries stored as one item, and a trim, in one transaction.
    assert writes == [[("Append", [12]), ("Trim", [])]]
    assert len(seen) == 12  # each submit returned with its entry stored
    page = await journal.query("acme", limit=10)
    assert [e.path for e in page.entries] == [f"/v1/experts?{i}" for i in range(11, 6, -1)]


async def test_a_request_cancelled_while_its_entry_is_stored_cancels_no_other(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    """Each submit waits on its own: one cancelled (a client gone) leaves the others waiting
    for their entries, and its own entry is stored all the same."""
    journal = Journal(store, "experts", clock)
    returned: list[int] = []

    async def submit(i: int) -> None:
        await journal.submit(exchange(LIST, 200, path=f"/v1/experts?{i}"))
        returned.append(i)

    tasks = [asyncio.create_task(submit(i)) for i in range(5)]
    await asyncio.sleep(0)  # all five queued, waiting for the writer
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert sorted(returned) == [0, 1, 3, 4]
    assert await journal.count("acme") == 5


# -- queries -------------------------------------------------------------------------------------


async def known_sequence(journal: Journal, clock: VirtualClock) -> None:
    for _ in range(3):
        await journal.record(exchange(SUBMIT, 201, body=b'{"name": "Ada"}'))
    bad = Violation("body", "", "/name", "'name' is a required property", "required")
    await journal.record(exchange(SUBMIT, 422, violations=[bad], note="the request has 1 problem"))
    clock.advance(100)
    await journal.record(exchange(LIST, 200, response_body=b'[{"name": "Grace"}]'))
    await journal.record(exchange(LIST, 200), "flt_slow", fault_kind="latency")
    note = "no operation matches GET /expert"
    await journal.record(exchange(None, 404, path="/v1/expert", note=note), connection="acme")


async def test_counts_and_filters_answer_questions_about_a_known_sequence(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock)
    await known_sequence(journal, clock)
    assert await journal.count("acme") == 7
    assert await journal.count("acme", operation="submitExpert", status=201) == 3
    assert await journal.count("acme", operation="POST /experts") == 4
    assert await journal.count("acme", status="4xx") == 2
    assert await journal.count("acme", method="get") == 3
    assert await journal.count("acme", fault=True) == 1
    assert await journal.count("acme", fault="flt_slow") == 1
    assert await journal.count("acme", fault=False) == 6
    assert await journal.count("acme", text="grace") == 1
    assert await journal.count("acme", since=clock.now() - 1) == 3
    assert await journal.count("acme", until=clock.now() - 50, status=201) == 3
    assert await journal.count("globex") == 0
    [invalid] = (await journal.query("acme", status=422)).entries
    assert invalid.valid is False and invalid.violations[0]["pointer"] == "/name"
    assert invalid.why == "the request has 1 problem"


async def test_pages_follow_the_cursor_in_either_order(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock)
    await known_sequence(journal, clock)
    seen: list[JournalEntry] = []
    cursor = None
    while True:
        page = await journal.query("acme", limit=2, cursor=cursor, newest_first=False)
        seen.extend(page.entries)
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [e.status for e in seen] == [201, 201, 201, 422, 200, 200, 404]
    newest = await journal.query("acme", limit=3)
    assert [e.status for e in newest.entries] == [404, 200, 200] and newest.cursor is not None
    filtered = await journal.query("acme", text="ada", limit=2)
    assert len(filtered.entries) == 2 and filtered.cursor is not None
    rest = await journal.query("acme", text="ada", limit=2, cursor=filtered.cursor)
    assert len(rest.entries) == 1 and rest.cursor is None
    with pytest.raises(InvalidInputError, match="4xx"):
        await journal.query("acme", status="client errors")


async def test_a_404_explains_the_closest_operations(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "experts", clock, suggest=suggester(ROUTES, "/v1"))
    await known_sequence(journal, clock)
    [missing] = (await journal.query("acme", status=404)).entries
    assert missing.why.startswith("no operation matches GET /expert; closest: GET /experts")
    assert missing.valid is None and missing.operation is None
    [slow] = (await journal.query("acme", fault=True)).entries
    assert slow.fault == "flt_slow" and slow.fault_kind == "latency"
    assert slow.why == "injected by fault flt_slow"


def test_closest_operations_ranks_templates_by_shape() -> None:
    found = closest_operations(ROUTES, "GET", "/experts/e1/x")
    assert found[0] == "GET /experts/{expertId}"
    assert closest_operations(ROUTES, "GET", "/zzz/yyy/xxx/www") == []


# -- persistence ---------------------------------------------------------------------------------


async def test_entries_survive_reopening_the_database(tmp_path: Path, clock: VirtualClock) -> None:
    path = tmp_path / "twin.db"
    first = SQLiteStore(path)
    await first.open()
    entry = await Journal(first, "experts", clock).record(exchange(SUBMIT, 201, body=b"{}"))
    await first.close()
    assert entry is not None
    second = SQLiteStore(path)
    await second.open()
    try:
        journal = Journal(second, "experts", clock)
        assert await journal.get("acme", entry.id) == entry
        assert await journal.count("acme", operation="submitExpert") == 1
    finally:
        await second.close()


NEAR_SECRETS = ["ApI-KeY", "\u017fecret", "api\u212aey", "PRIVATE_key", "Session", "tok en"]


@given(st.text() | st.builds("{}{}{}".format, st.text(), st.sampled_from(NEAR_SECRETS), st.text()))
def test_the_quick_secret_test_agrees_with_the_pattern(text: str) -> None:
    assert _names_a_secret(text) == (SENSITIVE.search(text) is not None)
