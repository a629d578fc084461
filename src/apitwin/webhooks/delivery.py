"""The dispatcher: an asyncio worker that sends due deliveries, signs them and retries failures.

At-least-once: a delivery is claimed with a lease (a versioned Merge, so of two replicas only one
wins), attempted, and then marked succeeded, failed or pending again with its next attempt time.
A worker that dies mid-attempt leaves the lease behind; once it expires, the delivery is claimed
again, so after a restart every pending or in-flight delivery resumes.

Every time is virtual (:class:`VirtualClock`): retry schedules, leases, endpoint health and the
signatures' timestamps. The worker sleeps until the earliest due time but never more than
``poll_interval`` real seconds, so a clock advance is noticed promptly; ``notify()`` wakes it at
once and ``run_due()`` processes everything due now (tests await it after ``clock.advance``).

Each attempt is re-signed with a fresh timestamp, dials only the address the allow-list checked
(see ``safety``), never follows redirects (a 3xx is a failure), and is logged with secrets and
signatures masked and bodies truncated.

Outbound fault rules (``faults``) are consulted once per attempt and performed here: the attempt
log entry names the rule (``fault``, ``fault_kind``). Copies a fault enqueues (``duplicate``,
``replay``, ``burst``) are ordinary deliveries marked ``copy_of``; faults are not consulted for
them, so an unlimited ``duplicate`` rule cannot multiply its own copies without end.

Batches (``reorder``, ``parallel``): a delivery in an open batch is held (pending, with
``held_by``, due again when the batch's wait is over); the delivery that fills the batch claims
every member and sends them itself, one after another in the new order (``reorder``: each waits
for the previous answer, so the receiver sees exactly that order) or all at once (``parallel``).
A held delivery whose wait ends first closes the batch and releases what it has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
import re
import socket
import ssl
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import orjson

from apitwin.changes import Change
from apitwin.clock import VirtualClock
from apitwin.errors import StorageFullError
from apitwin.faults import BreakError, FaultPlan, Faults, break_body, ordered
from apitwin.state.store import Item, Key, Merge, Put, Query, Store, StoreError
from apitwin.webhooks.events import EventType, new_event_id
from apitwin.webhooks.outbox import (
    ATTEMPT,
    DELIVERY,
    MESSAGE,
    Endpoint,
    Outbox,
    new_id,
    overdue,
)
from apitwin.webhooks.safety import (
    DEFAULT_TIMEOUT,
    MAX_LOGGED_BODY_BYTES,
    MAX_RESPONSE_BYTES,
    AllowList,
    Target,
    TargetRefused,
)
from apitwin.webhooks.signing import DEFAULT_TOLERANCE, SigningInput

log = logging.getLogger(__name__)

RETRY_PRESETS: Final[Mapping[str, tuple[float, ...]]] = {
    # Svix / Standard Webhooks: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    "standard-webhooks": (0, 5, 300, 1800, 7200, 18000, 36000, 36000),
    # Stripe retries with exponential backoff for up to three days; it publishes no intervals.
    "stripe": (0, 60, 300, 1800, 3600, 10800, 21600, 43200, 86400, 86400),
    # GitHub never retries automatically.
    "github": (0,),
}
JITTER: Final = 0.2  # +-20 %, as Svix
FAILING_AFTER: Final = 5  # consecutive failures before an endpoint is "failing"
DISABLE_AFTER: Final = 5 * 86_400.0  # failing this long (virtual seconds) disables it
CONCURRENCY: Final = 16
POLL_INTERVAL: Final = 1.0  # real seconds between scans at most
MIN_LEASE: Final = 60.0  # virtual seconds; always longer than the attempt timeout
USER_AGENT: Final = "apitwin-webhooks/1.0"
_SENSITIVE = ("signature", "hmac", "authorization", "secret", "token", "cookie", "api-key")
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
# Far beyond every reference verifier's five-minute tolerance, so the receiver rejects it even
# when its clock and the twin's (advanced) virtual clock are some minutes apart.
SIGNATURE_SKEW: Final = 12 * DEFAULT_TOLERANCE
BATCH_KINDS: Final = frozenset({"reorder", "parallel"})
_ENVELOPE_IDS: Final = ("id", "event_id", "eventId")

if TYPE_CHECKING:
    import aiohttp

# aiohttp (and the SSL context its connector builds on import) loads with the first webhook
# sent, not at start-up: a fifth of a second that serving an API does not need.
ClientFactory = Callable[[], "aiohttp.ClientSession"]
# aiohttp adds these unless told not to; a webhook carries exactly the headers built for it (plus
# Host and Content-Length), whatever the session it is sent with.
_NO_AUTO_HEADERS: Final = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def parse_schedule(given: str | Sequence[float]) -> tuple[float, ...]:
    """Delays before each attempt, each counted from the previous failure.

    A preset name or a list of seconds; the first attempt is always immediate, so a list that
    does not start with 0 gets one (``[5, 60]`` means: now, then +5 s, then +60 s).
    """
    if isinstance(given, str):
        if given not in RETRY_PRESETS:
            raise ValueError(f"unknown retry schedule {given!r}; known: {', '.join(RETRY_PRESETS)}")
        return RETRY_PRESETS[given]
    delays = tuple(float(d) for d in given)
    if any(d < 0 or not math.isfinite(d) for d in delays):
        raise ValueError("retry delays must be finite and >= 0")
    return delays if delays and delays[0] == 0 else (0.0, *delays)


def default_client(
    timeout: float = DEFAULT_TIMEOUT,
    connections: int = CONCURRENCY,
    trace_configs: list[aiohttp.TraceConfig] | None = None,
) -> aiohttp.ClientSession:
    """A keep-alive pool of ``connections`` connections; call it inside the loop that uses it."""
    import aiohttp

    return aiohttp.ClientSession(
        trace_configs=trace_configs,
        connector=aiohttp.TCPConnector(limit=connections, limit_per_host=connections),
        timeout=aiohttp.ClientTimeout(total=timeout),
        # No proxies from the environment: a proxy would dial an address the allow-list never
        # saw. No cookies either: a receiver's Set-Cookie must not reach the next webhook.
        trust_env=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        skip_auto_headers=_NO_AUTO_HEADERS,
        auto_decompress=False,  # the log keeps the response body as it came
    )


@dataclass(frozen=True, slots=True)
class Request:
    """What one attempt sends, after any fault changed it; ``tag`` goes into the attempt log."""

    body: bytes
    headers: dict[str, str]
    tag: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    status: int | None = None
    error_class: str | None = None  # timeout|refused|reset|dns|tls|invalid-url|...|status
    error: str | None = None
    response_body: str = ""
    response_truncated: bool = False
    duration_ms: float = 0.0


class Dispatcher:
    def __init__(
        self,
        store: Store,
        outbox: Outbox,
        clock: VirtualClock,
        http_client_factory: ClientFactory | None = None,
        *,
        retry_schedule: str | Sequence[float] = "standard-webhooks",
        timeout: float = DEFAULT_TIMEOUT,
        allow: AllowList | None = None,
        max_attempts: int | None = None,
        seed: int = 0,
        jitter: float = JITTER,
        failing_after: int = FAILING_AFTER,
        disable_after: float = DISABLE_AFTER,
        concurrency: int = CONCURRENCY,
        log_body_limit: int = MAX_LOGGED_BODY_BYTES,
        response_limit: int = MAX_RESPONSE_BYTES,
        poll_interval: float = POLL_INTERVAL,
        faults: Faults | None = None,
        events: Mapping[str, EventType] | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.schedule = parse_schedule(retry_schedule)
        self.max_attempts = max_attempts or len(self.schedule)
        self.timeout = timeout
        self.allow = allow or AllowList()
        self.seed, self.jitter = seed, jitter
        self.failing_after, self.disable_after = failing_after, disable_after
        self.concurrency = max(1, concurrency)
        self.log_body_limit, self.response_limit = log_body_limit, response_limit
        self.poll_interval = poll_interval
        self.lease = max(MIN_LEASE, timeout * 4)
        # Both may be set after construction (the twin creates its Faults after the dispatcher).
        self.faults = faults
        self.events = events  # event schemas, for schema_break
        self._factory = http_client_factory or (lambda: default_client(timeout, self.concurrency))
        # One session per event loop: a session's connections belong to the loop that opened
        # them, and the server's worker and a caller's run_due() may run on different loops.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]
        self._clients = weakref.WeakKeyDictionary()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._reserved: list[list[str]] = []
        # Due deliveries from the last scan: draining a backlog does not rescan per attempt.
        self._queue: deque[Item] = deque()
        self._next_due: float | None = None
        self._stale = True
        outbox.subscribe(self.notify)
        outbox.subscribe_committed(self._fresh)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="apitwin-webhooks")

    async def stop(self, grace: float = 5.0) -> None:
        """Stops the worker; attempts still running after ``grace`` seconds are cancelled
        (their leases expire and they are retried: at-least-once)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = list(self._inflight.values())
        if running:
            _, late = await asyncio.wait(running, timeout=grace)
            for pending in late:
                pending.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def notify(self) -> None:
        """Wake the worker (new deliveries, or the virtual clock moved). Event-loop thread only."""
        self._stale = True
        self._wake.set()

    async def run_due(self, *, limit: int | None = None) -> int:
        """Process every delivery due now (and retries that become due meanwhile) until none is
        left or in flight; at most ``limit`` claims. Returns how many were started."""
        count = 0
        self._stale = True
        while True:
            room = self.concurrency - len(self._inflight)
            if limit is not None:
                room = min(room, limit - count)
            if room > 0:
                started, _ = await self._dispatch(room)
                count += started
            # Attempts another loop started cannot be awaited here; their leases guard them.
            loop = asyncio.get_running_loop()
            mine = [task for task in self._inflight.values() if task.get_loop() is loop]
            if not mine:
                return count
            await asyncio.wait(mine, return_when=asyncio.FIRST_COMPLETED)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            next_due: float | None = None
            room = self.concurrency - len(self._inflight)
            try:
                if room > 0:
                    _, next_due = await self._dispatch(room)
            except StorageFullError as exc:
                log.warning("webhook dispatch paused: %s", exc.message)  # no traceback each poll
            except Exception:
                log.exception("webhook dispatch failed; retrying")
            wait = self.poll_interval
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self.clock.now()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()

    # -- finding and claiming work ---------------------------------------------------------

    async def _dispatch(self, room: int) -> tuple[int, float | None]:
        """Starts up to ``room`` due deliveries; (started, the earliest later due time)."""
        if self._stale or not self._queue:
            self._stale = False
            due, self._next_due = await self._scan()
            self._queue = deque(due)
        started = 0
        while self._queue and started < room:
            item = self._queue.popleft()
            if item.key.id in self._inflight or self._is_reserved(item.key.id):
                continue
            task = asyncio.create_task(self._deliver(item))
            self._inflight[item.key.id] = task
            task.add_done_callback(functools.partial(self._done, item.key.id))
            started += 1
        return started, self.clock.now() if self._queue else self._next_due

    def reserve(self, delivery_ids: list[str]) -> None:
        """Leave these deliveries (the list may still grow) to the caller until ``release``: a
        request that must attempt its own webhooks before it answers."""
        self._reserved.append(delivery_ids)

    def release(self, delivery_ids: list[str]) -> None:
        if self._reserved:
            self._reserved = [ids for ids in self._reserved if ids is not delivery_ids]

    def _is_reserved(self, delivery_id: str) -> bool:
        return any(delivery_id in ids for ids in self._reserved)

    def _fresh(self, items: list[Item]) -> None:
        """Deliveries this process just stored: queued as they are, no scan of the store (which,
        with a backlog, would read every pending delivery for each new one)."""
        now = self.clock.now()
        for item in items:
            if item.data.get("status") != "pending":
                continue
            at = float(item.data.get("next_attempt_at") or 0.0)
            if at <= now:
                self._queue.append(item)
            elif self._next_due is None or at < self._next_due:
                self._next_due = at
        self._wake.set()

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        self._wake.set()  # a slot is free

    async def _scan(self) -> tuple[list[Item], float | None]:
        await self.clock.sync()  # another replica may have advanced the shared clock
        now = self.clock.now()
        due: list[tuple[float, Item]] = []
        later: list[float] = []
        for conn in await self.outbox.connections():
            for status, field in (("pending", "next_attempt_at"), ("delivering", "lease_until")):
                for item in await self._with_status(conn, status):
                    at = float(item.data.get(field) or 0.0)
                    if item.key.id in self._inflight:
                        continue
                    if at <= now:
                        due.append((at, item))
                    else:
                        later.append(at)
        due.sort(key=lambda pair: (pair[0], pair[1].seq))
        return [item for _, item in due], min(later, default=None)

    async def _with_status(self, conn: str, status: str) -> list[Item]:
        found: list[Item] = []
        after = 0
        scope = self.outbox.scope(conn, DELIVERY)
        while True:
            query = Query(scope, equals={"status": status}, after_seq=after, limit=500)
            page = await self.store.query(query)
            found.extend(page)
            if len(page) < 500:
                return found
            after = page[-1].seq

    async def _claim(self, item: Item) -> Item | None:
        now = self.clock.now()
        attempt = int(item.data.get("attempts", 0)) + 1
        patch = {"status": "delivering", "lease_until": now + self.lease, "attempts": attempt}
        # None when another worker (maybe another replica) claimed it, or it is gone; a row that
        # worker holds right now is skipped, not waited for (SKIP LOCKED).
        [claimed] = await self.store.claim([Merge(item.key, patch, expect=item.version, now=now)])
        return claimed

    # -- one attempt -----------------------------------------------------------------------

    async def _deliver(self, item: Item) -> None:
        claimed = await self._claim(item)
        if claimed is None:
            return
        try:
            await self._attempt(claimed)
        except StorageFullError as exc:
            # The lease stays; the delivery is retried once it expires.
            log.warning("webhook delivery %s not recorded: %s", claimed.key.id, exc.message)
        except Exception:
            # The lease stays; the delivery is retried once it expires.
            log.exception("webhook delivery %s failed unexpectedly", claimed.key.id)

    async def _attempt(self, claimed: Item, given: FaultPlan | None = None) -> None:
        """One attempt of a claimed delivery; ``given``: the fault already decided for it (a
        batch's release, a burst, a race), so no rule is consulted."""
        data, conn = claimed.data, claimed.key.conn
        message = await self.store.get(Key(claimed.key.twin, conn, MESSAGE, data["message"]))
        if message is None:
            await self._drop(claimed, "message missing")
            return
        endpoint: Endpoint | None = None
        if data.get("endpoint"):
            endpoint = await self.outbox.find_endpoint(conn, data["endpoint"])
            reason = await self._unusable(conn, data["endpoint"], endpoint)
            if reason is not None:
                await self._drop(claimed, reason)
                return
        url = endpoint.url if endpoint is not None else str(data.get("url") or "")
        plan = given
        if given is None and data.get("held_by"):
            if await self._release_held(claimed):
                return
            # Its batch is gone (filled meanwhile, or the rule cleared): an ordinary attempt.
        elif given is None:
            plan = await self._plan(claimed, message.data)
            if plan is not None and await self._instead(claimed, plan, message.data):
                return
        request = self._request(plan, claimed, endpoint, message.data)
        outcome = await self._outcome(plan, url, str(data.get("method") or "post"), request)
        extra = _carry(plan, outcome)
        if data.get("held_by"):
            extra["held_by"] = None
        await self._finish(claimed, url, request, outcome, extra)
        if plan is not None:
            await self._copies(claimed, plan, outcome)
        if endpoint is not None:
            await self._health(conn, endpoint, outcome.ok)

    async def _unusable(self, conn: str, endpoint_id: str, endpoint: Endpoint | None) -> str | None:
        if endpoint is None:
            return "endpoint removed"
        if overdue(endpoint, self.clock.now(), self.disable_after):
            await self.outbox.set_status(conn, endpoint_id, "disabled")
            return "endpoint disabled"
        return "endpoint disabled" if endpoint.status == "disabled" else None

    def _headers(
        self,
        endpoint: Endpoint | None,
        message: Mapping[str, Any],
        body: bytes,
        *,
        timestamp: int | None = None,
        secrets: Sequence[str] | None = None,
    ) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if endpoint is not None:
            # A fresh timestamp, hence a fresh signature, on every attempt.
            ts = int(self.clock.now()) if timestamp is None else timestamp
            signing = SigningInput(message["id"], ts, body, message["event"])
            keys = endpoint.signing_secrets(self.clock.now()) if secrets is None else secrets
            headers.update(endpoint.signer().headers(signing, keys))
        return headers

    # -- outbound faults -------------------------------------------------------------------

    async def _plan(self, claimed: Item, message: Mapping[str, Any]) -> FaultPlan | None:
        """The fault for this attempt: one carried over from an earlier attempt, else a rule's."""
        data = claimed.data
        carried = data.get("fault_carry")
        if carried:
            return FaultPlan(carried["rule"], carried["kind"], dict(carried["params"]))
        if self.faults is None or data.get("copy_of"):
            return None
        endpoint_id = str(data.get("endpoint") or "")
        return await self.faults.plan_outbound(
            claimed.key.conn,
            endpoint_id,
            message["event"],
            delivery_id=claimed.key.id,
            record_id=self._record_id(message),
        )

    def _record_id(self, message: Mapping[str, Any]) -> str | None:
        """The id of the record an event is about, where its payload says (for ``parallel``)."""
        event = (self.events or {}).get(message["event"])
        if event is None or event.record_path is None:
            return None
        try:
            record = _at(orjson.loads(str(message["body"])), event.record_path)
        except orjson.JSONDecodeError:
            return None
        value = record.get("id") if isinstance(record, dict) else None
        return str(value) if isinstance(value, (str, int)) else None

    async def _instead(
        self, claimed: Item, plan: FaultPlan, message: Mapping[str, Any] | None = None
    ) -> bool:
        """Performs the kinds that replace the attempt (drop, delay, batches, burst); True if
        one did."""
        if plan.kind in BATCH_KINDS and plan.members:
            if plan.full:
                await self._release(claimed, plan)
            else:
                await self._hold(claimed, plan)
            return True
        if plan.kind == "burst" and message is not None:
            await self._burst(claimed, plan, message)
            return True
        if plan.kind == "drop":
            log.info("webhook delivery %s dropped by fault %s", claimed.key.id, plan.rule_id)
            await self._drop(claimed, "injected drop", _tag(plan))
            return True
        if plan.kind == "delay" and plan.rule_id not in (claimed.data.get("fault_delayed") or []):
            await self._postpone(claimed, plan)
            return True
        return False

    async def _postpone(self, claimed: Item, plan: FaultPlan) -> None:
        # The claim counted an attempt that is not made; each rule delays a delivery once, so a
        # rule without a ``next`` limit delays every delivery rather than one forever.
        now = self.clock.now()
        patch = {
            "status": "pending",
            "attempts": int(claimed.data["attempts"]) - 1,
            "lease_until": None,
            "next_attempt_at": now + float(plan.params["seconds"]),
            "fault_delayed": [*(claimed.data.get("fault_delayed") or []), plan.rule_id],
            "last_fault": _tag(plan),
        }
        with contextlib.suppress(StoreError):
            await self.store.write([Merge(claimed.key, patch, expect=claimed.version, now=now)])
        self.notify()

    # -- batches (reorder, parallel) and bursts ---------------------------------------------

    async def _hold(self, claimed: Item, plan: FaultPlan) -> None:
        """Keeps a batch member back until the batch is full or its wait is over."""
        now = self.clock.now()
        held = {
            "rule": plan.rule_id,
            "kind": plan.kind,
            "group": plan.group,
            "params": plan.params,
            "draw": plan.draw,
            "seed": plan.seed,
        }
        patch = {
            "status": "pending",
            "attempts": int(claimed.data["attempts"]) - 1,  # the claim counted no attempt
            "lease_until": None,
            "next_attempt_at": now + float(plan.params.get("max_wait_seconds") or 0),
            "held_by": held,
            "last_fault": _tag(plan),
        }
        with contextlib.suppress(StoreError):
            await self.store.write([Merge(claimed.key, patch, expect=claimed.version, now=now)])
        log.info("webhook delivery %s held by fault %s", claimed.key.id, plan.rule_id)

    async def _release_held(self, claimed: Item) -> bool:
        """A held delivery is due: its batch waited long enough; release what it gathered."""
        held = claimed.data["held_by"]
        members = None
        if self.faults is not None:
            members = await self.faults.close_batch(claimed.key.conn, held["rule"], held["group"])
        if not members:
            return False
        plan = FaultPlan(
            held["rule"],
            held["kind"],
            dict(held["params"]),
            int(held["draw"]),
            str(held["seed"]),
            held["group"],
            members,
        )
        await self._release(claimed, plan)
        return True

    async def _release(self, claimed: Item, plan: FaultPlan) -> None:
        """Sends a batch: ``reorder`` one after another in the new order, ``parallel`` at once."""
        found: list[Item] = []
        for delivery_id in plan.members:
            member = claimed if delivery_id == claimed.key.id else None
            if member is None:
                member = await self._claim_held(claimed, delivery_id, plan.group)
            if member is not None:
                found.append(member)
        # The order the events happened in (not the order concurrent workers joined the batch).
        found.sort(key=lambda item: item.seq)
        members = found
        if plan.kind == "reorder":
            by_id = {item.key.id: item for item in found}
            order = str(plan.params.get("order") or "reversed")
            members = [by_id[i] for i in ordered(list(by_id), order, plan.rng())]
        log.info(
            "webhook fault %s releases %d deliveries (%s)", plan.rule_id, len(members), plan.kind
        )
        # Each member on its own: one failing unexpectedly keeps its lease (and is retried
        # once that expires) without holding back the others.
        if plan.kind == "reorder":
            for member in members:
                await self._attempt_logged(member, plan)
        else:
            await asyncio.gather(*(self._attempt_logged(member, plan) for member in members))

    async def _claim_held(self, claimed: Item, delivery_id: str, group: str) -> Item | None:
        """Claims a member of the batch; one that joined a moment ago may not be held yet (its
        own worker is still writing that), so wait for it, briefly."""
        key = Key(claimed.key.twin, claimed.key.conn, DELIVERY, delivery_id)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            item = await self.store.get(key)
            if item is None:
                return None
            status = item.data.get("status")
            held = (item.data.get("held_by") or {}).get("group") == group
            if status == "pending" and held:
                return await self._claim(item)
            if status != "delivering":
                return None  # dropped, or already sent: nothing to release
            await asyncio.sleep(0.01)
        return None

    async def _burst(self, claimed: Item, plan: FaultPlan, message: Mapping[str, Any]) -> None:
        """``count`` events about the same record at once: the delivery and ``count - 1`` new
        messages of the same event (each its own id), all sent together."""
        now = self.clock.now()
        data = claimed.data
        rng = plan.rng()
        self.outbox.pending_added(claimed.key.conn)  # pending again if an attempt fails
        ops: list[Put] = []
        copies: list[Key] = []
        for _ in range(int(plan.params["count"]) - 1):
            msg_id = new_id("msg")
            body = _fresh_envelope(str(message["body"]), rng)
            copy_message = {**message, "id": msg_id, "body": body, "created": now}
            copy = {
                "id": new_id("dlv"),
                **{name: data.get(name) for name in ("endpoint", "url", "method", "event")},
                "message": msg_id,
                # Claimed by this worker from the start: sent below, not by the next scan.
                "status": "delivering",
                "lease_until": now + self.lease,
                "attempts": 1,
                "cycle_start": 0,
                "next_attempt_at": now,
                "created": now,
                "trigger": "fault",
                "copy_of": claimed.key.id,
                **_tag(plan),
            }
            key = Key(claimed.key.twin, claimed.key.conn, DELIVERY, copy["id"])
            ops.append(Put(Key(key.twin, key.conn, MESSAGE, msg_id), copy_message, now=now))
            ops.append(Put(key, copy, parent=msg_id, expect="absent", now=now))
            copies.append(key)
        results = await self.store.write(ops)
        items = [item for item in results if item is not None and item.key in copies]
        sends = [self._attempt_logged(item, plan) for item in (claimed, *items)]
        await asyncio.gather(*sends)

    # -- races -----------------------------------------------------------------------------

    async def deliver_now(self, conn: str, delivery_ids: Sequence[str], plan: FaultPlan) -> None:
        """Attempts these deliveries now and returns once each attempt has completed (the
        ``webhook_before_response`` race: the API answer waits for its webhooks)."""
        await asyncio.gather(*(self._deliver_now(conn, d, plan) for d in delivery_ids))

    async def _deliver_now(self, conn: str, delivery_id: str, plan: FaultPlan) -> None:
        key = Key(self.outbox.twin, conn, DELIVERY, delivery_id)
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.timeout + 5
        while time.monotonic() < deadline:
            running = self._inflight.get(delivery_id)
            if running is not None and running.get_loop() is loop:
                await asyncio.wait([running])  # the worker got there first: wait for it
                continue
            item = await self.store.get(key)
            if item is None or int(item.data.get("attempts", 0)) > 0:
                return  # attempted (or gone)
            if float(item.data.get("next_attempt_at") or 0) > self.clock.now():
                return  # sent later on purpose (a rule's delay): not part of the race
            if item.data.get("status") == "pending":
                claimed = await self._claim(item)
                if claimed is not None:
                    task = asyncio.create_task(self._attempt_logged(claimed, plan))
                    self._inflight[delivery_id] = task
                    task.add_done_callback(functools.partial(self._done, delivery_id))
                    await asyncio.wait([task])
                    return
            await asyncio.sleep(0.01)

    async def _attempt_logged(self, claimed: Item, plan: FaultPlan) -> None:
        try:
            await self._attempt(claimed, plan)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", claimed.key.id)

    def _request(
        self,
        plan: FaultPlan | None,
        claimed: Item,
        endpoint: Endpoint | None,
        message: Mapping[str, Any],
    ) -> Request:
        body = str(message["body"]).encode()
        age = claimed.data.get("replay_age")
        if age is not None:
            # A replayed copy: the same message, signed with a timestamp from the past.
            ts = int(self.clock.now() - float(age))
            headers = self._headers(endpoint, message, body, timestamp=ts)
            return Request(body, headers, _copy_tag(claimed.data))
        if claimed.data.get("copy_of"):
            return Request(body, self._headers(endpoint, message, body), _copy_tag(claimed.data))
        if plan is None:
            return Request(body, self._headers(endpoint, message, body), {})
        return self._faulty_request(plan, endpoint, message, body)

    def _faulty_request(
        self, plan: FaultPlan, endpoint: Endpoint | None, message: Mapping[str, Any], body: bytes
    ) -> Request:
        note: str | None = None
        if plan.kind == "malformed_payload":
            body = _malformed(body)
        elif plan.kind == "schema_break":
            body, note = self._schema_break(message, body, str(plan.params["mode"]))
        elif plan.kind == "dangling_reference":
            body, note = self._dangling(message, body, plan)
        elif plan.kind == "bad_signature":
            if endpoint is None:
                note = "not performed: callbacks are not signed"
            else:
                body, headers = self._bad_signature(endpoint, message, body, plan.params["mode"])
                return Request(body, headers, _tag(plan))
        elif plan.kind == "delay":
            note = "not performed: this rule already delayed this delivery once"
        elif plan.kind in BATCH_KINDS and not plan.members:
            note = "not performed: no record id known in this event's payload"
        if note is not None:
            log.info("webhook fault %s (%s): %s", plan.rule_id, plan.kind, note)
        tag = _tag(plan, note)
        if plan.members:
            tag["fault_group"] = plan.group
        return Request(body, self._headers(endpoint, message, body), tag)

    def _schema_break(
        self, message: Mapping[str, Any], body: bytes, mode: str
    ) -> tuple[bytes, str | None]:
        event = (self.events or {}).get(message["event"])
        if event is None or event.schema is None:
            return body, "not performed: no schema known for this event"
        try:
            broken = break_body(orjson.loads(body), event.schema.json, mode)
        except (BreakError, orjson.JSONDecodeError) as exc:
            return body, f"not performed: {exc}"
        return orjson.dumps(broken), None

    def _dangling(
        self, message: Mapping[str, Any], body: bytes, plan: FaultPlan
    ) -> tuple[bytes, str | None]:
        """The payload's record id swapped for one the twin never issued (a receiver that
        fetches the record gets a 404, as after a delete or before a replica caught up)."""
        event = (self.events or {}).get(message["event"])
        path = event.record_path if event is not None else None
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body, "not performed: the payload is not JSON"
        record = _at(payload, path) if path is not None else None
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            return body, "not performed: no record id known in this event's payload"
        prefix = record["id"].split("_", 1)[0] + "_" if "_" in record["id"] else ""
        suffix = "".join(plan.rng().choices("abcdefghijklmnopqrstuvwxyz0123456789", k=16))
        record["id"] = f"{prefix}missing{suffix}"
        return orjson.dumps(payload), None

    def _bad_signature(
        self, endpoint: Endpoint, message: Mapping[str, Any], body: bytes, mode: str
    ) -> tuple[bytes, dict[str, str]]:
        now = int(self.clock.now())
        if mode == "stale_timestamp":
            return body, self._headers(endpoint, message, body, timestamp=now - SIGNATURE_SKEW)
        if mode == "future_timestamp":
            return body, self._headers(endpoint, message, body, timestamp=now + SIGNATURE_SKEW)
        honest = self._headers(endpoint, message, body, timestamp=now)
        if mode == "tampered_body":
            return _tampered(body), honest
        wrong = [endpoint.signer().new_secret()]
        forged = self._headers(endpoint, message, body, timestamp=now, secrets=wrong)
        if mode == "wrong_secret":
            return body, forged
        # missing_header: whatever a different secret changes is a signature header, whatever
        # the scheme calls it; id and timestamp headers stay.
        return body, {name: value for name, value in honest.items() if forged[name] == value}

    async def _outcome(
        self, plan: FaultPlan | None, url: str, method: str, request: Request
    ) -> Outcome:
        if plan is not None and plan.kind == "fail":
            return _injected_failure(plan)
        outcome = await self._send(url, method, request.headers, request.body)
        if plan is not None and plan.kind == "lost_ack" and outcome.ok:
            error = f"the receiver answered {outcome.status} but the acknowledgement was lost"
            return Outcome(
                False,
                outcome.status,
                "lost_ack",
                f"{error} (fault {plan.rule_id})",
                outcome.response_body,
                outcome.response_truncated,
                outcome.duration_ms,
            )
        return outcome

    async def _copies(self, claimed: Item, plan: FaultPlan, outcome: Outcome) -> None:
        """The second sends of ``duplicate`` and (once delivered) ``replay``."""
        if plan.kind == "duplicate":
            spacing = float(plan.params.get("spacing_seconds") or 0)
            await self._enqueue_copy(claimed, plan, spacing)
        elif plan.kind == "replay" and outcome.ok:
            # A replay attack is one request; the receiver rejecting it is the expected outcome.
            age = float(plan.params["age_seconds"])
            await self._enqueue_copy(claimed, plan, 0.0, replay_age=age, max_attempts=1)

    async def _enqueue_copy(
        self, claimed: Item, plan: FaultPlan, delay: float, **extra: Any
    ) -> None:
        now = self.clock.now()
        data = claimed.data
        self.outbox.pending_added(claimed.key.conn)
        copy = {
            "id": new_id("dlv"),
            **{name: data.get(name) for name in ("message", "endpoint", "url", "method", "event")},
            "status": "pending",
            "attempts": 0,
            "cycle_start": 0,
            "next_attempt_at": now + delay,
            "created": now,
            "trigger": "fault",
            "copy_of": claimed.key.id,
            **_tag(plan),
            **extra,
        }
        key = Key(claimed.key.twin, claimed.key.conn, DELIVERY, copy["id"])
        await self.store.write([Put(key, copy, parent=data["message"], expect="absent", now=now)])
        self.notify()

    async def _send(self, url: str, method: str, headers: dict[str, str], body: bytes) -> Outcome:
        started = time.perf_counter()
        try:
            target = await self.allow.check(url)
            status, text, cut = await self._post(target, method, headers, body)
        except TargetRefused as exc:
            return Outcome(False, error_class=exc.error_class, error=exc.reason)
        except Exception as exc:
            elapsed = (time.perf_counter() - started) * 1000
            return Outcome(False, None, _classify(exc), _describe(exc), duration_ms=elapsed)
        elapsed = (time.perf_counter() - started) * 1000
        ok = 200 <= status < 300
        error = None if ok else _status_error(status)
        return Outcome(ok, status, None if ok else "status", error, text, cut, elapsed)

    async def _post(
        self, target: Target, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bool]:
        from yarl import URL

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.closed:
            client = self._clients[loop] = self._factory()
        sent = {**headers, "host": target.host_header}
        async with (
            asyncio.timeout(self.timeout),
            client.request(
                method.upper(),
                # Already percent-encoded by the allow-list's parser: sent as it is.
                URL(str(target.dial_url), encoded=True),
                data=body,
                headers=sent,
                skip_auto_headers=_NO_AUTO_HEADERS,
                allow_redirects=False,
                proxy=None,
                server_hostname=target.server_hostname,
                auto_decompress=False,
            ) as response,
        ):
            # One byte past the limit tells a cut body; an unread rest closes the connection.
            captured = bytearray()
            while len(captured) <= self.response_limit:
                chunk = await response.content.read(self.response_limit + 1 - len(captured))
                if not chunk:
                    break
                captured += chunk
            cut = len(captured) > self.response_limit
            text = bytes(captured[: self.response_limit]).decode("utf-8", "replace")
            return response.status, text, cut

    async def _finish(
        self,
        claimed: Item,
        url: str,
        request: Request,
        outcome: Outcome,
        extra: Mapping[str, Any],
    ) -> None:
        now = self.clock.now()
        data = claimed.data
        n = int(data["attempts"])
        attempt = self._log_entry(claimed, n, now, url, request, outcome)
        attempt_key = Key(claimed.key.twin, claimed.key.conn, ATTEMPT, f"{claimed.key.id}.{n}")
        put = Put(attempt_key, attempt, parent=claimed.key.id, now=now)
        in_cycle = n - int(data.get("cycle_start", 0))
        limit = int(data.get("max_attempts") or self.max_attempts)
        patch = {**self._next_state(claimed.key.id, n, in_cycle, outcome, limit), **extra}
        try:
            await self.store.write(
                [put, Merge(claimed.key, patch, expect=claimed.version, now=now)]
            )
        except StoreError as exc:
            if exc.reason == "missing":
                return  # the delivery went meanwhile (its connection reset or removed)
            # The lease expired and another worker took over: keep the log, not the state.
            await self.store.write([put])
        self.outbox.changes.publish(Change("delivery", claimed.key.conn, claimed.key.id))

    def _next_state(
        self, delivery_id: str, n: int, in_cycle: int, outcome: Outcome, limit: int
    ) -> dict[str, Any]:
        now = self.clock.now()
        last = {"last_status": outcome.status, "lease_until": None}
        if outcome.ok:
            done = {"status": "succeeded", "next_attempt_at": None, "delivered_at": now}
            return {**last, **done, "last_error": None}
        error = f"{outcome.error_class}: {outcome.error}"
        if in_cycle >= limit:
            return {**last, "status": "failed", "next_attempt_at": None, "last_error": error}
        delay = self._delay(delivery_id, n, in_cycle)
        return {**last, "status": "pending", "next_attempt_at": now + delay, "last_error": error}

    def _delay(self, delivery_id: str, n: int, in_cycle: int) -> float:
        base = self.schedule[min(in_cycle, len(self.schedule) - 1)]
        # Seeded per delivery and attempt, so a run is reproducible whatever the ordering.
        rng = random.Random(f"{self.seed}:{delivery_id}:{n}")
        return base * (1 + self.jitter * (2 * rng.random() - 1))

    def _log_entry(
        self,
        claimed: Item,
        n: int,
        now: float,
        url: str,
        request: Request,
        outcome: Outcome,
    ) -> dict[str, Any]:
        limit = self.log_body_limit
        headers, body = request.headers, request.body
        return {
            "id": f"{claimed.key.id}.{n}",
            "delivery": claimed.key.id,
            "message": claimed.data["message"],
            "endpoint": claimed.data.get("endpoint") or "",
            "n": n,
            "at": now,
            "trigger": claimed.data.get("trigger", "scheduled"),
            "url": url,
            "request_headers": mask_headers(headers),
            "request_body": body[:limit].decode("utf-8", "ignore"),
            "request_body_truncated": len(body) > limit,
            "request_body_size": len(body),
            "response_status": outcome.status,
            "response_body": outcome.response_body,
            "response_body_truncated": outcome.response_truncated,
            "duration_ms": round(outcome.duration_ms, 3),
            "error_class": outcome.error_class,
            "error": outcome.error,
            **request.tag,
        }

    async def _drop(
        self, claimed: Item, reason: str, fault: Mapping[str, Any] | None = None
    ) -> None:
        attempts = int(claimed.data["attempts"]) - 1  # the claim counted an attempt never made
        patch = {
            **({"last_fault": dict(fault)} if fault else {}),
            "status": "dropped",
            "last_error": reason,
            "attempts": attempts,
            "lease_until": None,
            "next_attempt_at": None,
        }
        op = Merge(claimed.key, patch, expect=claimed.version, now=self.clock.now())
        with contextlib.suppress(StoreError):
            await self.store.write([op])

    async def _health(self, conn: str, endpoint: Endpoint, ok: bool) -> None:
        updated = await self.outbox.record_outcome(
            conn,
            endpoint.id,
            ok,
            failing_after=self.failing_after,
            disable_after=self.disable_after,
        )
        if updated is not None and updated.status == "disabled" and endpoint.status != "disabled":
            await self.outbox.drop_pending(conn, endpoint.id, "endpoint disabled")


def mask_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers for the log: long opaque tokens in sensitive headers cut to ``abcd…yz``."""
    return {
        name: _OPAQUE.sub(_cut, value) if _sensitive(name) else value
        for name, value in headers.items()
    }


@functools.lru_cache(maxsize=512)
def _sensitive(name: str) -> bool:
    folded = name.lower()
    return any(s in folded for s in _SENSITIVE)


def _cut(match: re.Match[str]) -> str:
    token = match.group(0)
    return f"{token[:4]}…{token[-2:]}"


def _status_error(status: int) -> str:
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    return f"HTTP {status}"


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _classify(exc: BaseException) -> str:
    import aiohttp

    chain = _causes(exc)
    if any(isinstance(e, TimeoutError) for e in chain):  # aiohttp's timeouts are TimeoutErrors
        return "timeout"
    if any(isinstance(e, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)) for e in chain):
        return "invalid-url"
    if any(isinstance(e, (ssl.SSLError, aiohttp.ClientSSLError)) for e in chain):
        return "tls"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    if isinstance(exc, aiohttp.ClientConnectorError):  # no connection was made
        return "refused"
    return "reset"  # the connection was made, then lost: disconnected, reset, cut response


def _describe(exc: BaseException) -> str:
    import aiohttp

    if isinstance(exc, TimeoutError) and not str(exc):
        text = "no complete answer before the timeout"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        text = "the receiver closed the connection without answering"
    elif isinstance(exc, aiohttp.ClientResponseError):  # statuses are not raised: a bad answer
        text = "the answer is not valid HTTP: " + " ".join(exc.message.split())
    else:
        text = str(exc) or type(exc).__name__
    return text[:500]


# -- performing faults (pure helpers) ---------------------------------------------------------


def _tag(plan: FaultPlan, note: str | None = None) -> dict[str, Any]:
    """The attempt log's record of a fault; ``fault_note`` says why it was not performed."""
    tag: dict[str, Any] = {"fault": plan.rule_id, "fault_kind": plan.kind}
    tag["fault_injected"] = note is None
    if note is not None:
        tag["fault_note"] = note
    return tag


def _copy_tag(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "fault": data.get("fault"),
        "fault_kind": data.get("fault_kind"),
        "fault_injected": True,
        "copy_of": data.get("copy_of"),
    }


def _carry(plan: FaultPlan | None, outcome: Outcome) -> dict[str, Any]:
    """What the delivery keeps for its next attempt: the rest of a ``fail`` run, or a
    ``replay`` still waiting for a successful delivery."""
    if plan is None:
        return {}
    carried: dict[str, Any] | None = None
    if plan.kind == "fail" and int(plan.params.get("attempts") or 1) > 1:
        params = {**plan.params, "attempts": int(plan.params.get("attempts") or 1) - 1}
        carried = {"rule": plan.rule_id, "kind": plan.kind, "params": params}
    elif plan.kind == "replay" and not outcome.ok:
        carried = {"rule": plan.rule_id, "kind": plan.kind, "params": plan.params}
    return {"fault_carry": carried, "last_fault": _tag(plan)}


def _injected_failure(plan: FaultPlan) -> Outcome:
    # Nothing is sent: the receiver must not see a request the sender counts as failed.
    if plan.params.get("timeout"):
        return Outcome(False, None, "timeout", f"timeout injected by fault {plan.rule_id}")
    status = int(plan.params["status"])
    return Outcome(False, status, "status", f"HTTP {status} injected by fault {plan.rule_id}")


def _fresh_envelope(body: str, rng: random.Random) -> str:
    """The payload with a new event id: another event about the same record, not a copy."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if not isinstance(payload, dict):
        return body
    for name in _ENVELOPE_IDS:
        value = payload.get(name)
        if isinstance(value, str) and value.startswith("evt_"):
            payload[name] = new_event_id(rng)
    return orjson.dumps(payload).decode()


def _malformed(body: bytes) -> bytes:
    # Cut mid-document: every JSON parser rejects it, and it is still signed as sent.
    return body[: max(1, len(body) // 2)] + b"\x00"


def _tampered(body: bytes) -> bytes:
    """Still valid JSON, but not the bytes that were signed."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body + b" "
    if isinstance(value, dict):
        return orjson.dumps({**value, "x_apitwin_tampered": True})
    return body + b" "


def _at(value: Any, path: Sequence[str]) -> Any:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value
