"""The twin's virtual clock: real time plus an offset that tests and agents can advance.

With one process the offset lives here. Replicas on one database share it through the store
(:meth:`VirtualClock.share`): :meth:`move` adds to the stored offset (compare-and-swap), and
:meth:`sync` re-reads it (one indexed read; the server calls it before each request it serves and
the webhook dispatcher before each scan).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from apitwin.state.store import Key, Put, Store, StoreError

CLOCK_KIND: Final = "clock"
_CAS_RETRIES: Final = 50


class VirtualClock:
    def __init__(self, offset: float = 0.0, source: Callable[[], float] = time.time) -> None:
        self.offset = offset
        self._source = source
        self._store: Store | None = None
        self._key: Key | None = None

    def share(self, store: Store, twin: str) -> None:
        """Keep the offset in ``store``, shared by every process that serves ``twin``."""
        self._store, self._key = store, Key(twin, "", CLOCK_KIND, "offset")

    def now(self) -> float:
        return self._source() + self.offset

    def advance(self, seconds: float) -> float:
        """Move this process's clock (a shared clock moves with :meth:`move`)."""
        if seconds < 0:
            raise ValueError("the virtual clock only moves forward")
        self.offset += seconds
        return self.now()

    async def sync(self) -> None:
        """Catch up with an advance another replica made (no-op unless shared)."""
        if self._store is None or self._key is None:
            return
        item = await self._store.get(self._key)
        if item is not None:
            # Only forward: a reader that already saw a newer offset keeps it.
            self.offset = max(self.offset, float(item.data["offset"]))

    async def move(self, seconds: float) -> float:
        """Advance the clock of every replica (of this process alone when not shared)."""
        if seconds < 0:
            raise ValueError("the virtual clock only moves forward")
        if self._store is None or self._key is None:
            return self.advance(seconds)
        for _ in range(_CAS_RETRIES):
            item = await self._store.get(self._key)
            base = self.offset if item is None else float(item.data["offset"])
            expect: str | int = "absent" if item is None else item.version
            offset = base + seconds
            try:
                await self._store.write([Put(self._key, {"offset": offset}, expect=expect)])
            except StoreError:
                continue  # another replica moved it meanwhile: add to its value
            self.offset = max(self.offset, offset)
            return self.now()
        raise RuntimeError("the shared clock is too contended to advance; try again")

    def iso(self, at: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.now() if at is None else at, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    def date(self, at: float | None = None) -> str:
        return datetime.fromtimestamp(self.now() if at is None else at, UTC).date().isoformat()
