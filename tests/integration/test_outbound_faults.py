"""Outbound fault rules performed by the webhook dispatcher, seen from a real receiver."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apitwin.errors import NotFoundError

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


async def test_kinds_not_performed_send_normally_with_a_note(case: Case) -> None:
    delivery_id = await case.start("reorder")
    [(headers, body)] = await case.receipts(1)
    case.verify(headers, body)
    [attempt] = (await case.settled(delivery_id, "succeeded"))["attempt_log"]
    tagged(attempt, case, "reorder")
    assert attempt["fault_injected"] is False
    assert attempt["fault_note"].startswith("not performed")


async def test_no_fault_attempts_carry_no_tag(case: Case) -> None:
    delivery_id = await case.start("drop")
    await case.settled(delivery_id, "dropped")  # the rule fired once and is spent
    triggered = await case.control.trigger_event(case.handle, EVENT)
    [second] = triggered["deliveries"]
    [attempt] = (await case.settled(second, "succeeded"))["attempt_log"]
    assert "fault" not in attempt
    [(headers, body)] = case.received()
    case.verify(headers, body)
