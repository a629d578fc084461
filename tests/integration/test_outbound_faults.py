"""Outbound fault rules performed by the webhook dispatcher, seen from a real receiver."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apitwin.errors import NotFoundError
from apitwin.faults import ordered

from conftest import REPO, Receiver, Running, serve, serve_twin

pytestmark = pytest.mark.anyio
EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"
EVENT = "project.created"
_names = itertools.count()


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[Receiver, str, Running]]:
    # One twin and one receiver for the module (startup dominates the run time); each test has
    # its own connection and receiver path, so tests do not see each other's deliveries.
    hooks = Receiver()
    with serve(hooks) as origin, serve_twin(EXAMPLE) as running:
        yield hooks, origin, running


class Case:
    """One connection with its webhook path, a fault rule and a triggered event."""

    def __init__(self, rig: tuple[Receiver, str, Running]) -> None:
        self.hooks, origin, self.running = rig
        self.control = self.running.app.control
        self.path = f"/hooks/{next(_names)}"
        self.url = origin + self.path

    async def start(self, kind: str, params: dict[str, Any] | None = None) -> str:
        """Connects, adds the rule (fires once), triggers the event; the delivery id."""
        client_id = "qa-" + self.path.rsplit("/", 1)[-1]
        view = await self.control.connect(client_id, webhook_url=self.url)
        self.handle = view["connection_id"]
        self.secret = view["webhook"]["secret"]
        spec = {"kind": kind, "params": params or {}, "direction": "outbound", "next": 1}
        self.rule = (await self.control.add_fault(self.handle, spec))["id"]
        triggered = await self.control.trigger_event(self.handle, EVENT)
        [delivery] = triggered["deliveries"]
        return str(delivery)

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        pairs = zip(self.hooks.paths, self.hooks.received, strict=True)
        return [request for path, request in pairs if path == self.path]

    async def delivery(self, delivery_id: str) -> dict[str, Any]:
        return dict(await self.control.get_delivery(self.handle, delivery_id))

    async def until(self, done: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
        """Drives the dispatcher until ``done``; bounded (the twin's own worker also runs)."""
        deadline = time.monotonic() + timeout
        while not await done():
            assert time.monotonic() < deadline, "timed out"
            await self.running.twin.dispatcher.run_due()
            await anyio.sleep(0.02)

    async def settled(self, delivery_id: str, status: str) -> dict[str, Any]:
        async def reached() -> bool:
            return bool((await self.delivery(delivery_id))["status"] == status)

        await self.until(reached)
        return await self.delivery(delivery_id)

    async def attempted(self, delivery_id: str, n: int) -> dict[str, Any]:
        """The delivery once ``n`` attempts are logged and it waits for the next one."""

        async def reached() -> bool:
            found = await self.delivery(delivery_id)
            return len(found["attempt_log"]) >= n and found["status"] == "pending"

        await self.until(reached)
        return await self.delivery(delivery_id)

    async def receipts(self, count: int) -> list[tuple[dict[str, str], bytes]]:
        async def arrived() -> bool:
            return len(self.received()) >= count

        await self.until(arrived)
        return self.received()

    def verify(self, headers: dict[str, str], body: bytes) -> Any:
        return Webhook(self.secret).verify(body, headers)


@pytest.fixture
def case(rig: tuple[Receiver, str, Running]) -> Case:
    return Case(rig)


def tagged(attempt: dict[str, Any], case: Case, kind: str) -> None:
    assert attempt["fault"] == case.rule
    assert attempt["fault_kind"] == kind


@pytest.mark.parametrize(
    ("params", "status", "error_class"),
    [({"status": 503}, 503, "status"), ({"timeout": True}, None, "timeout")],
)
async def test_fail_records_an_injected_failure_and_retries_on_schedule(
    case: Case, params: dict[str, Any], status: int | None, error_class: str
) -> None:
    delivery_id = await case.start("fail", params)
    first = await case.attempted(delivery_id, 1)
    assert first["attempts"] == 1
    [attempt] = first["attempt_log"]
    tagged(attempt, case, "fail")
    assert attempt["fault_injected"] is True
    assert (attempt["response_status"], attempt["error_class"]) == (status, error_class)
    assert case.received() == []  # nothing was sent
    case.running.twin.clock.advance(10)  # past the 5 s (+20 %) retry
    done = await case.settled(delivery_id, "succeeded")
    [(headers, body)] = case.received()
    assert case.verify(headers, body)["type"] == EVENT
    assert "fault" not in done["attempt_log"][1]


async def test_fail_with_attempts_fails_that_many_attempts_of_the_delivery(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short retries: the module's twin shares one clock, and moving it past the receiver's
    # five-minute tolerance would make later tests' signatures "too new".
    monkeypatch.setattr(case.running.twin.dispatcher, "schedule", (0.0, 1.0, 1.0, 1.0))
    delivery_id = await case.start("fail", {"status": 500, "attempts": 2})
    for n in (1, 2):
        await case.attempted(delivery_id, n)
        case.running.twin.clock.advance(2)
    done = await case.settled(delivery_id, "succeeded")
    kinds = [a.get("fault_kind") for a in done["attempt_log"]]
    assert kinds == ["fail", "fail", None]
    assert len(case.received()) == 1


async def test_delay_postpones_the_attempt_without_counting_one(case: Case) -> None:
    delivery_id = await case.start("delay", {"seconds": 30})

    async def postponed() -> bool:
        found = await case.delivery(delivery_id)
        return bool(found.get("fault_delayed"))

    await case.until(postponed)
    held = await case.delivery(delivery_id)
    assert (held["status"], held["attempts"], held["attempt_log"]) == ("pending", 0, [])
    assert held["next_attempt_at"] >= case.running.twin.clock.now() + 25
    assert held["last_fault"]["fault"] == case.rule
    assert await case.running.twin.dispatcher.run_due() == 0
    case.running.twin.clock.advance(31)
    done = await case.settled(delivery_id, "succeeded")
    assert done["attempts"] == 1
    [(headers, body)] = case.received()
    case.verify(headers, body)


async def test_drop_marks_the_delivery_dropped_and_never_sends_it(case: Case) -> None:
    delivery_id = await case.start("drop")
    dropped = await case.settled(delivery_id, "dropped")
    assert dropped["last_error"] == "injected drop"
    assert dropped["attempts"] == 0
    assert dropped["last_fault"]["fault"] == case.rule
    assert case.received() == []


async def test_duplicate_delivers_the_same_message_twice(case: Case) -> None:
    delivery_id = await case.start("duplicate", {"spacing_seconds": 0})
    first, second = await case.receipts(2)
    assert first[0]["webhook-id"] == second[0]["webhook-id"]
    assert case.verify(*first) == case.verify(*second)
    [attempt] = (await case.settled(delivery_id, "succeeded"))["attempt_log"]
    tagged(attempt, case, "duplicate")


async def test_duplicate_spacing_is_in_virtual_seconds(case: Case) -> None:
    await case.start("duplicate", {"spacing_seconds": 60})
    await case.receipts(1)
    assert await case.running.twin.dispatcher.run_due() == 0
    case.running.twin.clock.advance(61)
    assert len(await case.receipts(2)) == 2


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong_secret", "No matching signature found"),
        ("stale_timestamp", "Message timestamp too old"),
        ("future_timestamp", "Message timestamp too new"),
        ("missing_header", "Missing required headers"),
        ("tampered_body", "No matching signature found"),
    ],
)
async def test_bad_signature_fails_verification_in_exactly_that_way(
    case: Case, mode: str, reason: str
) -> None:
    delivery_id = await case.start("bad_signature", {"mode": mode})
    [(headers, body)] = await case.receipts(1)
    with pytest.raises(WebhookVerificationError, match=reason):
        case.verify(headers, body)
    assert "webhook-id" in headers and "webhook-timestamp" in headers
    [attempt] = (await case.settled(delivery_id, "succeeded"))["attempt_log"]
    tagged(attempt, case, "bad_signature")


async def test_malformed_payload_is_signed_but_not_json(case: Case) -> None:
    await case.start("malformed_payload")
    [(headers, body)] = await case.receipts(1)
    # The signature matches (no WebhookVerificationError); only parsing the body fails.
    with pytest.raises(json.JSONDecodeError):
        case.verify(headers, body)


async def test_schema_break_sends_a_signed_body_the_event_schema_rejects(case: Case) -> None:
    await case.start("schema_break", {"mode": "missing_required"})
    [(headers, body)] = await case.receipts(1)
    payload = case.verify(headers, body)
    schema = case.running.twin.events[EVENT].schema
    assert schema is not None
    errors = list(jsonschema.Draft202012Validator(schema.json).iter_errors(payload))
    assert any(error.validator == "required" for error in errors)


async def test_lost_ack_counts_an_answered_attempt_as_failed_and_retries(case: Case) -> None:
    delivery_id = await case.start("lost_ack")
    await case.receipts(1)
    first = await case.attempted(delivery_id, 1)
    [attempt] = first["attempt_log"]
    tagged(attempt, case, "lost_ack")
    assert (attempt["response_status"], attempt["error_class"]) == (200, "lost_ack")
    case.running.twin.clock.advance(10)
    await case.settled(delivery_id, "succeeded")
    first_send, retry = case.received()
    assert first_send[0]["webhook-id"] == retry[0]["webhook-id"]
    case.verify(*retry)


async def test_replay_resends_the_message_signed_with_an_old_timestamp(case: Case) -> None:
    delivery_id = await case.start("replay", {"age_seconds": 600})
    original, replayed = await case.receipts(2)
    case.verify(*original)
    assert original[0]["webhook-id"] == replayed[0]["webhook-id"]
    assert original[1] == replayed[1]
    age = int(original[0]["webhook-timestamp"]) - int(replayed[0]["webhook-timestamp"])
    assert 599 <= age <= 601
    with pytest.raises(WebhookVerificationError, match="too old"):
        case.verify(*replayed)
    [attempt] = (await case.settled(delivery_id, "succeeded"))["attempt_log"]
    tagged(attempt, case, "replay")


async def test_dangling_reference_names_a_record_the_twin_never_issued(case: Case) -> None:
    delivery_id = await case.start("dangling_reference")
    [(headers, body)] = await case.receipts(1)
    record = case.verify(headers, body)["data"]["object"]
    assert record["id"].startswith("prj_missing")
    with pytest.raises(NotFoundError):
        await case.control.get_record(case.handle, "projects", record["id"])
    [attempt] = (await case.settled(delivery_id, "succeeded"))["attempt_log"]
    tagged(attempt, case, "dangling_reference")


async def batch(case: Case, rule: dict[str, Any], events: int) -> list[str]:
    """Connects, adds ``rule``, triggers ``events`` events one after another; their message ids
    in the order they happened."""
    client_id = "qa-" + case.path.rsplit("/", 1)[-1]
    view = await case.control.connect(client_id, webhook_url=case.url)
    case.handle, case.secret = view["connection_id"], view["webhook"]["secret"]
    case.rule = (await case.control.add_fault(case.handle, rule))["id"]
    return [
        str((await case.control.trigger_event(case.handle, EVENT))["message_id"])
        for _ in range(events)
    ]


async def arrivals(case: Case, count: int) -> list[str]:
    """The webhook ids the receiver got, in arrival order, once ``count`` arrived (verified)."""
    received = await case.receipts(count)
    for headers, body in received:
        case.verify(headers, body)
    return [headers["webhook-id"] for headers, _ in received]


async def logged(case: Case) -> list[dict[str, Any]]:
    """The first attempt of each of the connection's deliveries."""
    page = await case.control.list_deliveries(case.handle, limit=100)
    found = [await case.delivery(d["id"]) for d in page["deliveries"]]
    return [d["attempt_log"][0] for d in found if d["attempt_log"]]


async def test_reorder_releases_a_held_batch_in_reverse(case: Case) -> None:
    rule = {"kind": "reorder", "params": {"batch": 3}, "next": 1}
    happened = await batch(case, rule, 3)
    assert await arrivals(case, 3) == happened[::-1]
    attempts = await logged(case)
    assert len(attempts) == 3
    for attempt in attempts:
        tagged(attempt, case, "reorder")
        assert attempt["fault_injected"] is True
    assert len({attempt["fault_group"] for attempt in attempts}) == 1
    # The rule opened one batch: the next event is sent at once, untouched.
    [later] = (await case.control.trigger_event(case.handle, EVENT))["deliveries"]
    [attempt] = (await case.settled(later, "succeeded"))["attempt_log"]
    assert "fault" not in attempt


async def test_reorder_releases_a_partial_batch_when_its_wait_is_over(case: Case) -> None:
    rule = {"kind": "reorder", "params": {"batch": 5, "max_wait_seconds": 30}, "next": 1}
    happened = await batch(case, rule, 2)

    async def held() -> bool:
        page = await case.control.list_deliveries(case.handle, limit=10)
        return all(d.get("held_by") for d in page["deliveries"])

    await case.until(held)
    assert await case.running.twin.dispatcher.run_due() == 0
    assert case.received() == []
    case.running.twin.clock.advance(31)
    assert await arrivals(case, 2) == happened[::-1]


def permutation(happened: list[str], arrived: list[str]) -> list[int]:
    return [happened.index(message) for message in arrived]


@pytest.mark.parametrize("seed", [7, 8])
async def test_reorder_shuffled_is_the_same_order_for_the_same_seed(
    rig: tuple[Receiver, str, Running], seed: int
) -> None:
    rule = {
        "kind": "reorder",
        "id": "shuffle",
        "params": {"batch": 4, "order": "shuffled"},
        "seed": seed,
        "next": 1,
    }
    orders = []
    for _ in range(2):  # two connections, the same rule and seed
        case = Case(rig)
        happened = await batch(case, rule, 4)
        orders.append(permutation(happened, await arrivals(case, 4)))
        for attempt in await logged(case):
            tagged(attempt, case, "reorder")
    assert orders[0] == orders[1]
    assert orders[0] != [0, 1, 2, 3]
    # Seeded as documented: Random(f"{seed}:{rule id}:{batch number}:perform").
    expected = ordered(
        ["0", "1", "2", "3"], "shuffled", random.Random(f"{seed}:flt_shuffle:1:perform")
    )
    assert orders[0] == [int(i) for i in expected]


async def test_burst_sends_count_events_for_one_record_at_once(
    rig: tuple[Receiver, str, Running],
) -> None:
    gate = Gate(3)
    with serve(gate) as origin:
        case = Case(rig)
        case.url = origin + case.path
        delivery_id = await case.start("burst", {"count": 3})

        async def all_sent() -> bool:
            return len(gate.received) >= 3

        await case.until(all_sent)
    assert gate.peak == 3  # all three were in flight before any was answered
    payloads = [case.verify(headers, body) for headers, body in gate.received]
    assert len({headers["webhook-id"] for headers, _ in gate.received}) == 3
    assert len({payload["id"] for payload in payloads}) == 3  # three events, not one thrice
    assert len({payload["data"]["object"]["id"] for payload in payloads}) == 1
    original = await case.settled(delivery_id, "succeeded")
    tagged(original["attempt_log"][0], case, "burst")
    copies = [a for a in await logged(case) if a["delivery"] != delivery_id]
    assert len(copies) == 2
    for attempt in copies:
        tagged(attempt, case, "burst")
        assert attempt["fault_injected"] is True


class Gate:
    """A receiver that answers nobody until ``expected`` requests are in flight together (or a
    bounded wait ends), and records the most that were: sent at once, or one after another."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.inflight = 0
        self.peak = 0
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        for _ in range(500):  # at most 5 s
            if self.peak >= self.expected:
                break
            await anyio.sleep(0.01)
        self.inflight -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_no_fault_attempts_carry_no_tag(case: Case) -> None:
    delivery_id = await case.start("drop")
    await case.settled(delivery_id, "dropped")  # the rule fired once and is spent
    triggered = await case.control.trigger_event(case.handle, EVENT)
    [second] = triggered["deliveries"]
    [attempt] = (await case.settled(second, "succeeded"))["attempt_log"]
    assert "fault" not in attempt
    [(headers, body)] = case.received()
    case.verify(headers, body)
