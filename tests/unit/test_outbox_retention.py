"""Webhook history retention: what a prune pass removes, and how much it reads to decide."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from apitwin.clock import VirtualClock
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Item, Merge, Query
from apitwin.webhooks.outbox import DELIVERY, MESSAGE, Outbox

pytestmark = pytest.mark.anyio


class CountingStore(SQLiteStore):
    """The real store, counting the reads a pass makes."""

    reads = 0

    async def query(self, query: Query) -> list[Item]:
        self.reads += 1
        return await super().query(query)

    async def count(self, query: Query) -> int:
        self.reads += 1
        return await super().count(query)


@pytest.fixture
async def counting() -> AsyncIterator[CountingStore]:
    backend = CountingStore(":memory:")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def _ids(outbox: Outbox, kind: str) -> list[str]:
    return [i.key.id for i in await outbox.store.query(Query(outbox.scope("acme", kind)))]


async def test_only_messages_beyond_the_newest_kept_are_removed(
    counting: CountingStore, clock: VirtualClock
) -> None:
    outbox = Outbox(counting, "twin", clock)
    # The oldest message has a delivery still waiting; six more had no endpoint to go to.
    await outbox.emit("acme", "pet.created", {"id": 0}, url="https://receiver.example/hooks")
    for n in range(1, 7):
        await outbox.emit("acme", "pet.created", {"id": n})
    messages = await _ids(outbox, MESSAGE)
    outbox.keep = 3
    # Of the oldest four beyond the newest three, the one still referred stays.
    assert await outbox.prune("acme") == 3
    assert await _ids(outbox, MESSAGE) == [messages[0], *messages[4:]]
    # The next pass reads two counts, the one message beyond the newest three and whether it
    # is referred: never the rest of the history, and never a message among the newest three.
    counting.reads = 0
    assert await outbox.prune("acme") == 0
    assert counting.reads == 4
    assert await _ids(outbox, MESSAGE) == [messages[0], *messages[4:]]
    # Once its delivery has finished and is pruned, the message goes too.
    [delivery] = await _ids(outbox, DELIVERY)
    await counting.write(
        [Merge(outbox.scope("acme", DELIVERY).key(delivery), {"status": "succeeded"})]
    )
    outbox.keep = 0
    assert await outbox.prune("acme") == 5
    assert await _ids(outbox, MESSAGE) == []
    assert await _ids(outbox, DELIVERY) == []
