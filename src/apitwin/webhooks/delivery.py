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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import httpx2

from apitwin.clock import VirtualClock
from apitwin.state.store import Item, Key, Merge, Put, Query, Store, StoreError
from apitwin.webhooks.outbox import (
    ATTEMPT,
    DELIVERY,
    MESSAGE,
    Endpoint,
    Outbox,
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
from apitwin.webhooks.signing import SigningInput

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

ClientFactory = Callable[[], httpx2.AsyncClient]


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


def default_client(timeout: float = DEFAULT_TIMEOUT) -> httpx2.AsyncClient:
    # No proxies from the environment: a proxy would dial an address the allow-list never saw.
    return httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout)


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
        self._factory = http_client_factory or (lambda: default_client(timeout))
        self._client: httpx2.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        # Due deliveries from the last scan: draining a backlog does not rescan per attempt.
        self._queue: deque[Item] = deque()
        self._next_due: float | None = None
        self._stale = True
        outbox.subscribe(self.notify)

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
        if self._client is not None:
            await self._client.aclose()
            self._client = None

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
            if not self._inflight:
                return count
            await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            next_due: float | None = None
            room = self.concurrency - len(self._inflight)
            try:
                if room > 0:
                    _, next_due = await self._dispatch(room)
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
            if item.key.id in self._inflight:
                continue
            task = asyncio.create_task(self._deliver(item))
            self._inflight[item.key.id] = task
            task.add_done_callback(functools.partial(self._done, item.key.id))
            started += 1
        return started, self.clock.now() if self._queue else self._next_due

    def _done(self, delivery_id: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(delivery_id, None)
        self._wake.set()  # a slot is free

    async def _scan(self) -> tuple[list[Item], float | None]:
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
        try:
            [claimed] = await self.store.write(
                [Merge(item.key, patch, expect=item.version, now=now)]
            )
        except StoreError:
            return None  # another worker claimed it, or it is gone
        return claimed

    # -- one attempt -----------------------------------------------------------------------

    async def _deliver(self, item: Item) -> None:
        claimed = await self._claim(item)
        if claimed is None:
            return
        try:
            await self._attempt(claimed)
        except Exception:
            # The lease stays; the delivery is retried once it expires.
            log.exception("webhook delivery %s failed unexpectedly", claimed.key.id)

    async def _attempt(self, claimed: Item) -> None:
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
        body = str(message.data["body"]).encode()
        headers = self._headers(endpoint, message.data, body)
        outcome = await self._send(url, str(data.get("method") or "post"), headers, body)
        await self._finish(claimed, url, headers, body, outcome)
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
        self, endpoint: Endpoint | None, message: Mapping[str, Any], body: bytes
    ) -> dict[str, str]:
        headers = {"content-type": "application/json", "user-agent": USER_AGENT}
        if endpoint is not None:
            # A fresh timestamp, hence a fresh signature, on every attempt.
            signing = SigningInput(message["id"], int(self.clock.now()), body, message["event"])
            secrets = endpoint.signing_secrets(self.clock.now())
            headers.update(endpoint.signer().headers(signing, secrets))
        return headers

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
        client = self._client = self._client or self._factory()
        sent = {**headers, "host": target.host_header}
        async with (
            asyncio.timeout(self.timeout),
            client.stream(
                method.upper(),
                target.dial_url,
                content=body,
                headers=sent,
                follow_redirects=False,
                extensions=target.extensions,
            ) as response,
        ):
            captured = bytearray()
            async for chunk in response.aiter_raw():
                captured += chunk[: self.response_limit + 1 - len(captured)]
                if len(captured) > self.response_limit:
                    break
            cut = len(captured) > self.response_limit
            text = bytes(captured[: self.response_limit]).decode("utf-8", "replace")
            return response.status_code, text, cut

    async def _finish(
        self, claimed: Item, url: str, headers: dict[str, str], body: bytes, outcome: Outcome
    ) -> None:
        now = self.clock.now()
        data = claimed.data
        n = int(data["attempts"])
        attempt = self._log_entry(claimed, n, now, url, headers, body, outcome)
        attempt_key = Key(claimed.key.twin, claimed.key.conn, ATTEMPT, f"{claimed.key.id}.{n}")
        put = Put(attempt_key, attempt, parent=claimed.key.id, now=now)
        patch = self._next_state(claimed.key.id, n, n - int(data.get("cycle_start", 0)), outcome)
        try:
            await self.store.write(
                [put, Merge(claimed.key, patch, expect=claimed.version, now=now)]
            )
        except StoreError:
            # The lease expired and another worker took over: keep the log, not the state.
            await self.store.write([put])

    def _next_state(
        self, delivery_id: str, n: int, in_cycle: int, outcome: Outcome
    ) -> dict[str, Any]:
        now = self.clock.now()
        last = {"last_status": outcome.status, "lease_until": None}
        if outcome.ok:
            done = {"status": "succeeded", "next_attempt_at": None, "delivered_at": now}
            return {**last, **done, "last_error": None}
        error = f"{outcome.error_class}: {outcome.error}"
        if in_cycle >= self.max_attempts:
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
        headers: dict[str, str],
        body: bytes,
        outcome: Outcome,
    ) -> dict[str, Any]:
        limit = self.log_body_limit
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
        }

    async def _drop(self, claimed: Item, reason: str) -> None:
        attempts = int(claimed.data["attempts"]) - 1  # the claim counted an attempt never made
        patch = {
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
        name: _OPAQUE.sub(_cut, value) if any(s in name.lower() for s in _SENSITIVE) else value
        for name, value in headers.items()
    }


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
    chain = _causes(exc)
    if any(isinstance(e, (TimeoutError, httpx2.TimeoutException)) for e in chain):
        return "timeout"
    if any(isinstance(e, (httpx2.InvalidURL, httpx2.UnsupportedProtocol)) for e in chain):
        return "invalid-url"
    if any(isinstance(e, ssl.SSLError) for e in chain) or "ssl" in str(exc).lower():
        return "tls"
    if any(isinstance(e, socket.gaierror) for e in chain):
        return "dns"
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused"
    if isinstance(exc, httpx2.ConnectError):
        return "refused"
    return "reset"


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]
