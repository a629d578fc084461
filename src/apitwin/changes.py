"""Change feeds: callbacks told when something is recorded for a connection.

The journal publishes every request it records; the outbox every delivery it creates or restarts,
and every attempt outcome. The control service relays both, keyed by connection handle, to
whoever listens (the MCP server turns them into change notifications). Listeners run on the
event loop, synchronously: they must be quick and must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

ChangeKind = Literal["request", "delivery"]


@dataclass(frozen=True, slots=True)
class Change:
    """A journal entry (``request``) or webhook delivery (``delivery``) of a connection.

    ``id`` is the entry's or delivery's id; None when some delivery of the connection changed
    without the publisher knowing which (an attempt's outcome).
    """

    kind: ChangeKind
    connection: str
    id: str | None = None


Listener = Callable[[Change], None]


class ChangeFeed:
    """Fan-out to listeners; one that raises is logged and skipped, never the publisher's
    problem."""

    def __init__(self) -> None:
        # Keyed by a token, so one callable may be subscribed twice and removed once.
        self._listeners: dict[object, Listener] = {}

    @property
    def listening(self) -> bool:
        return bool(self._listeners)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Register ``listener``; returns a function that unregisters it (idempotent)."""
        token = object()
        self._listeners[token] = listener

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe

    def publish(self, change: Change) -> None:
        for listener in list(self._listeners.values()):
            try:
                listener(change)
            except Exception:
                log.exception("a change listener failed")
