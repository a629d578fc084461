"""Answers to reads of stored records, kept until the records they were read from change.

A GET of a collection or of one record is answered from the connection's records, shaped into the
response schema: the same request against the same records always gets the same answer (shaping
and generated headers are seeded by the request). So the answer is kept, with the store's version
of every scope it read, and given again while those versions stand. Only the state stage and the
rendering are skipped: matching, credentials, validation, faults and the journal run for every
request.

Nothing is kept when the store cannot tell versions cheaply (replicas on PostgreSQL), for a
request with a ``Prefer`` header, under a fault, or for an answer other than 2xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from apitwin.http import MockResponse
from apitwin.service.exchange import StateResult
from apitwin.state.store import Scope, Store

MAX_ANSWERS: Final = 4096
MAX_ANSWER_BYTES: Final = 16 * 1024 * 1024
_OVERHEAD: Final = 300  # bookkeeping per answer, roughly, in bytes

AnswerKey = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Kept:
    versions: tuple[int, ...]
    state: StateResult
    response: MockResponse
    size: int


@dataclass(frozen=True, slots=True)
class Stamp:
    """The versions of the scopes a read is about to look at, taken before it looks."""

    versions: tuple[int, ...]


class Answers:
    def __init__(
        self, store: Store, *, max_answers: int = MAX_ANSWERS, max_bytes: int = MAX_ANSWER_BYTES
    ) -> None:
        self.store = store
        self.max_answers = max_answers
        self.max_bytes = max_bytes
        self._kept: dict[AnswerKey, _Kept] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._kept)

    def stamp(self, scopes: Sequence[Scope]) -> Stamp | None:
        """Taken before the read, so a write that lands during it makes the answer stale."""
        if self.store.shared:
            return None
        versions = []
        for scope in scopes:
            version = self.store.version(scope)
            if version is None:
                return None
            versions.append(version)
        return Stamp(tuple(versions))

    def get(self, key: AnswerKey, stamp: Stamp) -> tuple[StateResult, MockResponse] | None:
        kept = self._kept.get(key)
        if kept is None:
            return None
        if kept.versions != stamp.versions:
            self._drop(key)
            return None
        return kept.state, _copy(kept.response)

    def keep(
        self, key: AnswerKey, stamp: Stamp, state: StateResult, response: MockResponse
    ) -> None:
        size = len(response.body) + len(key) * 16 + _OVERHEAD
        if not 200 <= response.status < 300 or size > self.max_bytes:
            return  # errors are not kept: some are drawn afresh each time
        self._drop(key)
        while self._kept and (
            len(self._kept) >= self.max_answers or self._bytes + size > self.max_bytes
        ):
            self._drop(next(iter(self._kept)))  # the oldest kept
        self._kept[key] = _Kept(stamp.versions, state, _copy(response), size)
        self._bytes += size

    def _drop(self, key: AnswerKey) -> None:
        kept = self._kept.pop(key, None)
        if kept is not None:
            self._bytes -= kept.size


def _copy(response: MockResponse) -> MockResponse:
    # Later stages may add to an answer (a note, a header): each request gets its own.
    return MockResponse(
        response.status,
        list(response.headers),
        response.body,
        operation_id=response.operation_id,
        violations=list(response.violations),
        note=response.note,
    )
