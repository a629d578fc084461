"""Fault rules: what to break, for which calls, and when; planning decides per request or delivery.

A rule is a store item (kind ``fault``) under (twin, connection), so rules survive a restart and
replicas sharing a database see the same rules. Counting is shared too: every decision is written
back with ``Merge(expect=version)`` and retried on conflict, so ``next: 3`` fires exactly three
times however many replicas serve the connection.

Planning is pure apart from the store: it returns a :class:`FaultPlan` and leaves performing it to
the pipeline (status-like kinds, ``schema_break``, the races ``webhook_before_response`` and
``concurrent_update``), ``server.faulty`` (transport kinds) or the webhook dispatcher (outbound
kinds).

``reorder`` and ``parallel`` gather a batch: the delivery a rule fires on opens it (one use of the
rule), and later deliveries to the same endpoint (``parallel``: about the same record) join it
without using the rule again, until the batch is full. The open batch lives in the rule item, so
replicas sharing a store fill the same batch.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final, Literal

import jsonschema_rs
import orjson

from apitwin.clock import VirtualClock
from apitwin.schemanav import deref, standalone
from apitwin.state.store import Clear, Delete, Item, Merge, Put, Query, Scope, Store, StoreError

FAULT_KIND: Final = "fault"
MAX_RULES: Final = 100  # per connection, active or spent; default of server.limits.fault_rules
MAX_LATENCY_MS: Final = 30_000.0
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Writes to an existing record: where a change by someone else can land between read and write.
RECORD_WRITE_METHODS: Final = frozenset({"PUT", "PATCH", "DELETE"})
BREAK_MODES: Final = ("missing_required", "wrong_type", "unknown_enum", "extra_fields")
SIGNATURE_MODES: Final = (
    "wrong_secret",
    "stale_timestamp",
    "future_timestamp",
    "missing_header",
    "tampered_body",
)
# Kinds server.faulty performs on the wire; the other inbound kinds change the response itself.
TRANSPORT_KINDS: Final = frozenset(
    {
        "latency",
        "reset",
        "empty",
        "truncate",
        "malformed_json",
        "wrong_content_type",
        "chunk_garbage",
    }
)
# Inbound kinds that let the call succeed (its events and callbacks are still sent).
RACE_KINDS: Final = frozenset({"webhook_before_response", "concurrent_update"})
_CAS_RETRIES: Final = 8
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})

Direction = Literal["inbound", "outbound"]


class FaultError(ValueError):
    """A rule spec was refused; ``field`` names the offending part (``params.status``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class TooManyRulesError(FaultError):
    """The connection holds as many active rules as ``server.limits.fault_rules`` allows."""


# -- parameter schemas -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Param:
    type: Literal["int", "number", "str", "bool", "any", "header", "headers"]
    required: bool = False
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    default: Any = None


_MS = Param("number", low=0, high=MAX_LATENCY_MS)
_DAY = 86_400

INBOUND: Final[Mapping[str, Mapping[str, Param]]] = {
    "status": {
        "status": Param("int", True, low=200, high=599),
        "body": Param("any"),
        "headers": Param("headers"),
    },
    "rate_limit": {"retry_after": Param("int", low=0, high=_DAY, default=1)},
    "latency": {
        "ms": _MS,
        "distribution": Param("str", choices=("uniform", "normal")),
        "min_ms": _MS,
        "max_ms": _MS,
        "mean_ms": _MS,
        "stddev_ms": _MS,
    },
    "reset": {},
    "empty": {"status": Param("int", low=200, high=299)},
    "truncate": {
        "bytes": Param("int", low=0, high=2**31),
        "mode": Param("str", choices=("abort", "complete"), default="abort"),
    },
    "malformed_json": {},
    "wrong_content_type": {"content_type": Param("header", default="text/html; charset=utf-8")},
    "chunk_garbage": {},
    "schema_break": {"mode": Param("str", True, choices=BREAK_MODES)},
    "conflict": {"on_nth_write": Param("int", low=1, high=1_000_000, default=1)},
    "webhook_before_response": {},
    "concurrent_update": {"changes": Param("any")},
}

OUTBOUND: Final[Mapping[str, Mapping[str, Param]]] = {
    "fail": {
        "status": Param("int", low=300, high=599),
        "timeout": Param("bool"),
        "attempts": Param("int", low=1, high=100, default=1),
    },
    "delay": {"seconds": Param("number", True, low=0, high=_DAY)},
    "drop": {},
    "duplicate": {"spacing_seconds": Param("number", low=0, high=_DAY, default=0)},
    "reorder": {
        "batch": Param("int", low=2, high=1000, default=2),
        "order": Param("str", choices=("reversed", "shuffled"), default="reversed"),
        "max_wait_seconds": Param("number", low=0, high=_DAY, default=60),
    },
    "burst": {"count": Param("int", True, low=2, high=100)},
    "parallel": {
        "count": Param("int", low=2, high=100, default=2),
        "max_wait_seconds": Param("number", low=0, high=_DAY, default=60),
    },
    "lost_ack": {},
    "replay": {"age_seconds": Param("number", True, low=0, high=365 * _DAY)},
    "bad_signature": {"mode": Param("str", True, choices=SIGNATURE_MODES)},
    "malformed_payload": {},
    "schema_break": {"mode": Param("str", True, choices=BREAK_MODES)},
    "dangling_reference": {},
}

_TRIGGER_KEYS = ("next", "probability", "seed", "until", "for_seconds")
_SCOPE_KEYS = ("operation", "endpoint", "event_type")
_TOP_KEYS = ("id", "kind", "direction", "params", "trigger", *_SCOPE_KEYS, *_TRIGGER_KEYS)


# -- the model -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FaultRule:
    id: str
    twin: str
    connection: str
    direction: Direction
    kind: str
    params: dict[str, Any]
    operation: str | None = None  # operationId or "METHOD /template" (inbound)
    endpoint: str | None = None  # webhook endpoint id (outbound)
    event_type: str | None = None  # exact, or a prefix ending in "*" (outbound)
    next: int | None = None  # fire this many times, then the rule is spent
    probability: float | None = None
    seed: str = "0"
    until: float | None = None  # virtual-clock time after which the rule is inactive
    created_at: float = 0.0
    remaining: int | None = None
    matches: int = 0  # times the scope matched while active (k of the probability draw)
    hits: int = 0  # times it fired
    writes: int = 0  # matching writes seen (conflict)
    # Open batches (reorder, parallel) by batch key: {"group", "members", "draw", "opened"}.
    batches: dict[str, Any] = field(default_factory=dict)

    def active(self, now: float) -> bool:
        spent = self.remaining is not None and self.remaining <= 0
        return not spent and (self.until is None or now < self.until)

    def to_data(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        del data["twin"], data["connection"]
        return data

    @classmethod
    def from_item(cls, item: Item) -> FaultRule:
        return cls(twin=item.key.twin, connection=item.key.conn, **item.data)

    def as_dict(self, now: float) -> dict[str, Any]:
        """The public view (what list/add answer), with whether the rule can still fire."""
        return {**self.to_data(), "connection": self.connection, "active": self.active(now)}


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """One decided fault: perform ``kind`` with ``params``. ``draw`` is the rule's match number.

    For a batch (``reorder``, ``parallel``): ``group`` names it and ``members`` are the deliveries
    in it so far, in the order they joined; ``full`` says this member completed it.
    """

    rule_id: str
    kind: str
    params: dict[str, Any]
    draw: int = 0
    seed: str = "0"
    group: str = ""
    members: tuple[str, ...] = ()

    @property
    def full(self) -> bool:
        return bool(self.members) and len(self.members) >= batch_size(self.kind, self.params)

    def rng(self) -> random.Random:
        """Seeded randomness for performing the fault (latency draw, garbage bytes)."""
        return random.Random(f"{self.seed}:{self.rule_id}:{self.draw}:perform")


@dataclass(frozen=True, slots=True)
class StatusFault:
    """The response a status-like fault asks for; ``body`` None: render the spec's error shape."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    detail: str


# -- the service ---------------------------------------------------------------------------------


class Faults:
    def __init__(
        self,
        store: Store,
        twin: str,
        clock: VirtualClock,
        *,
        operations: Collection[str] | None = None,
        idle_ttl: float = 1.0,
    ) -> None:
        self.store = store
        self.twin = twin
        self.clock = clock
        # operationIds and "METHOD /template" keys, to refuse a scope that can never match.
        self.operations = frozenset(operations) if operations is not None else None
        # Planning is on every request and usually finds nothing: after a look that found no
        # active rule, skip the store for ``idle_ttl`` seconds. Adding here ends that at once; a
        # rule added through another replica takes effect within ``idle_ttl``. 0 disables this.
        self.idle_ttl = idle_ttl
        self._idle: dict[tuple[str, Direction], float] = {}
        self.max_rules = MAX_RULES  # server.limits.fault_rules

    def scope(self, conn: str) -> Scope:
        return Scope(self.twin, conn, FAULT_KIND)

    async def add(self, conn: str, spec: Mapping[str, Any]) -> FaultRule:
        now = self.clock.now()
        rule = parse_rule(spec, twin=self.twin, conn=conn, now=now, operations=self.operations)
        await self._make_room(conn, now)
        try:
            await self.store.write(
                [Put(self.scope(conn).key(rule.id), rule.to_data(), expect="absent", now=now)]
            )
        except StoreError as exc:
            raise FaultError("id", f"a rule {rule.id!r} already exists") from exc
        self._idle.pop((conn, rule.direction), None)
        return rule

    async def _make_room(self, conn: str, now: float) -> None:
        # Spent rules stay listed (an agent can see they fired) until room is needed.
        rules = await self.list(conn)
        if len(rules) < self.max_rules:
            return
        spent = [Delete(self.scope(conn).key(r.id), False) for r in rules if not r.active(now)]
        if len(rules) - len(spent) >= self.max_rules:
            raise TooManyRulesError(
                "rule", f"at most {self.max_rules} rules per connection; clear some first"
            )
        await self.store.write(spent)

    async def list(self, conn: str) -> list[FaultRule]:
        items = await self.store.query(Query(self.scope(conn), limit=self.max_rules * 2))
        return [FaultRule.from_item(item) for item in items]

    async def clear(self, conn: str, rule_id: str | None = None) -> int:
        """Remove one rule or all of a connection's rules; returns how many were removed."""
        if rule_id is not None:
            key = self.scope(conn).key(rule_id)
            found = await self.store.get(key)
            await self.store.write([Delete(key, must_exist=False)])
            return 1 if found else 0
        count = await self.store.count(Query(self.scope(conn)))
        await self.store.write([Clear(self.twin, conn, (FAULT_KIND,))])
        return count

    async def plan_inbound(
        self, conn: str, operation_id: str, method: str, template: str
    ) -> FaultPlan | None:
        """The first active inbound rule for this call that fires; consumes one use of it."""
        if self._quiet(conn, "inbound"):
            return None  # the usual case, checked before building anything
        method = method.upper()
        names = {operation_id, f"{method} {template}"}

        def applies(rule: FaultRule) -> bool:
            if rule.operation is not None and rule.operation not in names:
                return False
            if rule.kind == "concurrent_update":
                return method in RECORD_WRITE_METHODS
            return rule.kind not in _WRITE_ONLY or method in WRITE_METHODS

        return await self._plan(conn, "inbound", applies)

    async def plan_outbound(
        self,
        conn: str,
        endpoint_id: str,
        event_type: str,
        *,
        delivery_id: str | None = None,
        record_id: str | None = None,
    ) -> FaultPlan | None:
        """The fault for one delivery attempt. With ``delivery_id``, a delivery to an endpoint
        (``parallel``: about a record) with an open batch joins that batch first."""

        def applies(rule: FaultRule) -> bool:
            if rule.endpoint is not None and rule.endpoint != endpoint_id:
                return False
            return rule.event_type is None or _event_matches(rule.event_type, event_type)

        def batch_key(rule: FaultRule) -> str | None:
            if delivery_id is None:
                return None
            if rule.kind == "reorder":
                return endpoint_id
            if rule.kind == "parallel" and record_id is not None:
                return f"{endpoint_id}|{record_id}"
            return None

        joining = _Joining(batch_key, delivery_id or "")
        return await self._plan(conn, "outbound", applies, joining)

    async def close_batch(self, conn: str, rule_id: str, group: str) -> tuple[str, ...] | None:
        """Closes an open batch early (its wait is over); its members, or None if it was
        already closed (filled, closed by another worker, or the rule cleared)."""
        key = self.scope(conn).key(rule_id)
        for _ in range(_CAS_RETRIES):
            current = await self.store.get(key)
            if current is None:
                return None
            rule = FaultRule.from_item(current)
            found = [(k, b) for k, b in rule.batches.items() if b.get("group") == group]
            if not found:
                return None
            batch_key, batch = found[0]
            patch = {"batches": {batch_key: None}}
            try:
                await self.store.write([Merge(key, patch, current.version, self.clock.now())])
            except StoreError:
                continue
            return tuple(batch["members"])
        return None

    def _quiet(self, conn: str, direction: Direction) -> bool:
        """No rule of the connection in this direction was live a moment ago (see _idle)."""
        idle_since = self._idle.get((conn, direction))
        return idle_since is not None and time.monotonic() - idle_since < self.idle_ttl

    async def _plan(
        self,
        conn: str,
        direction: Direction,
        applies: Callable[[FaultRule], bool],
        joining: _Joining | None = None,
    ) -> FaultPlan | None:
        if self._quiet(conn, direction):
            return None
        query = Query(self.scope(conn), equals={"direction": direction}, limit=self.max_rules * 2)
        now = self.clock.now()
        items = await self.store.query(query)
        # A spent or expired rule never comes back (counters only fall, the clock only advances),
        # except to fill a batch it opened while it was active.
        rules = [(FaultRule.from_item(item), item) for item in items]
        live = [(r, item) for r, item in rules if r.active(now) or r.batches]
        if not live:
            self._idle[(conn, direction)] = time.monotonic()
        if joining is not None:
            for rule, item in live:
                key = joining.key(rule)
                if key is not None and key in rule.batches and applies(rule):
                    plan = await self._consume(item, now, joining)
                    if plan is not None:
                        return plan
        for rule, item in live:
            if rule.active(now) and applies(rule):
                plan = await self._consume(item, now, joining)
                if plan is not None:
                    return plan
        return None

    async def _consume(
        self, item: Item, now: float, joining: _Joining | None = None
    ) -> FaultPlan | None:
        """Record one match of the rule (compare-and-swap, retried) and say whether it fired."""
        current: Item | None = item
        for _ in range(_CAS_RETRIES):
            if current is None:
                return None
            rule = FaultRule.from_item(current)
            key = joining.key(rule) if joining is not None else None
            batch = rule.batches.get(key) if key is not None else None
            if batch is None and not rule.active(now):
                return None
            patch: dict[str, Any] = {}
            fires = True
            if batch is None:
                fires, patch = decide(rule)
            if fires and key is not None and joining is not None:
                batch = _joined(rule, batch, joining.member, patch.get("matches", 0), now)
                size = batch_size(rule.kind, rule.params)
                patch["batches"] = {key: None if len(batch["members"]) >= size else batch}
            try:
                await self.store.write([Merge(current.key, patch, current.version, now)])
            except StoreError as exc:
                if exc.reason != "conflict":
                    return None  # cleared meanwhile
                current = await self.store.get(current.key)
                continue
            if not fires:
                return None
            params = dict(rule.params)
            if batch is None:
                return FaultPlan(rule.id, rule.kind, params, patch["matches"], rule.seed)
            members = tuple(batch["members"])
            draw = int(batch["draw"])
            return FaultPlan(rule.id, rule.kind, params, draw, rule.seed, batch["group"], members)
        return None  # heavy contention: skip the fault rather than hold the request up


@dataclass(frozen=True, slots=True)
class _Joining:
    """How a delivery joins batches: the batch key a rule gives it (None: no batch)."""

    key: Callable[[FaultRule], str | None]
    member: str


_WRITE_ONLY: Final = frozenset({"conflict", "webhook_before_response"})


def batch_size(kind: str, params: Mapping[str, Any]) -> int:
    """How many deliveries a ``reorder`` or ``parallel`` batch gathers (0: not a batch kind)."""
    if kind == "reorder":
        return int(params.get("batch") or 2)
    if kind == "parallel":
        return int(params.get("count") or 2)
    return 0


def _joined(
    rule: FaultRule, batch: Mapping[str, Any] | None, member: str, draw: int, now: float
) -> dict[str, Any]:
    """The batch with ``member`` in it (a new one, numbered by the draw that opened it)."""
    if batch is None:
        group = f"{rule.id}.{draw}"
        return {"group": group, "members": [member], "draw": draw, "opened": now}
    members = list(batch["members"])
    if member not in members:
        members.append(member)
    return {**batch, "members": members}


def ordered(members: Sequence[str], order: str, rng: random.Random) -> list[str]:
    """The release order of a ``reorder`` batch: reversed, or shuffled by ``rng`` and never
    left as it was (a reorder that changes nothing would not be the fault asked for)."""
    if order == "reversed" or len(members) < 2:
        return list(reversed(members))
    shuffled = list(members)
    for _ in range(20):
        rng.shuffle(shuffled)
        if shuffled != list(members):
            return shuffled
    return [*members[1:], members[0]]  # only reached for tiny batches with an unlucky seed


def decide(rule: FaultRule) -> tuple[bool, dict[str, Any]]:
    """Whether this match fires, and the counters to write back. Pure and reproducible."""
    draw = rule.matches + 1
    patch: dict[str, Any] = {"matches": draw}
    fires = True
    if rule.kind == "conflict":
        patch["writes"] = rule.writes + 1
        fires = patch["writes"] % int(rule.params["on_nth_write"]) == 0
    if fires and rule.probability is not None:
        fires = random.Random(f"{rule.seed}:{rule.id}:{draw}").random() < rule.probability
    if fires:
        patch["hits"] = rule.hits + 1
        if rule.remaining is not None:
            patch["remaining"] = rule.remaining - 1
    return fires, patch


def _event_matches(pattern: str, event_type: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


# -- parsing and validation ----------------------------------------------------------------------


def parse_rule(
    spec: Mapping[str, Any],
    *,
    twin: str,
    conn: str,
    now: float,
    operations: Collection[str] | None = None,
) -> FaultRule:
    """Validate a rule spec (flat, or with the trigger keys under ``trigger``) into a rule."""
    spec = _flatten(spec)
    kind = spec.get("kind")
    if kind is None:
        raise FaultError("kind", "required; one of " + _names(INBOUND, OUTBOUND))
    direction = _direction(kind, spec)
    table = INBOUND if direction == "inbound" else OUTBOUND
    params = check_params(kind, spec.get("params"), table)
    scope = _scope(spec, direction, operations)
    next_count = _opt_int(spec, "next", 1, 1_000_000)
    probability = spec.get("probability")
    if probability is not None and (
        not _is_number(probability) or not 0 <= float(probability) <= 1
    ):
        raise FaultError("probability", f"must be a number from 0 to 1, not {probability!r}")
    seed = spec.get("seed", 0)
    if not isinstance(seed, (int, str)) or isinstance(seed, bool):
        raise FaultError("seed", f"must be an integer or a string, not {seed!r}")
    return FaultRule(
        id=_rule_id(spec.get("id")),
        twin=twin,
        connection=conn,
        direction=direction,
        kind=kind,
        params=params,
        operation=scope["operation"],
        endpoint=scope["endpoint"],
        event_type=scope["event_type"],
        next=next_count,
        probability=None if probability is None else float(probability),
        seed=str(seed),
        until=_until(spec, now),
        created_at=now,
        remaining=next_count,
    )


def _flatten(spec: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise FaultError("rule", "must be an object")
    flat = dict(spec)
    trigger = flat.pop("trigger", None) or {}
    if not isinstance(trigger, Mapping):
        raise FaultError("trigger", "must be an object with " + ", ".join(_TRIGGER_KEYS))
    for name, value in trigger.items():
        if name not in _TRIGGER_KEYS:
            raise FaultError(f"trigger.{name}", "unknown; allowed: " + ", ".join(_TRIGGER_KEYS))
        if name in flat:
            raise FaultError(name, "given both at the top level and under trigger")
        flat[name] = value
    for name in flat:
        if name not in _TOP_KEYS:
            raise FaultError(name, "unknown rule field; allowed: " + ", ".join(_TOP_KEYS))
    return flat


def _names(*tables: Mapping[str, Any]) -> str:
    return ", ".join(dict.fromkeys(name for table in tables for name in table))


def _direction(kind: Any, spec: Mapping[str, Any]) -> Direction:
    direction = spec.get("direction")
    if direction not in (None, "inbound", "outbound"):
        raise FaultError("direction", f"must be 'inbound' or 'outbound', not {direction!r}")
    if not isinstance(kind, str) or (kind not in INBOUND and kind not in OUTBOUND):
        raise FaultError("kind", f"{kind!r} is not one of: " + _names(INBOUND, OUTBOUND))
    if direction is None:
        # Only schema_break exists both ways; an endpoint or event type says it is a webhook.
        outbound = kind not in INBOUND or (
            kind in OUTBOUND and (spec.get("endpoint") or spec.get("event_type"))
        )
        return "outbound" if outbound else "inbound"
    table = INBOUND if direction == "inbound" else OUTBOUND
    if kind not in table:
        raise FaultError("kind", f"{kind!r} is not an {direction} kind; one of: {_names(table)}")
    return "inbound" if direction == "inbound" else "outbound"


def _scope(
    spec: Mapping[str, Any], direction: Direction, operations: Collection[str] | None
) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in _SCOPE_KEYS:
        value = spec.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise FaultError(name, f"must be a non-empty string, not {value!r}")
        found[name] = value.strip() if isinstance(value, str) else None
    wrong = ("endpoint", "event_type") if direction == "inbound" else ("operation",)
    for name in wrong:
        if found[name] is not None:
            raise FaultError(name, f"does not apply to {direction} rules")
    operation = found["operation"]
    if operation is not None and " " in operation:
        method, _, template = operation.partition(" ")
        operation = found["operation"] = f"{method.upper()} {template.strip()}"
    if operation is not None and operations is not None and operation not in operations:
        raise FaultError("operation", f"{operation!r} is not an operationId or 'METHOD /path'")
    return found


def _rule_id(given: Any) -> str:
    if given is None:
        return "flt_" + secrets.token_hex(8)
    if not isinstance(given, str) or not _RULE_ID.match(given.removeprefix("flt_")):
        raise FaultError("id", "must be 1-64 letters, digits, '.', '_' or '-'")
    return given if given.startswith("flt_") else "flt_" + given


def _until(spec: Mapping[str, Any], now: float) -> float | None:
    until, relative = spec.get("until"), spec.get("for_seconds")
    if until is not None and relative is not None:
        raise FaultError("until", "give either until or for_seconds, not both")
    if relative is not None:
        if not _is_number(relative) or relative <= 0:
            raise FaultError("for_seconds", f"must be a positive number, not {relative!r}")
        return now + float(relative)
    if until is None:
        return None
    if isinstance(until, str):
        try:
            until = datetime.fromisoformat(until.replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise FaultError("until", f"not an ISO 8601 time: {until!r}") from exc
    if not _is_number(until):
        raise FaultError("until", f"must be a unix time or ISO 8601 string, not {until!r}")
    if until <= now:
        raise FaultError("until", "is already past on the twin's clock")
    return float(until)


def _opt_int(spec: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise FaultError(name, f"must be an integer from {low} to {high}, not {value!r}")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_params(kind: str, given: Any, table: Mapping[str, Mapping[str, Param]]) -> dict[str, Any]:
    """Validated params with defaults filled in; errors name ``params.<field>``."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise FaultError("params", "must be an object")
    schema = table[kind]
    params: dict[str, Any] = {}
    for name, value in given.items():
        if name not in schema:
            allowed = ", ".join(schema) or "none"
            raise FaultError(f"params.{name}", f"unknown for kind {kind!r}; allowed: {allowed}")
        params[name] = _check_value(f"params.{name}", value, schema[name])
    for name, param in schema.items():
        if name not in params and param.required:
            raise FaultError(f"params.{name}", f"required for kind {kind!r}")
        if name not in params and param.default is not None:
            params[name] = param.default
    _check_combination(kind, params)
    return params


def _check_value(field: str, value: Any, param: Param) -> Any:
    if param.type in ("int", "number"):
        ok = _is_number(value) and (param.type == "number" or isinstance(value, int))
        low, high = param.low, param.high
        if not ok or (low is not None and value < low) or (high is not None and value > high):
            what = "an integer" if param.type == "int" else "a number"
            raise FaultError(field, f"must be {what} from {low} to {high}, not {value!r}")
    elif param.type == "str" and not isinstance(value, str):
        raise FaultError(field, f"must be a string, not {value!r}")
    elif param.type == "bool" and not isinstance(value, bool):
        raise FaultError(field, f"must be true or false, not {value!r}")
    elif param.type == "header" and (
        not isinstance(value, str) or not value.strip() or _HEADER_VALUE_BAD.search(value)
    ):
        raise FaultError(field, f"must be a header value without control characters: {value!r}")
    elif param.type == "headers":
        _check_headers(field, value)
    if param.choices and value not in param.choices:
        raise FaultError(field, f"{value!r} is not one of: " + ", ".join(param.choices))
    return value


def _check_headers(field: str, value: Any) -> None:
    if not isinstance(value, Mapping):
        raise FaultError(field, 'must be an object of header names to values: {"x-a": "1"}')
    for name, text in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise FaultError(field, f"{name!r} is not a valid header name")
        if name.lower() in _FRAMING_HEADERS:
            raise FaultError(field, f"{name} is set by the server, not by a fault")
        if not isinstance(text, str) or _HEADER_VALUE_BAD.search(text):
            raise FaultError(f"{field}.{name}", "must be a string without control characters")


def _check_combination(kind: str, params: Mapping[str, Any]) -> None:
    if kind == "latency":
        _check_latency(params)
    elif kind == "concurrent_update" and not isinstance(params.get("changes", {}), Mapping):
        raise FaultError("params.changes", 'must be an object of fields to set: {"status": "x"}')
    elif kind == "fail" and ("status" in params) == bool(params.get("timeout")):
        raise FaultError("params.status", "give either status or timeout: true")


def _check_latency(params: Mapping[str, Any]) -> None:
    distribution = params.get("distribution")
    if ("ms" in params) == (distribution is not None):
        raise FaultError("params.ms", "give either ms, or distribution with its bounds")
    needed = {"uniform": ("min_ms", "max_ms"), "normal": ("mean_ms", "stddev_ms")}
    for name in needed.get(distribution or "", ()):
        if name not in params:
            raise FaultError(f"params.{name}", f"required for distribution {distribution!r}")
    if params.get("min_ms", 0) > params.get("max_ms", MAX_LATENCY_MS):
        raise FaultError("params.min_ms", "must not exceed max_ms")


# -- helpers for whoever performs a plan ---------------------------------------------------------


def latency_ms(params: Mapping[str, Any], rng: random.Random) -> float:
    """The delay to inject, drawn from ``rng`` and clamped to [min_ms, max_ms] ∩ [0, 30 s]."""
    if "ms" in params:
        value = float(params["ms"])
    elif params["distribution"] == "uniform":
        value = rng.uniform(params["min_ms"], params["max_ms"])
    else:
        value = rng.gauss(params["mean_ms"], params["stddev_ms"])
    low, high = params.get("min_ms", 0.0), params.get("max_ms", MAX_LATENCY_MS)
    return float(min(max(value, low, 0.0), high, MAX_LATENCY_MS))


def status_fault(plan: FaultPlan) -> StatusFault | None:
    """For ``status``, ``rate_limit`` and ``conflict``: the response to send instead."""
    params = plan.params
    if plan.kind == "rate_limit":
        after = int(params["retry_after"])
        detail = f"rate limited (fault {plan.rule_id}); retry after {after} s"
        return StatusFault(429, (("retry-after", str(after)),), None, detail)
    if plan.kind == "conflict":
        detail = f"conflicting concurrent write (fault {plan.rule_id})"
        return StatusFault(409, (), None, detail)
    if plan.kind != "status":
        return None
    headers = tuple((k.lower(), v) for k, v in (params.get("headers") or {}).items())
    detail = f"status {params['status']} injected by fault {plan.rule_id}"
    if "body" not in params:
        return StatusFault(int(params["status"]), headers, None, detail)
    body, content_type = _encode_body(params["body"])
    if not any(name == "content-type" for name, _ in headers):
        headers = (("content-type", content_type), *headers)
    return StatusFault(int(params["status"]), headers, body, detail)


def _encode_body(value: Any) -> tuple[bytes, str]:
    # A string holding a JSON object or array is raw JSON; any other string is plain text.
    if isinstance(value, str):
        try:
            parsed = orjson.loads(value)
        except orjson.JSONDecodeError:
            parsed = None
        kind = "application/json" if isinstance(parsed, (dict, list)) else "text/plain"
        return value.encode(), f"{kind}; charset=utf-8" if kind == "text/plain" else kind
    return orjson.dumps(value), "application/json"


# -- schema_break ---------------------------------------------------------------------------------


class BreakError(ValueError):
    """The body cannot be broken that way (e.g. ``missing_required`` where nothing is required)."""


_UNKNOWN_FIELD: Final = "x_apitwin_unexpected"
_KEYWORDS: Final = {
    "missing_required": frozenset({"required"}),
    "wrong_type": frozenset({"type"}),
    "unknown_enum": frozenset({"enum", "const"}),
    "extra_fields": frozenset({"additionalProperties", "unevaluatedProperties", "false"}),
}
_SAMPLES: Final[Mapping[str, Any]] = {
    "integer": 12345,
    "string": "wrong-type",
    "boolean": True,
    "array": [],
    "object": {},
    "null": None,
}
_MAX_SITES: Final = 64

Path = tuple[str | int, ...]
Candidate = tuple[int, Path, Any]  # (preference, where, replacement value there)


def break_body(value: Any, schema: Mapping[str, Any], mode: str) -> Any:
    """``value`` changed so it fails ``schema`` (bundled 2020-12) in the way ``mode`` names.

    Tries candidate edits in order of preference (a top-level field before a nested one) and keeps
    the first the schema rejects with the named keyword. ``extra_fields`` can only fail where the
    schema closes the object (``additionalProperties: false``); on an open schema it returns the
    value with an unknown field added, which a tolerant reader must accept.
    """
    if mode not in _KEYWORDS:
        raise BreakError(f"mode {mode!r} is not one of: " + ", ".join(BREAK_MODES))
    root = dict(schema)
    check = jsonschema_rs.Draft202012Validator(root)
    baseline = sum(1 for _ in check.iter_errors(value))
    candidates = sorted(_candidates(root, value, mode), key=lambda c: c[0])
    fallback: Any = _NOTHING
    for _, path, replacement in candidates:
        broken = _replace(value, path, replacement)
        errors = list(check.iter_errors(broken))
        if any(_named(error, path, mode) for error in errors):
            return broken
        if fallback is _NOTHING and len(errors) > baseline:
            fallback = broken  # fails, but through oneOf/anyOf rather than the named keyword
    if fallback is not _NOTHING:
        return fallback
    if mode == "extra_fields" and candidates:
        _, path, replacement = candidates[0]
        return _replace(value, path, replacement)
    raise BreakError(f"no way to make this body fail with {mode}")


_NOTHING: Final = object()


def _named(error: Any, path: Path, mode: str) -> bool:
    where = tuple(error.instance_path)
    keyword = str(error.schema_path[-1]) if error.schema_path else ""
    return where[: len(path)] == path and keyword in _KEYWORDS[mode]


def _candidates(root: dict[str, Any], value: Any, mode: str) -> list[Candidate]:
    found: list[Candidate] = []
    for path, sub, parts in _sites(root, value):
        found.extend(_MUTATIONS[mode](root, path, sub, parts))
    return found


def _sites(root: dict[str, Any], value: Any) -> list[tuple[Path, Any, list[dict[str, Any]]]]:
    """Breadth-first (path, value, flattened schema parts) for the value and what it contains."""
    queue: list[tuple[Path, Any, Any]] = [((), value, root)]
    sites: list[tuple[Path, Any, list[dict[str, Any]]]] = []
    while queue and len(sites) < _MAX_SITES:
        path, sub, node = queue.pop(0)
        parts = _flatten_schema(root, node, sub, 0)
        sites.append((path, sub, parts))
        if isinstance(sub, dict):
            queue.extend(((*path, k), v, _child(parts, k)) for k, v in sub.items())
        elif isinstance(sub, list):
            queue.extend(((*path, i), v, _child(parts, i)) for i, v in enumerate(sub))
    return sites


def _flatten_schema(
    root: dict[str, Any], node: Any, value: Any, depth: int
) -> list[dict[str, Any]]:
    """The schema objects that all apply to ``value``: itself, allOf parts, the matching branch."""
    node = deref(root, node)
    if not isinstance(node, dict) or depth > 8:
        return []
    parts = [node]
    for sub in node.get("allOf") or ():
        parts.extend(_flatten_schema(root, sub, value, depth + 1))
    for keyword in ("oneOf", "anyOf"):
        branch = _branch(root, node.get(keyword) or (), value)
        if branch is not None:
            parts.extend(_flatten_schema(root, branch, value, depth + 1))
    return parts


def _branch(root: dict[str, Any], branches: Any, value: Any) -> Any:
    for branch in branches:
        if jsonschema_rs.Draft202012Validator(standalone(root, deref(root, branch))).is_valid(
            value
        ):
            return branch
    return next(iter(branches), None)


def _child(parts: list[dict[str, Any]], key: str | int) -> Any:
    for part in parts:
        if isinstance(key, str):
            found = (part.get("properties") or {}).get(key)
            extra = part.get("additionalProperties")
            found = found if found is not None else (extra if isinstance(extra, dict) else None)
        else:
            prefix = part.get("prefixItems") or []
            found = prefix[key] if key < len(prefix) else part.get("items")
        if found is not None:
            return found
    return None


def _types(parts: list[dict[str, Any]]) -> set[str] | None:
    allowed: set[str] | None = None
    for part in parts:
        declared = part.get("type")
        if declared is not None:
            names = {declared} if isinstance(declared, str) else set(declared)
            allowed = names if allowed is None else allowed & names
    return allowed


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    names = {int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "object")


def _missing_required(
    root: dict[str, Any], path: Path, sub: Any, parts: list[dict[str, Any]]
) -> list[Candidate]:
    if not isinstance(sub, dict):
        return []
    required = dict.fromkeys(name for part in parts for name in part.get("required") or ())
    return [
        (len(path), path, {k: v for k, v in sub.items() if k != name})
        for name in required
        if name in sub
    ]


def _wrong_type(
    root: dict[str, Any], path: Path, sub: Any, parts: list[dict[str, Any]]
) -> list[Candidate]:
    allowed = _types(parts)
    if allowed is None:
        allowed = {_json_type(sub)} | ({"number"} if isinstance(sub, int) else set())
    if "number" in allowed:
        allowed.add("integer")
    # A field of the top-level object first: "the field has the wrong type" is the usual case.
    rank = len(path) if path else 99
    return [(rank, path, sample) for name, sample in _SAMPLES.items() if name not in allowed]


def _unknown_enum(
    root: dict[str, Any], path: Path, sub: Any, parts: list[dict[str, Any]]
) -> list[Candidate]:
    found: list[Candidate] = []
    allowed = _enum(parts)
    if allowed is not None:
        found.append((len(path), path, _outside(allowed)))
    if isinstance(sub, dict):
        # An optional enum field that is absent: adding it with an unknown value breaks it too.
        for part in parts:
            for name, prop in (part.get("properties") or {}).items():
                values = _enum(_flatten_schema(root, prop, None, 0))
                if name not in sub and values is not None:
                    found.append((100 + len(path), path, {**sub, name: _outside(values)}))
    return found


def _enum(parts: list[dict[str, Any]]) -> list[Any] | None:
    for part in parts:
        if isinstance(part.get("enum"), list):
            return list(part["enum"])
        if "const" in part:
            return [part["const"]]
    return None


def _outside(allowed: list[Any]) -> Any:
    numbers = [v for v in allowed if _is_number(v)]
    if numbers and len(numbers) == len(allowed):
        return int(max(numbers)) + 1
    text = "unknown_enum_value"
    while text in allowed:
        text += "_"
    return text


def _extra_fields(
    root: dict[str, Any], path: Path, sub: Any, parts: list[dict[str, Any]]
) -> list[Candidate]:
    if not isinstance(sub, dict) or _UNKNOWN_FIELD in sub:
        return []
    closed = any(
        p.get("additionalProperties") is False or p.get("unevaluatedProperties") is False
        for p in parts
    )
    return [(len(path) + (0 if closed else 100), path, {**sub, _UNKNOWN_FIELD: "surprise"})]


_MUTATIONS: Final = {
    "missing_required": _missing_required,
    "wrong_type": _wrong_type,
    "unknown_enum": _unknown_enum,
    "extra_fields": _extra_fields,
}


def _replace(value: Any, path: Path, replacement: Any) -> Any:
    """A copy of ``value`` with ``replacement`` at ``path`` (copying only what is on the path)."""
    if not path:
        return replacement
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, replacement)}
    copied = list(value)
    copied[int(head)] = _replace(copied[int(head)], rest, replacement)
    return copied
