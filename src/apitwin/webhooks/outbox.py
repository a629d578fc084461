"""Durable webhook state over the Store: endpoints, messages, deliveries and their attempt log.

Items, all under (twin, connection):

* ``endpoint`` ``ep_…``: where a connection receives webhooks, how they are signed, its health.
* ``message`` ``msg_…``: one event occurrence; ``body`` is the exact JSON text every attempt sends
  (signatures cover bytes, so it is serialised once and never again).
* ``delivery`` ``dlv_…`` (parent: the message): the message on its way to one endpoint (or to a
  callback URL): status ``pending → delivering → succeeded | failed | dropped``, attempts,
  ``next_attempt_at``, the ``lease_until`` of the worker that claimed it, the last error.
* ``attempt`` ``dlv_….<n>`` (parent: the delivery): one HTTP attempt, masked and truncated.

Connections that may hold deliveries are listed under (twin, "", ``webhook-connection``) so a
dispatcher can find them after a restart.

Transactional outbox: :meth:`Outbox.enqueue_ops` returns the Put ops for a message and its
deliveries; the caller writes them in the same ``store.write`` batch as the state change that
caused them, so an event exists if and only if its change committed.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Literal, Protocol

import orjson

from apitwin.changes import Change, ChangeFeed
from apitwin.clock import VirtualClock
from apitwin.errors import ApitwinError, NotFoundError
from apitwin.generation import Generator
from apitwin.state.store import (
    Delete,
    Item,
    Key,
    Merge,
    Op,
    Put,
    Query,
    Scope,
    Store,
    StoreError,
)
from apitwin.webhooks.events import EventType, build_payload, events_for, random_id
from apitwin.webhooks.safety import (
    MAX_PAYLOAD_BYTES,
    MAX_PENDING_PER_CONNECTION,
    TargetRefused,
    check_url,
)
from apitwin.webhooks.signing import Signer, SigningInput, mask_secret, signer_for

log = logging.getLogger(__name__)

EndpointStatus = Literal["active", "failing", "disabled"]
DeliveryStatus = Literal["pending", "delivering", "succeeded", "failed", "dropped"]

DEFAULT_SCHEME: Final = "standard-webhooks"
DEFAULT_GRACE: Final = 86_400.0  # rotated-out secrets keep signing for a day (Svix's default)
MAX_OLD_SECRETS: Final = 10  # Svix keeps at most ten
MAX_ENDPOINTS_PER_CONNECTION: Final = 50
KEEP_PER_CONNECTION: Final = 10_000  # default of server.limits.deliveries_kept
FINISHED: Final = ("succeeded", "failed", "dropped")
_PRUNE_BATCH: Final = 1_000  # deletions per pass, so one pass never holds the writer long
ENDPOINT: Final = "endpoint"
MESSAGE: Final = "message"
DELIVERY: Final = "delivery"
ATTEMPT: Final = "attempt"
CONNECTIONS: Final = "webhook-connection"
_PAGE: Final = 500
_COLLECTED: ContextVar[list[str] | None] = ContextVar("apitwin_enqueued", default=None)


class WebhookInputError(ApitwinError):
    kind = "invalid_input"
    status = 400


class DeliveryConflictError(ApitwinError):
    kind = "conflict"
    status = 409


class QueueFullError(ApitwinError):
    kind = "queue_full"
    status = 429


class PayloadTooLargeError(ApitwinError):
    kind = "payload_too_large"
    status = 413


class collecting:  # lower case: it reads as a function, `with collecting() as ids`
    """The ids of the deliveries this task enqueues meanwhile (a race fault waits for them).

    A class rather than a generator: every request enters one."""

    __slots__ = ("_token",)

    def __enter__(self) -> list[str]:
        found: list[str] = []
        self._token = _COLLECTED.set(found)
        return found

    def __exit__(self, *exc: object) -> None:
        _COLLECTED.reset(self._token)


def collected() -> list[str] | None:
    """The list ``collecting`` fills in this task, if any."""
    return _COLLECTED.get()


def new_id(prefix: str) -> str:
    return f"{prefix}_" + random_id(int.from_bytes(secrets.token_bytes(18)))


# -- endpoints --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    connection: str
    url: str
    events: tuple[str, ...] = ()  # empty: every event; globs such as "project.*" allowed
    scheme: str = DEFAULT_SCHEME
    secrets: tuple[str, ...] = ()  # current first, then rotated-out ones until grace_until
    grace_until: float | None = None
    status: EndpointStatus = "active"
    failures: int = 0  # consecutive
    failing_since: float | None = None
    scheme_options: Mapping[str, Any] = field(default_factory=dict)  # for "custom"
    created: float = 0.0

    def wants(self, event: str) -> bool:
        return not self.events or any(fnmatch.fnmatchcase(event, p) for p in self.events)

    def signer(self) -> Signer:
        return signer_for(self.scheme, self.scheme_options or None)

    def signing_secrets(self, now: float) -> tuple[str, ...]:
        """The secrets to sign with at ``now``: old ones only during the grace period."""
        in_grace = self.grace_until is not None and now < self.grace_until
        return self.secrets if in_grace else self.secrets[:1]

    def to_data(self) -> dict[str, Any]:
        data = asdict(self)
        data["events"], data["secrets"] = list(self.events), list(self.secrets)
        data["scheme_options"] = dict(self.scheme_options)
        return data

    @classmethod
    def from_data(cls, data: Mapping[str, Any]) -> Endpoint:
        return cls(
            **{
                **data,
                "events": tuple(data.get("events") or ()),
                "secrets": tuple(data.get("secrets") or ()),
                "scheme_options": dict(data.get("scheme_options") or {}),
            }
        )

    def view(self) -> dict[str, Any]:
        """The endpoint as tools and logs may show it: secrets masked."""
        data = self.to_data()
        data["secrets"] = [mask_secret(s) for s in self.secrets]
        return data


def _health(
    ep: Endpoint, ok: bool, now: float, failing_after: int, disable_after: float
) -> Endpoint:
    if ep.status == "disabled":
        return ep
    if ok:
        return replace(ep, status="active", failures=0, failing_since=None)
    failures = ep.failures + 1
    if failures < failing_after:
        return replace(ep, failures=failures)
    since = ep.failing_since if ep.failing_since is not None else now
    status: EndpointStatus = "disabled" if now - since >= disable_after else "failing"
    return replace(ep, failures=failures, status=status, failing_since=since)


def overdue(ep: Endpoint, now: float, disable_after: float) -> bool:
    """True if ``ep`` has been failing long enough to be disabled."""
    return (
        ep.status == "failing"
        and ep.failing_since is not None
        and now - ep.failing_since >= disable_after
    )


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


class Outbox:
    """Endpoints, the outbox rows of events, and queries over deliveries, for one twin."""

    def __init__(
        self,
        store: Store,
        twin: str,
        clock: VirtualClock,
        *,
        max_pending: int = MAX_PENDING_PER_CONNECTION,
        max_payload: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self.store = store
        self.twin = twin
        self.clock = clock
        self.max_pending = max_pending
        self.max_payload = max_payload
        self._endpoints: dict[str, dict[str, Endpoint]] = {}
        self._registered: set[str] = set()
        self._listeners: list[Callable[[], None]] = []
        self._committed: list[Callable[[list[Item]], None]] = []
        self._pending_bound: dict[str, int] = {}  # see _check_room
        # Told of deliveries created or restarted, and of attempt outcomes (for watchers).
        self.changes = ChangeFeed()
        # Retention: finished deliveries (with their attempts) and messages beyond the newest
        # ``keep`` per connection are removed, checked every ``prune_every`` events.
        self.keep = KEEP_PER_CONNECTION
        self._since_prune: dict[str, int] = {}
        self._pruning: set[asyncio.Task[None]] = set()

    @property
    def prune_every(self) -> int:
        return max(1, min(100, self.keep // 10))

    def scope(self, conn: str, kind: str) -> Scope:
        return Scope(self.twin, conn, kind)

    # -- wake-ups --------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[], None]) -> None:
        """``listener`` is called (on the event loop) when deliveries may have become due."""
        self._listeners.append(listener)

    def notify(self) -> None:
        for listener in self._listeners:
            listener()

    def subscribe_committed(self, listener: Callable[[list[Item]], None]) -> None:
        """``listener`` gets the deliveries this process just stored (see ``committed``)."""
        self._committed.append(listener)

    def committed(self, results: Sequence[Item | None]) -> None:
        """Told by whoever wrote ``enqueue_ops``'s ops, with the write's results: the new
        deliveries go straight to the sender, which need not search the store for them."""
        fresh = [i for i in results if i is not None and i.key.kind == DELIVERY]
        if not fresh:
            return
        if not self._committed:
            self.notify()
        for listener in self._committed:
            listener(fresh)

    def _publish_soon(self, conn: str, ops: Sequence[Op]) -> None:
        # Later: the caller writes the deliveries.
        loop = asyncio.get_running_loop()
        for op in ops:
            if isinstance(op, Put) and op.key.kind == DELIVERY:
                loop.call_soon(self.changes.publish, Change("delivery", conn, op.key.id))

    # -- endpoints -------------------------------------------------------------------------

    async def add_endpoint(
        self,
        conn: str,
        url: str,
        events: Sequence[str] = (),
        scheme: str | None = None,
        secret: str | None = None,
        *,
        scheme_options: Mapping[str, Any] | None = None,
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its full secret (the only time the secret is shown in full)."""
        _valid_url(url)
        if isinstance(events, str):
            events = (events,)
        existing = await self._cached(conn)
        if len(existing) >= MAX_ENDPOINTS_PER_CONNECTION:
            raise QueueFullError(
                f"a connection has at most {MAX_ENDPOINTS_PER_CONNECTION} endpoints"
            )
        now = self.clock.now()
        endpoint = Endpoint(
            new_id("ep"),
            conn,
            url,
            tuple(events),
            scheme or DEFAULT_SCHEME,
            scheme_options=dict(scheme_options or {}),
            created=now,
        )
        signer = _signer(endpoint)
        full = secret or signer.new_secret()
        _check_secret(signer, full)
        endpoint = replace(endpoint, secrets=(full,))
        marker = Put(Key(self.twin, "", CONNECTIONS, conn), {"connection": conn}, now=now)
        await self.store.write([self._put(endpoint, expect="absent"), marker])
        self._registered.add(conn)
        existing[endpoint.id] = endpoint
        return endpoint, full

    async def list_endpoints(self, conn: str) -> list[Endpoint]:
        return list((await self._cached(conn, refresh=True)).values())

    async def find_endpoint(self, conn: str, endpoint_id: str) -> Endpoint | None:
        return (await self._cached(conn)).get(endpoint_id)

    async def get_endpoint(self, conn: str, endpoint_id: str) -> Endpoint:
        found = await self.find_endpoint(conn, endpoint_id)
        if found is None:
            raise NotFoundError(f"no webhook endpoint {endpoint_id!r}", field="endpoint_id")
        return found

    async def rotate_secret(
        self, conn: str, endpoint_id: str, grace_seconds: float = DEFAULT_GRACE
    ) -> str:
        """A new current secret; the old ones keep signing for ``grace_seconds``."""
        if grace_seconds < 0:
            raise WebhookInputError("grace_seconds must be >= 0", field="grace_seconds")
        current = await self.get_endpoint(conn, endpoint_id)
        fresh = current.signer().new_secret()
        now = self.clock.now()
        # Secrets whose grace period is over stay retired.
        kept = current.signing_secrets(now)[:MAX_OLD_SECRETS]
        rotated = replace(current, secrets=(fresh, *kept), grace_until=now + grace_seconds)
        await self._save(rotated)
        return fresh

    async def remove_endpoint(self, conn: str, endpoint_id: str) -> None:
        """Removes the endpoint and drops its pending deliveries."""
        await self.get_endpoint(conn, endpoint_id)
        key = self.scope(conn, ENDPOINT).key(endpoint_id)
        await self.store.write([Delete(key, must_exist=False)])
        self._endpoints.get(conn, {}).pop(endpoint_id, None)
        await self.drop_pending(conn, endpoint_id, "endpoint removed")

    async def set_status(self, conn: str, endpoint_id: str, status: EndpointStatus) -> Endpoint:
        """Enable (failures forgiven) or disable an endpoint; disabling drops its pending
        deliveries."""
        current = await self.get_endpoint(conn, endpoint_id)
        changed = replace(current, status=status)
        if status == "active":
            changed = replace(changed, failures=0, failing_since=None)
        await self._save(changed)
        if status == "disabled":
            await self.drop_pending(conn, endpoint_id, "endpoint disabled")
        return changed

    async def record_outcome(
        self, conn: str, endpoint_id: str, ok: bool, *, failing_after: int, disable_after: float
    ) -> Endpoint | None:
        """The endpoint after one more attempt's outcome (optimistic read-modify-write)."""
        key = self.scope(conn, ENDPOINT).key(endpoint_id)
        for _ in range(5):
            item = await self.store.get(key)
            if item is None:
                return None
            current = Endpoint.from_data(item.data)
            changed = _health(current, ok, self.clock.now(), failing_after, disable_after)
            try:
                if changed != current:
                    await self._save(changed, expect=item.version)
            except StoreError as exc:
                if exc.reason != "conflict":
                    raise
                continue
            self._endpoints.setdefault(conn, {})[endpoint_id] = changed
            self.changes.publish(Change("delivery", conn))
            return changed
        return None

    def invalidate(self, conn: str | None = None) -> None:
        """Forget cached endpoints (after another replica changed them)."""
        if conn is None:
            self._endpoints.clear()
        else:
            self._endpoints.pop(conn, None)

    def forget(self, conn: str) -> list[Op]:
        """A connection is being removed: drop what is kept of it in memory; returns the
        deletion of its marker among the connections that may hold deliveries."""
        self._endpoints.pop(conn, None)
        self._registered.discard(conn)
        self._pending_bound.pop(conn, None)
        self._since_prune.pop(conn, None)
        return [Delete(Key(self.twin, "", CONNECTIONS, conn), must_exist=False)]

    async def connections(self) -> list[str]:
        """Connections that may hold deliveries."""
        items = await self.store.query(Query(self.scope("", CONNECTIONS), limit=100_000))
        found = [item.key.id for item in items]
        self._registered.update(found)
        return found

    async def _cached(self, conn: str, *, refresh: bool = False) -> dict[str, Endpoint]:
        found = self._endpoints.get(conn)
        # A shared store: another replica may have changed them, so never trust the cache.
        if found is None or refresh or self.store.shared:
            items = await self.store.query(
                Query(self.scope(conn, ENDPOINT), limit=MAX_ENDPOINTS_PER_CONNECTION * 2)
            )
            found = {item.key.id: Endpoint.from_data(item.data) for item in items}
            self._endpoints[conn] = found
        return found

    def _put(self, endpoint: Endpoint, expect: str | int | None = None) -> Put:
        key = self.scope(endpoint.connection, ENDPOINT).key(endpoint.id)
        return Put(key, endpoint.to_data(), expect=expect, now=self.clock.now())

    async def _save(self, endpoint: Endpoint, expect: int | str = "present") -> None:
        await self.store.write([self._put(endpoint, expect=expect)])
        self._endpoints.setdefault(endpoint.connection, {})[endpoint.id] = endpoint

    # -- messages --------------------------------------------------------------------------

    async def enqueue_ops(
        self,
        conn: str,
        event_name: str,
        payload: Any,
        *,
        now: float | None = None,
        url: str | None = None,
        method: str = "post",
    ) -> tuple[list[Op], str]:
        """Put ops for a message and its deliveries, to write with the change that caused it.

        Deliveries go to every active or failing endpoint of ``conn`` subscribed to
        ``event_name``, or, with ``url`` (a callback), to that URL alone, unsigned.
        """
        now = self.clock.now() if now is None else now
        body = orjson.dumps(payload)
        if len(body) > self.max_payload:
            raise PayloadTooLargeError(
                f"the payload is {len(body)} bytes; the limit is {self.max_payload}"
            )
        if url is not None:
            _valid_url(url)
            targets: list[Endpoint | None] = [None]
        else:
            endpoints = (await self._cached(conn)).values()
            targets = [e for e in endpoints if e.status != "disabled" and e.wants(event_name)]
        await self._check_room(conn, len(targets))
        msg_id = new_id("msg")
        message = {"id": msg_id, "event": event_name, "body": body.decode(), "created": now}
        ops: list[Op] = [Put(self.scope(conn, MESSAGE).key(msg_id), message, now=now)]
        for target in targets:
            data = _delivery(msg_id, event_name, target, url, method, now)
            key = self.scope(conn, DELIVERY).key(data["id"])
            collected = _COLLECTED.get()
            if collected is not None:
                collected.append(data["id"])
            ops.append(Put(key, data, parent=msg_id, expect="absent", now=now))
        if url is not None and conn not in self._registered:
            ops.append(Put(Key(self.twin, "", CONNECTIONS, conn), {"connection": conn}, now=now))
            self._registered.add(conn)
        if len(ops) > 1:
            self._publish_soon(conn, ops)
        self._count_for_pruning(conn)
        return ops, msg_id

    # -- retention -------------------------------------------------------------------------

    def _count_for_pruning(self, conn: str) -> None:
        count = self._since_prune.get(conn, 0) + 1
        if count < self.prune_every:
            self._since_prune[conn] = count
            return
        self._since_prune[conn] = 0
        # In the background, after the caller's write: pruning is housekeeping, never a reason
        # for a request to wait or fail.
        task = asyncio.get_running_loop().create_task(self._prune_quietly(conn))
        self._pruning.add(task)
        task.add_done_callback(self._pruning.discard)

    async def _prune_quietly(self, conn: str) -> None:
        try:
            # An empty write joins (or follows) the caller's, so its deliveries are counted.
            await self.store.write([])
            await self.prune(conn)
        except Exception as exc:  # e.g. a full disk: the next pass tries again
            log.warning("webhook history of %s not pruned: %s", conn, exc)

    async def prune(self, conn: str) -> int:
        """Remove the oldest finished deliveries (with their attempt logs) beyond the newest
        ``keep``, and the messages among the oldest beyond the newest ``keep`` that no delivery
        refers to; pending and in-flight deliveries (and their messages) are never touched.
        Returns how many items were removed."""
        removed = 0
        excess = await self.store.count(Query(self.scope(conn, DELIVERY))) - self.keep
        if excess > 0:
            removed += await self._prune_deliveries(conn, min(excess, _PRUNE_BATCH))
        excess = await self.store.count(Query(self.scope(conn, MESSAGE))) - self.keep
        if excess > 0:
            removed += await self._prune_messages(conn, min(excess, _PRUNE_BATCH))
        return removed

    async def _prune_deliveries(self, conn: str, wanted: int) -> int:
        ops: list[Op] = []
        gone = 0
        after = 0
        page_size = min(wanted, _PAGE)  # the oldest are usually finished: read no more
        while gone < wanted:
            page = await self.store.query(
                Query(self.scope(conn, DELIVERY), after_seq=after, limit=page_size)
            )
            for item in page:
                if item.data.get("status") not in FINISHED:
                    continue
                attempts = await self.store.query(
                    Query(self.scope(conn, ATTEMPT), parent=item.key.id, limit=1000)
                )
                ops.extend(Delete(a.key, must_exist=False) for a in attempts)
                ops.append(Delete(item.key, must_exist=False))
                gone += 1
                if gone >= wanted:
                    break
            if len(page) < page_size:
                break
            after = page[-1].seq
        if ops:
            await self.store.write(ops)
        return gone

    async def _prune_messages(self, conn: str, window: int) -> int:
        # Only the oldest ``window`` messages are candidates: one still referred (its delivery
        # pending, or newer than the pass that counted) waits for a later pass. Looking past
        # them would delete messages among the newest ``keep`` and, while events keep coming,
        # read the whole history on every pass.
        oldest = await self.store.query(Query(self.scope(conn, MESSAGE), limit=window))
        ops: list[Op] = []
        for item in oldest:
            referred = await self.store.count(
                Query(self.scope(conn, DELIVERY), parent=item.key.id, limit=1)
            )
            if not referred:
                ops.append(Delete(item.key, must_exist=False))
        if ops:
            await self.store.write(ops)
        return len(ops)

    async def emit(
        self,
        conn: str,
        event_name: str,
        payload: Any,
        *,
        url: str | None = None,
        method: str = "post",
    ) -> str:
        """Enqueue an event on its own (no state change to commit with it)."""
        ops, msg_id = await self.enqueue_ops(conn, event_name, payload, url=url, method=method)
        self.committed(await self.store.write(ops))
        return msg_id

    async def get_message(self, conn: str, message_id: str) -> dict[str, Any]:
        item = await self.store.get(self.scope(conn, MESSAGE).key(message_id))
        if item is None:
            raise NotFoundError(f"no webhook message {message_id!r}", field="message_id")
        return item.data

    async def _check_room(self, conn: str, adding: int) -> None:
        if not adding:
            return
        # Counting pending deliveries reads each of them: with a backlog, most of an event's
        # cost. When only this process writes, the count at the last check plus what was
        # enqueued since bounds it from above (sends only lower it), and is enough far from
        # the limit; close to it, or when replicas share the store, the store counts.
        bound = self._pending_bound.get(conn)
        if bound is not None and not self.store.shared and bound + adding <= self.max_pending:
            self._pending_bound[conn] = bound + adding
            return
        pending = await self.store.count(
            Query(self.scope(conn, DELIVERY), equals={"status": "pending"})
        )
        if pending + adding > self.max_pending:
            raise QueueFullError(
                f"connection {conn!r} has {pending} pending deliveries; the limit is "
                f"{self.max_pending}"
            )
        self._pending_bound[conn] = pending + adding

    def pending_added(self, conn: str) -> None:
        """A delivery became pending other than by ``enqueue_ops`` (a redelivery, a copy)."""
        self._pending_bound.pop(conn, None)

    # -- deliveries ------------------------------------------------------------------------

    async def list_deliveries(
        self,
        conn: str,
        *,
        status: DeliveryStatus | None = None,
        event: str | None = None,
        endpoint: str | None = None,
        since: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> DeliveryPage:
        """Deliveries, newest first, filtered; ``cursor`` continues a previous page."""
        if limit < 1:
            raise WebhookInputError("limit must be >= 1", field="limit")
        given = (("status", status), ("event", event), ("endpoint", endpoint))
        equals = {name: value for name, value in given if value is not None}
        after = _cursor(cursor)
        query = Query(
            self.scope(conn, DELIVERY),
            equals=equals,
            after_seq=after,
            limit=limit + 1,
            descending=True,
        )
        items = await self.store.query(query)
        if since is not None:
            items = [i for i in items if i.data.get("created", 0) >= since]
        more = len(items) > limit
        items = items[:limit]
        next_cursor = str(items[-1].seq) if more and items else None
        return DeliveryPage([_row(i) for i in items], next_cursor)

    async def get_delivery(self, conn: str, delivery_id: str) -> dict[str, Any]:
        """The delivery with its attempt log (``attempt_log``, oldest first)."""
        item = await self._delivery_item(conn, delivery_id)
        attempts = await self.store.query(
            Query(self.scope(conn, ATTEMPT), parent=delivery_id, limit=1000)
        )
        return {**_row(item), "attempt_log": [a.data for a in attempts]}

    async def redeliver(self, conn: str, delivery_id: str) -> dict[str, Any]:
        """Start a new attempt cycle now (the full retry schedule again)."""
        item = await self._delivery_item(conn, delivery_id)
        if item.data.get("status") == "delivering":
            raise DeliveryConflictError(f"delivery {delivery_id!r} is being attempted right now")
        endpoint_id = item.data.get("endpoint")
        if endpoint_id:
            endpoint = await self.get_endpoint(conn, endpoint_id)
            if endpoint.status == "disabled":
                raise DeliveryConflictError(
                    f"endpoint {endpoint_id!r} is disabled; enable it first"
                )
        now = self.clock.now()
        patch = {
            "status": "pending",
            "next_attempt_at": now,
            "cycle_start": item.data.get("attempts", 0),
            "trigger": "manual",
        }
        self.pending_added(conn)
        try:
            [changed] = await self.store.write(
                [Merge(item.key, patch, expect=item.version, now=now)]
            )
        except StoreError:
            raise DeliveryConflictError(f"delivery {delivery_id!r} changed; try again") from None
        self.notify()
        self.changes.publish(Change("delivery", conn, delivery_id))
        assert changed is not None
        return _row(changed)

    async def redeliver_failed(self, conn: str, since: float) -> list[str]:
        """Redeliver every failed delivery created at or after ``since``; their ids."""
        done: list[str] = []
        for item in await self._all(conn, {"status": "failed"}):
            if item.data.get("created", 0) >= since:
                await self.redeliver(conn, item.key.id)
                done.append(item.key.id)
        return done

    async def drop_pending(self, conn: str, endpoint_id: str, reason: str) -> int:
        """Marks the endpoint's pending deliveries dropped; how many."""
        dropped = 0
        patch = {"status": "dropped", "last_error": reason, "next_attempt_at": None}
        for _ in range(3):
            items = await self._all(conn, {"status": "pending", "endpoint": endpoint_id})
            now = self.clock.now()
            ops = [Merge(i.key, patch, expect=i.version, now=now) for i in items]
            try:
                for start in range(0, len(ops), _PAGE):
                    await self.store.write(ops[start : start + _PAGE])
                    dropped += len(ops[start : start + _PAGE])
                return dropped
            except StoreError:
                continue  # a worker claimed one meanwhile: query again
        return dropped

    async def _delivery_item(self, conn: str, delivery_id: str) -> Item:
        item = await self.store.get(self.scope(conn, DELIVERY).key(delivery_id))
        if item is None:
            raise NotFoundError(f"no webhook delivery {delivery_id!r}", field="delivery_id")
        return item

    async def _all(self, conn: str, equals: Mapping[str, Any]) -> list[Item]:
        found: list[Item] = []
        after = 0
        while True:
            query = Query(self.scope(conn, DELIVERY), equals=equals, after_seq=after, limit=_PAGE)
            page = await self.store.query(query)
            found.extend(page)
            if len(page) < _PAGE:
                return found
            after = page[-1].seq


def _delivery(
    msg_id: str, event: str, target: Endpoint | None, url: str | None, method: str, now: float
) -> dict[str, Any]:
    return {
        "id": new_id("dlv"),
        "message": msg_id,
        "endpoint": target.id if target is not None else "",
        "url": url,
        "method": method.lower(),
        "event": event,
        "status": "pending",
        "attempts": 0,
        "cycle_start": 0,
        "next_attempt_at": now,
        "created": now,
        "trigger": "scheduled",
    }


def _row(item: Item) -> dict[str, Any]:
    return {**item.data, "seq": item.seq, "updated": item.updated}


def _cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    if not cursor.isdigit():
        raise WebhookInputError(f"not a delivery cursor: {cursor!r}", field="cursor")
    return int(cursor)


def _valid_url(url: str) -> None:
    try:
        check_url(url)
    except TargetRefused as exc:
        raise WebhookInputError(exc.reason, field="url") from None


def _signer(endpoint: Endpoint) -> Signer:
    try:
        return endpoint.signer()
    except ValueError as exc:
        raise WebhookInputError(str(exc), field="scheme") from None


def _check_secret(signer: Signer, secret: str) -> None:
    try:
        signer.headers(SigningInput("msg_check", 0, b"{}"), [secret])
    except ValueError as exc:
        raise WebhookInputError(f"unusable signing secret: {exc}", field="secret") from None


# -- record changes -> events -----------------------------------------------------------------


class RecordChange(Protocol):
    """What the records service reports (``apitwin.service.records.Change``)."""

    @property
    def resource(self) -> str: ...
    @property
    def verb(self) -> str: ...
    @property
    def record(self) -> dict[str, Any]: ...
    @property
    def connection(self) -> str: ...


class ChangeEvents:
    """The ``emit`` hook of the records service: outbox ops for the events a change causes.

    Callbacks are left out: they need the URL from the API request that caused them. An event
    the outbox refuses (queue full, payload too large) is skipped and logged: the change itself
    still commits.
    """

    def __init__(
        self,
        outbox: Outbox,
        events: Mapping[str, EventType],
        generator: Generator,
        *,
        seed: int = 0,
    ) -> None:
        self.outbox = outbox
        self._catalogue = events
        self._events: dict[str, EventType] | None = None
        self.generator = generator
        self._rng = random.Random(seed)

    @property
    def events(self) -> dict[str, EventType]:
        """The catalogue's events a record change can cause (callbacks follow requests)."""
        if self._events is None:
            items = self._catalogue.items()
            self._events = {n: e for n, e in items if e.source != "callback"}
        return self._events

    async def __call__(self, change: RecordChange) -> list[Op]:
        ops: list[Op] = []
        for event in events_for(self.events, change.resource, change.verb):
            payload = build_payload(
                event,
                change.record,
                generator=self.generator,
                rng=self._rng,
                clock=self.outbox.clock,
            )
            try:
                more, _ = await self.outbox.enqueue_ops(change.connection, event.name, payload)
            except (QueueFullError, PayloadTooLargeError) as exc:
                # A platform does not fail an API call because its webhook queue is full.
                log.warning("webhook %s not enqueued: %s", event.name, exc.message)
                continue
            ops.extend(more)
        return ops


__all__ = [
    "ATTEMPT",
    "DEFAULT_SCHEME",
    "DELIVERY",
    "ENDPOINT",
    "MESSAGE",
    "ChangeEvents",
    "DeliveryConflictError",
    "DeliveryPage",
    "DeliveryStatus",
    "Endpoint",
    "EndpointStatus",
    "Outbox",
    "PayloadTooLargeError",
    "QueueFullError",
    "WebhookInputError",
    "collecting",
    "new_id",
    "overdue",
]
