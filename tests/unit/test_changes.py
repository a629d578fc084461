"""Change feeds: the journal and the outbox tell listeners what they recorded, once written."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from apitwin.changes import Change, ChangeFeed
from apitwin.clock import VirtualClock
from apitwin.http import InboundRequest, MockResponse
from apitwin.journal import Journal
from apitwin.service.exchange import Exchange
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Key
from apitwin.webhooks.outbox import DELIVERY, Outbox

pytestmark = pytest.mark.anyio


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    feed = ChangeFeed()
    heard: list[Change] = []

    def broken(change: Change) -> None:
        raise RuntimeError("listener bug")

    feed.subscribe(broken)
    stop = feed.subscribe(heard.append)
    with caplog.at_level(logging.ERROR, logger="apitwin.changes"):
        feed.publish(Change("request", "acme", "req_1"))
    assert heard == [Change("request", "acme", "req_1")]
    assert "a change listener failed" in caplog.text
    stop()
    stop()  # idempotent
    feed.publish(Change("request", "acme", "req_2"))
    assert len(heard) == 1
    assert feed.listening  # the broken one is still there


async def test_the_journal_tells_of_each_entry_it_wrote(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    journal = Journal(store, "twin", clock)
    heard: list[Change] = []

    async def read(change: Change) -> None:  # the entry is there to read when told
        assert change.id is not None
        assert await journal.get(change.connection, change.id) is not None

    tasks = []
    journal.changes.subscribe(heard.append)
    journal.changes.subscribe(lambda change: tasks.append(asyncio.ensure_future(read(change))))
    answered = Exchange(InboundRequest("GET", "/v1/experts", "", {}, b""), time.perf_counter())
    answered.response = MockResponse(200, [("content-type", "application/json")], b"[]")
    entry = await journal.record(answered, connection="acme")
    assert entry is not None
    assert heard == [Change("request", "acme", entry.id)]
    await asyncio.gather(*tasks)


async def test_the_outbox_tells_of_deliveries_once_they_are_written(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    outbox = Outbox(store, "twin", clock)
    heard: list[Change] = []
    outbox.changes.subscribe(heard.append)
    await outbox.add_endpoint("acme", "https://receiver.example/hooks", (), "standard-webhooks")
    await outbox.add_endpoint("acme", "https://other.example/hooks", (), "standard-webhooks")
    await outbox.emit("acme", "project.created", {"id": "prj_1"})
    await asyncio.sleep(0)  # told soon after the write, not during it
    assert {c.kind for c in heard} == {"delivery"}
    assert len({c.id for c in heard}) == 2
    for change in heard:
        assert change.connection == "acme"
        assert change.id is not None
        assert await store.get(Key("twin", "acme", DELIVERY, change.id)) is not None
    redelivered = await outbox.redeliver("acme", str(heard[0].id))
    assert heard[-1] == Change("delivery", "acme", redelivered["id"])
