"""The twin's virtual clock: real time plus an offset that tests and agents can advance."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime


class VirtualClock:
    def __init__(self, offset: float = 0.0, source: Callable[[], float] = time.time) -> None:
        self.offset = offset
        self._source = source

    def now(self) -> float:
        return self._source() + self.offset

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the virtual clock only moves forward")
        self.offset += seconds
        return self.now()

    def iso(self, at: float | None = None) -> str:
        moment = datetime.fromtimestamp(self.now() if at is None else at, UTC)
        return moment.isoformat(timespec="seconds").replace("+00:00", "Z")

    def date(self, at: float | None = None) -> str:
        return datetime.fromtimestamp(self.now() if at is None else at, UTC).date().isoformat()
