"""Fault rules: validation, triggers, scopes, and bodies broken in a named way."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import jsonschema
import pytest

from apitwin.clock import VirtualClock
from apitwin.faults import (
    MAX_RULES,
    BreakError,
    FaultError,
    FaultPlan,
    Faults,
    break_body,
    latency_ms,
    ordered,
    status_fault,
)
from apitwin.state.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

OPERATIONS = {"submitExpert", "listExperts", "POST /experts", "GET /experts"}


@pytest.fixture
def faults(store: SQLiteStore, clock: VirtualClock) -> Faults:
    return Faults(store, "experts", clock, operations=OPERATIONS)


async def fired(faults: Faults, times: int, conn: str = "acme", op: str = "submitExpert") -> int:
    plans = [await faults.plan_inbound(conn, op, "POST", "/experts") for _ in range(times)]
    return sum(plan is not None for plan in plans)


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "mentions"),
    [
        ({}, "kind", "rate_limit"),
        ({"kind": "explode"}, "kind", "schema_break"),
        ({"kind": ["reset"]}, "kind", "reset"),
        ({"kind": "status"}, "params.status", "required"),
        ({"kind": "status", "params": {"status": "500"}}, "params.status", "integer"),
        ({"kind": "status", "params": {"status": 700}}, "params.status", "599"),
        ({"kind": "latency"}, "params.ms", "distribution"),
        ({"kind": "latency", "params": {"ms": 45_000}}, "params.ms", "30000"),
        (
            {"kind": "latency", "params": {"distribution": "uniform", "min_ms": 5}},
            "params.max_ms",
            "uniform",
        ),
        (
            {"kind": "latency", "params": {"distribution": "pareto"}},
            "params.distribution",
            "normal",
        ),
        ({"kind": "schema_break", "params": {"mode": "chaos"}}, "params.mode", "missing_required"),
        ({"kind": "reset", "params": {"hard": True}}, "params.hard", "none"),
        ({"kind": "truncate", "params": {"bytes": -1}}, "params.bytes", "integer"),
        ({"kind": "reset", "probability": 1.5}, "probability", "0 to 1"),
        ({"kind": "reset", "next": 0}, "next", "integer"),
        ({"kind": "reset", "until": "2001-01-01T00:00:00Z"}, "until", "past"),
        ({"kind": "reset", "until": "next tuesday"}, "until", "ISO 8601"),
        ({"kind": "reset", "blast_radius": 3}, "blast_radius", "allowed"),
        ({"kind": "reset", "next": 1, "trigger": {"next": 2}}, "next", "both"),
        ({"kind": "reset", "operation": "deleteEverything"}, "operation", "operationId"),
        ({"kind": "reset", "direction": "outbound"}, "kind", "outbound"),
        ({"kind": "drop", "operation": "submitExpert"}, "operation", "outbound"),
        ({"kind": "fail"}, "params.status", "timeout"),
        ({"kind": "fail", "params": {"status": 500, "timeout": True}}, "params.status", "either"),
        ({"kind": "bad_signature", "params": {"mode": "nope"}}, "params.mode", "stale_timestamp"),
        ({"kind": "reorder", "params": {"order": "random"}}, "params.order", "shuffled"),
        ({"kind": "reorder", "params": {"batch": 1}}, "params.batch", "integer from 2"),
        ({"kind": "burst"}, "params.count", "required"),
        ({"kind": "parallel", "params": {"count": 500}}, "params.count", "100"),
        (
            {"kind": "concurrent_update", "params": {"changes": ["title"]}},
            "params.changes",
            "object",
        ),
        ({"kind": "webhook_before_response", "event_type": "x"}, "event_type", "inbound"),
        (
            {"kind": "status", "params": {"status": 503, "headers": {"Content-Length": "9"}}},
            "params.headers",
            "server",
        ),
        (
            {"kind": "status", "params": {"status": 503, "headers": {"x-a": "1\r\nx-b: 2"}}},
            "params.headers.x-a",
            "control",
        ),
        ({"kind": "reset", "id": "has spaces"}, "id", "letters"),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_field(
    faults: Faults, spec: dict[str, Any], field: str, mentions: str
) -> None:
    with pytest.raises(FaultError) as caught:
        await faults.add("acme", spec)
    assert caught.value.field == field
    assert mentions in str(caught.value)
    assert await faults.list("acme") == []


async def test_defaults_are_filled_in_and_direction_is_inferred(faults: Faults) -> None:
    limited = await faults.add("acme", {"kind": "rate_limit"})
    assert limited.params == {"retry_after": 1} and limited.direction == "inbound"
    assert limited.id.startswith("flt_")
    failing = await faults.add("acme", {"kind": "fail", "params": {"timeout": True}})
    assert failing.direction == "outbound" and failing.params["attempts"] == 1
    webhook_break = await faults.add(
        "acme", {"kind": "schema_break", "event_type": "expert.*", "params": {"mode": "wrong_type"}}
    )
    assert webhook_break.direction == "outbound"
    named = await faults.add("acme", {"kind": "reset", "id": "slow-one"})
    assert named.id == "flt_slow-one"
    with pytest.raises(FaultError, match="already exists"):
        await faults.add("acme", {"kind": "reset", "id": "flt_slow-one"})


async def test_a_connection_holds_at_most_a_hundred_rules_but_spent_ones_make_room(
    faults: Faults,
) -> None:
    await faults.add("acme", {"kind": "reset", "next": 1, "operation": "listExperts"})
    for _ in range(MAX_RULES - 1):
        await faults.add("acme", {"kind": "empty", "operation": "listExperts"})
    with pytest.raises(FaultError, match="at most 100"):
        await faults.add("acme", {"kind": "empty"})
    assert await faults.plan_inbound("acme", "listExperts", "GET", "/experts") is not None
    await faults.add("acme", {"kind": "empty"})  # the spent reset rule was pruned for it
    assert len(await faults.list("acme")) == MAX_RULES


# -- triggers ----------------------------------------------------------------------------------


async def test_next_n_fires_exactly_n_times_then_the_rule_is_spent(
    faults: Faults, clock: VirtualClock
) -> None:
    rule = await faults.add("acme", {"kind": "status", "params": {"status": 503}, "next": 3})
    assert await fired(faults, 5) == 3
    [stored] = await faults.list("acme")
    view = stored.as_dict(clock.now())
    assert (view["hits"], view["remaining"], view["active"]) == (3, 0, False)
    assert view["id"] == rule.id


async def test_two_replicas_sharing_a_store_count_each_use_once(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    first, second = Faults(store, "experts", clock), Faults(store, "experts", clock)
    await first.add("acme", {"kind": "reset", "next": 5})
    calls = [
        replica.plan_inbound("acme", "submitExpert", "POST", "/experts")
        for replica in (first, second)
        for _ in range(10)
    ]
    plans = await asyncio.gather(*calls)
    assert sum(plan is not None for plan in plans) == 5
    assert sorted(plan.draw for plan in plans if plan is not None) == [1, 2, 3, 4, 5]


async def test_a_replica_that_found_no_rules_looks_again_after_the_idle_ttl(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    cached, eager = Faults(store, "experts", clock, idle_ttl=60), Faults(store, "experts", clock)
    eager.idle_ttl = 0
    assert await fired(cached, 1) == 0 and await fired(eager, 1) == 0
    await Faults(store, "experts", clock).add("acme", {"kind": "reset"})
    assert await fired(eager, 1) == 1
    assert await fired(cached, 1) == 0  # still trusting its recent look
    await cached.add("acme", {"kind": "empty"})  # a local change ends the idle period
    assert await fired(cached, 1) == 1


async def decisions(faults: Faults, seed: int, rule_id: str = "coin") -> list[bool]:
    await faults.clear("acme")
    await faults.add("acme", {"kind": "reset", "id": rule_id, "probability": 0.5, "seed": seed})
    return [await fired(faults, 1) == 1 for _ in range(40)]


async def test_probability_is_reproducible_for_a_seed_and_differs_between_seeds(
    faults: Faults,
) -> None:
    first = await decisions(faults, seed=7)
    assert await decisions(faults, seed=7) == first
    assert await decisions(faults, seed=8) != first
    assert 8 <= sum(first) <= 32
    # The k-th decision is Random(f"{seed}:{rule_id}:{k}"): reproducible outside the twin too.
    expected = [random.Random(f"7:flt_coin:{k}").random() < 0.5 for k in range(1, 41)]
    assert first == expected


async def test_until_follows_the_virtual_clock(faults: Faults, clock: VirtualClock) -> None:
    await faults.add("acme", {"kind": "reset", "for_seconds": 60})
    assert await fired(faults, 1) == 1
    clock.advance(59)
    assert await fired(faults, 1) == 1
    clock.advance(2)
    assert await fired(faults, 1) == 0
    iso = clock.iso(clock.now() + 30)
    await faults.add("acme", {"kind": "empty", "until": iso})
    assert await fired(faults, 1) == 1


# -- scopes ------------------------------------------------------------------------------------


async def test_scope_by_operation_id_or_method_and_template(faults: Faults) -> None:
    await faults.add("acme", {"kind": "reset", "operation": "listExperts"})
    await faults.add("acme", {"kind": "empty", "operation": "post  /experts"})
    listing = await faults.plan_inbound("acme", "listExperts", "GET", "/experts")
    submit = await faults.plan_inbound("acme", "submitExpert", "POST", "/experts")
    other = await faults.plan_inbound("acme", "getExpert", "GET", "/experts/{id}")
    assert listing is not None and listing.kind == "reset"
    assert submit is not None and submit.kind == "empty"
    assert other is None


async def test_rules_are_per_connection(faults: Faults) -> None:
    await faults.add("acme", {"kind": "reset"})
    assert await fired(faults, 3, conn="globex") == 0
    assert await fired(faults, 3, conn="acme") == 3
    assert await faults.clear("globex") == 0
    assert await faults.clear("acme") == 1
    assert await fired(faults, 1, conn="acme") == 0


async def test_the_first_matching_rule_wins_and_clear_removes_one(faults: Faults) -> None:
    first = await faults.add("acme", {"kind": "latency", "params": {"ms": 5}})
    await faults.add("acme", {"kind": "reset"})
    plan = await faults.plan_inbound("acme", "submitExpert", "POST", "/experts")
    assert plan is not None and plan.rule_id == first.id
    assert await faults.clear("acme", first.id) == 1
    assert await faults.clear("acme", first.id) == 0
    plan = await faults.plan_inbound("acme", "submitExpert", "POST", "/experts")
    assert plan is not None and plan.kind == "reset"


async def test_outbound_rules_scope_by_endpoint_and_event_type(faults: Faults) -> None:
    await faults.add("acme", {"kind": "drop", "endpoint": "ep_1", "event_type": "expert.*"})
    assert await faults.plan_outbound("acme", "ep_1", "expert.created") is not None
    assert await faults.plan_outbound("acme", "ep_1", "project.created") is None
    assert await faults.plan_outbound("acme", "ep_2", "expert.created") is None
    assert await faults.plan_inbound("acme", "submitExpert", "POST", "/experts") is None


async def test_conflict_fires_on_every_nth_write_and_ignores_reads(faults: Faults) -> None:
    await faults.add("acme", {"kind": "conflict", "params": {"on_nth_write": 2}})
    outcomes = [
        await faults.plan_inbound("acme", op, method, "/experts")
        for op, method in [
            ("submitExpert", "POST"),
            ("listExperts", "GET"),
            ("submitExpert", "POST"),
            ("submitExpert", "POST"),
            ("submitExpert", "POST"),
        ]
    ]
    assert [plan is not None for plan in outcomes] == [False, False, True, False, True]
    plan = outcomes[2]
    assert plan is not None
    conflict = status_fault(plan)
    assert conflict is not None and conflict.status == 409 and conflict.body is None


# -- helpers for performing ----------------------------------------------------------------------


def test_status_faults_carry_status_headers_and_body() -> None:
    limited = status_fault(FaultPlan("flt_a", "rate_limit", {"retry_after": 7}))
    assert limited is not None and limited.status == 429
    assert ("retry-after", "7") in limited.headers and limited.body is None
    plain = status_fault(FaultPlan("flt_b", "status", {"status": 503}))
    assert plain is not None and plain.body is None and "flt_b" in plain.detail
    shaped = status_fault(
        FaultPlan("flt_c", "status", {"status": 502, "body": {"error": "bad gateway"}})
    )
    assert shaped is not None and shaped.body == b'{"error":"bad gateway"}'
    assert ("content-type", "application/json") in shaped.headers
    text = status_fault(FaultPlan("flt_d", "status", {"status": 500, "body": "oops"}))
    assert text is not None and text.headers[0] == ("content-type", "text/plain; charset=utf-8")
    assert status_fault(FaultPlan("flt_e", "reset", {})) is None


def test_latency_draws_are_seeded_and_bounded() -> None:
    uniform = {"distribution": "uniform", "min_ms": 100, "max_ms": 200}
    plan = FaultPlan("flt_l", "latency", uniform, draw=3, seed="9")
    draws = [latency_ms(uniform, plan.rng()) for _ in range(3)]
    assert len(set(draws)) == 1 and 100 <= draws[0] <= 200
    normal = {"distribution": "normal", "mean_ms": 50, "stddev_ms": 1000, "max_ms": 80}
    rng = random.Random(1)
    assert all(0 <= latency_ms(normal, rng) <= 80 for _ in range(50))
    assert latency_ms({"ms": 250}, rng) == 250


# -- schema_break ----------------------------------------------------------------------------------

EXPERT: dict[str, Any] = {
    "type": "object",
    "required": ["id", "name", "status"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"$ref": "#/$defs/Status"},
        "rate": {"type": "number"},
        "tier": {"type": "string", "enum": ["gold", "silver"]},
        "project": {"$ref": "#/$defs/Project"},
    },
    "$defs": {
        "Status": {"type": "string", "enum": ["active", "archived"]},
        "Project": {
            "allOf": [{"$ref": "#/$defs/Coded"}],
            "properties": {"code": {"type": "string"}},
            "additionalProperties": False,
        },
        "Coded": {"type": "object", "required": ["code"]},
    },
}
VALID_EXPERT = {"id": "e1", "name": "Ada", "status": "active", "project": {"code": "P-1"}}
KEYWORDS = {
    "missing_required": {"required"},
    "wrong_type": {"type"},
    "unknown_enum": {"enum", "const"},
    "extra_fields": {"additionalProperties", "unevaluatedProperties"},
}


def failing_keywords(schema: dict[str, Any], value: Any) -> set[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return {error.validator for error in validator.iter_errors(value)}


@pytest.mark.parametrize("mode", sorted(KEYWORDS))
def test_break_body_fails_validation_in_the_named_way(mode: str) -> None:
    assert failing_keywords(EXPERT, VALID_EXPERT) == set()
    broken = break_body(VALID_EXPERT, EXPERT, mode)
    assert failing_keywords(EXPERT, broken) & KEYWORDS[mode]
    assert VALID_EXPERT == {
        "id": "e1",
        "name": "Ada",
        "status": "active",
        "project": {"code": "P-1"},
    }


def test_break_body_prefers_top_level_fields() -> None:
    assert set(VALID_EXPERT) - set(break_body(VALID_EXPERT, EXPERT, "missing_required")) == {"id"}
    assert break_body(VALID_EXPERT, EXPERT, "wrong_type")["id"] == 12345
    assert break_body(VALID_EXPERT, EXPERT, "unknown_enum")["status"] == "unknown_enum_value"


def test_break_body_reaches_into_arrays_and_one_of() -> None:
    schema: dict[str, Any] = {
        "type": "array",
        "items": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["kind", "size"],
                    "properties": {"kind": {"const": "box"}, "size": {"type": "integer"}},
                },
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "bag"}}},
            ]
        },
    }
    value = [{"kind": "box", "size": 3}]
    for mode in ("wrong_type", "unknown_enum"):
        broken = break_body(value, schema, mode)
        assert failing_keywords(schema, broken), mode


def test_break_body_explains_what_cannot_be_broken() -> None:
    with pytest.raises(BreakError, match="missing_required"):
        break_body({"a": 1}, {"type": "object"}, "missing_required")
    with pytest.raises(BreakError, match="unknown_enum"):
        break_body({"a": 1}, {"type": "object"}, "unknown_enum")
    with pytest.raises(BreakError, match="not one of"):
        break_body({}, {}, "explode")


def test_extra_fields_on_an_open_schema_adds_a_field_a_tolerant_reader_accepts() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    broken = break_body({"a": 1}, schema, "extra_fields")
    assert broken["a"] == 1 and len(broken) == 2
    assert failing_keywords(schema, broken) == set()


# -- races and batches ----------------------------------------------------------------------------


async def test_race_kinds_apply_to_the_writes_they_can_race(faults: Faults) -> None:
    await faults.add("acme", {"kind": "concurrent_update"})
    assert await faults.plan_inbound("acme", "submitExpert", "POST", "/experts") is None
    assert await faults.plan_inbound("acme", "listExperts", "GET", "/experts") is None
    plan = await faults.plan_inbound("acme", "updateExpert", "PATCH", "/experts/{id}")
    assert plan is not None and plan.kind == "concurrent_update"
    assert status_fault(plan) is None  # performed by the state stage, not answered instead
    await faults.clear("acme")
    await faults.add("acme", {"kind": "webhook_before_response"})
    assert await faults.plan_inbound("acme", "listExperts", "GET", "/experts") is None
    plan = await faults.plan_inbound("acme", "submitExpert", "POST", "/experts")
    assert plan is not None and plan.kind == "webhook_before_response"


async def join(faults: Faults, delivery: str, endpoint: str = "ep_1") -> FaultPlan | None:
    return await faults.plan_outbound(
        "acme", endpoint, "expert.created", delivery_id=delivery, record_id="exp_1"
    )


async def test_one_use_of_a_reorder_rule_holds_one_batch(faults: Faults) -> None:
    rule = await faults.add("acme", {"kind": "reorder", "params": {"batch": 3}, "next": 1})
    plans = [await join(faults, d) for d in ("d1", "d2", "d3", "d4")]
    first, second, third, fourth = plans
    assert first is not None and second is not None and third is not None
    assert [p.members for p in (first, second, third)] == [
        ("d1",),
        ("d1", "d2"),
        ("d1", "d2", "d3"),
    ]
    assert [p.full for p in (first, second, third)] == [False, False, True]
    assert {p.group for p in (first, second, third)} == {f"{rule.id}.1"}
    assert fourth is None  # the rule is spent and its batch released
    [stored] = await faults.list("acme")
    assert (stored.hits, stored.remaining, stored.batches) == (1, 0, {})


async def test_a_batch_is_per_endpoint_and_a_parallel_batch_per_record(faults: Faults) -> None:
    await faults.add("acme", {"kind": "reorder", "next": 1})
    assert await join(faults, "d1", "ep_1") is not None
    assert await join(faults, "d2", "ep_2") is None  # another endpoint: not in ep_1's batch
    await faults.clear("acme")
    await faults.add("acme", {"kind": "parallel", "params": {"count": 2}})
    a1 = await faults.plan_outbound("acme", "ep_1", "e", delivery_id="a1", record_id="A")
    b1 = await faults.plan_outbound("acme", "ep_1", "e", delivery_id="b1", record_id="B")
    a2 = await faults.plan_outbound("acme", "ep_1", "e", delivery_id="a2", record_id="A")
    assert a1 is not None and b1 is not None and a2 is not None
    assert (a2.members, a2.full, a2.group) == (("a1", "a2"), True, a1.group)
    assert b1.members == ("b1",) and b1.group != a1.group


async def test_closing_a_batch_early_returns_its_members_once(faults: Faults) -> None:
    rule = await faults.add("acme", {"kind": "reorder", "params": {"batch": 5}, "next": 1})
    await join(faults, "d1")
    plan = await join(faults, "d2")
    assert plan is not None
    assert await faults.close_batch("acme", rule.id, plan.group) == ("d1", "d2")
    assert await faults.close_batch("acme", rule.id, plan.group) is None
    assert await join(faults, "d3") is None


async def test_replicas_sharing_a_store_fill_one_batch(
    store: SQLiteStore, clock: VirtualClock
) -> None:
    first, second = Faults(store, "experts", clock), Faults(store, "experts", clock)
    await first.add("acme", {"kind": "reorder", "params": {"batch": 6}, "next": 1})
    calls = [
        replica.plan_outbound("acme", "ep_1", "e", delivery_id=f"{name}{n}")
        for name, replica in (("a", first), ("b", second))
        for n in range(3)
    ]
    plans = [plan for plan in await asyncio.gather(*calls) if plan is not None]
    assert len(plans) == 6 and len({plan.group for plan in plans}) == 1
    [full] = [plan for plan in plans if plan.full]
    assert sorted(full.members) == ["a0", "a1", "a2", "b0", "b1", "b2"]


def test_release_order_is_reversed_or_a_seeded_shuffle_that_moves_something() -> None:
    members = ["a", "b", "c", "d"]
    assert ordered(members, "reversed", random.Random(1)) == ["d", "c", "b", "a"]
    for seed in range(50):
        shuffled = ordered(members, "shuffled", random.Random(seed))
        assert sorted(shuffled) == members and shuffled != members
        assert ordered(members, "shuffled", random.Random(seed)) == shuffled
    assert ordered(["a", "b"], "shuffled", random.Random(0)) == ["b", "a"]
