"""Webhook delivery end to end: a real receiver on 127.0.0.1, a real SQLite file, virtual time."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import httpx2
import jsonschema
import pytest
import stripe
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from slack_sdk.signature import SignatureVerifier
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apitwin.clock import VirtualClock
from apitwin.generation import Generator
from apitwin.spec.loader import load_spec
from apitwin.spec.resources import infer_resources
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Key, Merge, Put, StoreError
from apitwin.webhooks.delivery import MIN_LEASE, Dispatcher, default_client
from apitwin.webhooks.events import catalogue
from apitwin.webhooks.outbox import (
    ChangeEvents,
    Outbox,
    PayloadTooLargeError,
    QueueFullError,
    WebhookInputError,
)
from apitwin.webhooks.safety import AllowList
from apitwin.webhooks.signing import mask_secret, signer_for

from conftest import serve

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
EXAMPLE = Path(__file__).resolve().parents[2] / "src/apitwin/examples/expert-network/openapi.yaml"
CONN = "acme"
TWIN = "twin"


# -- the receiver -----------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Records requests; answers ``statuses`` in order, then ``default``."""

    base: str = ""
    requests: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    default: int = 200
    stall: set[int] = field(default_factory=set)  # request numbers (0-based) to hang
    response_body: bytes = b"ok"
    wanted: int = 0
    enough: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            index = len(self.requests)
            self.requests.append(Received(request.url.path, dict(request.headers), body))
            status = self.statuses.pop(0) if self.statuses else self.default
            if self.wanted and len(self.requests) >= self.wanted:
                self.enough.set()
        if index in self.stall:
            await self._hang(request)
        headers = {"location": "/elsewhere"} if 300 <= status < 400 else {}
        return Response(self.response_body, status_code=status, headers=headers)

    async def _hang(self, request: Request) -> None:
        # A fault, not test timing: hold the request until the sender gives up (bounded).
        for _ in range(500):
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.01)

    def url(self, path: str = "/hook") -> str:
        return self.base + path

    async def wait_for(self, count: int) -> None:
        with self.lock:
            self.wanted = count
            if len(self.requests) >= count:
                return
        assert await anyio.to_thread.run_sync(self.enough.wait, 5), "the receiver waited in vain"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    app = Starlette(routes=[Route("/{path:path}", found.handle, methods=["POST", "PUT"])])
    with serve(app) as base:
        found.base = base
        yield found


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    backend = SQLiteStore(tmp_path / "twin.db")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def frozen() -> VirtualClock:
    return VirtualClock(source=lambda: T0)


@dataclass
class Rig:
    store: SQLiteStore
    clock: VirtualClock
    outbox: Outbox
    dispatcher: Dispatcher

    async def close(self) -> None:
        await self.dispatcher.stop()

    async def only_delivery(self) -> dict[str, Any]:
        [item] = (await self.outbox.list_deliveries(CONN)).items
        return await self.outbox.get_delivery(CONN, item["id"])


@pytest.fixture
async def rig_factory(store: SQLiteStore) -> AsyncIterator[Any]:
    made: list[Rig] = []

    def make(clock: VirtualClock | None = None, **options: Any) -> Rig:
        clock = clock or frozen()
        outbox = Outbox(store, TWIN, clock, **options.pop("outbox", {}))
        rig = Rig(store, clock, outbox, Dispatcher(store, outbox, clock, **options))
        made.append(rig)
        return rig

    yield make
    for rig in made:
        await rig.close()


def stripe_ok(body: bytes, header: str, secret: str) -> bool:
    return bool(stripe.WebhookSignature.verify_header(body.decode(), header, secret, 300))


def v1a_ok(body: bytes, headers: dict[str, str], public_key: str) -> bool:
    """Standard Webhooks v1a (ed25519), checked with the cryptography package directly."""
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key.removeprefix("whpk_")))
    content = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    for entry in headers["webhook-signature"].split():
        version, _, signature = entry.partition(",")
        if version == "v1a":
            try:
                key.verify(base64.b64decode(signature), content)
            except InvalidSignature:
                continue
            return True
    return False


def sw_signature(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    """The Standard Webhooks signature, computed by the reference library."""
    return Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())


# -- signing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheme",
    ["standard-webhooks", "standard-webhooks-v1a", "stripe", "github", "slack", "shopify"],
)
async def test_each_scheme_verifies_with_an_independent_verifier(
    rig_factory: Any, receiver: Receiver, scheme: str
) -> None:
    rig = rig_factory(VirtualClock())  # real time: the reference verifiers check it
    _, secret = await rig.outbox.add_endpoint(CONN, receiver.url(), scheme=scheme)
    msg_id = await rig.outbox.emit(CONN, "project.created", {"id": "evt_1", "n": 1})
    assert await rig.dispatcher.run_due() == 1
    [got] = receiver.requests
    assert json.loads(got.body) == {"id": "evt_1", "n": 1}
    if scheme == "standard-webhooks":
        assert Webhook(secret).verify(got.body, got.headers) == {"id": "evt_1", "n": 1}
        assert got.headers["webhook-id"] == msg_id
    elif scheme == "stripe":
        assert stripe_ok(got.body, got.headers["stripe-signature"], secret)
    elif scheme == "standard-webhooks-v1a":
        public_key = signer_for(scheme).public_key(secret)  # type: ignore[attr-defined]
        assert v1a_ok(got.body, got.headers, public_key)
    elif scheme == "slack":
        verifier = SignatureVerifier(secret)
        assert verifier.is_valid(
            got.body, got.headers["x-slack-request-timestamp"], got.headers["x-slack-signature"]
        )
    elif scheme == "shopify":
        digest = base64.b64encode(hmac.new(secret.encode(), got.body, hashlib.sha256).digest())
        assert hmac.compare_digest(got.headers["x-shopify-hmac-sha256"], digest.decode())
    else:
        digest = hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(got.headers["x-hub-signature-256"], f"sha256={digest}")
        assert got.headers["x-github-event"] == "project.created"
        assert got.headers["x-github-delivery"] == msg_id
    assert (await rig.only_delivery())["status"] == "succeeded"


async def test_rotation_sends_two_signatures_that_both_verify(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(VirtualClock())
    endpoint, old = await rig.outbox.add_endpoint(CONN, receiver.url())
    new = await rig.outbox.rotate_secret(CONN, endpoint.id, grace_seconds=3600)
    await rig.outbox.emit(CONN, "project.updated", {"n": 1})
    await rig.dispatcher.run_due()
    got = receiver.requests[0]
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        assert Webhook(secret).verify(got.body, got.headers) == {"n": 1}

    rig.clock.advance(3601)  # the grace period is over: only the new secret signs
    msg_id = await rig.outbox.emit(CONN, "project.updated", {"n": 2})
    await rig.dispatcher.run_due()
    later = receiver.requests[1]
    ts = int(later.headers["webhook-timestamp"])
    assert later.headers["webhook-signature"] == sw_signature(new, msg_id, ts, later.body)

    newest = await rig.outbox.rotate_secret(CONN, endpoint.id)  # `old` stays retired
    msg_id = await rig.outbox.emit(CONN, "project.updated", {"n": 3})
    await rig.dispatcher.run_due()
    last = receiver.requests[2]
    ts = int(last.headers["webhook-timestamp"])
    expected = [sw_signature(s, msg_id, ts, last.body) for s in (newest, new)]
    assert last.headers["webhook-signature"].split(" ") == expected


# -- retries under the virtual clock ----------------------------------------------------------


async def test_server_errors_are_retried_on_the_schedule(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(seed=11)
    receiver.statuses = [500, 502, 503]
    _, secret = await rig.outbox.add_endpoint(CONN, receiver.url())
    msg_id = await rig.outbox.emit(CONN, "call.completed", {"call": 1})
    await rig.dispatcher.run_due()
    assert len(receiver.requests) == 1
    assert await rig.dispatcher.run_due() == 0  # nothing due until the clock moves

    bounds = [(4.0, 6.0), (240.0, 360.0), (1440.0, 2160.0)]  # 5 s, 5 min, 30 min, +-20 %
    for attempt, (low, high) in enumerate(bounds, start=2):
        delivery = await rig.only_delivery()
        wait = delivery["next_attempt_at"] - rig.clock.now()
        assert low <= wait <= high
        rig.clock.advance(wait)
        await rig.dispatcher.run_due()
        assert len(receiver.requests) == attempt

    delivery = await rig.only_delivery()
    assert (delivery["status"], delivery["attempts"]) == ("succeeded", 4)
    log = delivery["attempt_log"]
    assert [a["response_status"] for a in log] == [500, 502, 503, 200]
    assert [a["error_class"] for a in log] == ["status", "status", "status", None]
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    assert stamps == [int(a["at"]) for a in log] and stamps[0] == int(T0)
    assert len(set(stamps)) == 4  # a fresh timestamp, hence signature, per attempt
    for got, ts in zip(receiver.requests, stamps, strict=True):
        assert got.headers["webhook-id"] == msg_id
        assert got.headers["webhook-signature"] == sw_signature(secret, msg_id, ts, got.body)


async def test_jitter_is_reproducible_from_the_seed(tmp_path: Path, receiver: Receiver) -> None:
    receiver.default = 500
    original = tmp_path / "original.db"
    store = SQLiteStore(original)
    await store.open()
    outbox = Outbox(store, TWIN, frozen())
    await outbox.add_endpoint(CONN, receiver.url())
    await outbox.emit(CONN, "e", {})
    await store.close()
    waits = []
    for copy, seed in (("a.db", 5), ("b.db", 5), ("c.db", 6)):
        (tmp_path / copy).write_bytes(original.read_bytes())
        store = SQLiteStore(tmp_path / copy)
        await store.open()
        clock = frozen()
        outbox = Outbox(store, TWIN, clock)
        dispatcher = Dispatcher(store, outbox, clock, seed=seed)
        await dispatcher.run_due()
        [row] = (await outbox.list_deliveries(CONN)).items
        waits.append(row["next_attempt_at"] - T0)
        await dispatcher.stop()
        await store.close()
    assert waits[0] == waits[1] != waits[2]
    assert all(4.0 <= wait <= 6.0 for wait in waits)


async def test_a_three_day_stripe_schedule_runs_in_virtual_time(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(retry_schedule="stripe", jitter=0)
    receiver.default = 503
    await rig.outbox.add_endpoint(CONN, receiver.url(), scheme="stripe")
    await rig.outbox.emit(CONN, "charge.failed", {})
    await rig.dispatcher.run_due()
    while (delivery := await rig.only_delivery())["status"] == "pending":
        rig.clock.advance(delivery["next_attempt_at"] - rig.clock.now())
        await rig.dispatcher.run_due()
    assert delivery["status"] == "failed" and delivery["attempts"] == 10
    span = delivery["attempt_log"][-1]["at"] - T0
    assert 2.5 * 86400 <= span <= 3 * 86400


async def test_timeouts_are_retried(rig_factory: Any, receiver: Receiver) -> None:
    rig = rig_factory(timeout=0.3, jitter=0)
    receiver.stall = {0}
    await rig.outbox.add_endpoint(CONN, receiver.url())
    await rig.outbox.emit(CONN, "call.scheduled", {})
    with anyio.fail_after(5):
        await rig.dispatcher.run_due()
    delivery = await rig.only_delivery()
    assert delivery["status"] == "pending"
    assert delivery["attempt_log"][0]["error_class"] == "timeout"
    assert delivery["next_attempt_at"] == T0 + 5
    rig.clock.advance(5)
    await rig.dispatcher.run_due()
    assert (await rig.only_delivery())["status"] == "succeeded"
    assert len(receiver.requests) == 2


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory()
    receiver.statuses = [302]
    await rig.outbox.add_endpoint(CONN, receiver.url())
    await rig.outbox.emit(CONN, "project.closed", {})
    await rig.dispatcher.run_due()
    assert [r.path for r in receiver.requests] == ["/hook"]
    delivery = await rig.only_delivery()
    [attempt] = delivery["attempt_log"]
    assert (attempt["response_status"], attempt["error_class"]) == (302, "status")
    assert "redirects are not followed" in attempt["error"]
    assert delivery["status"] == "pending" and delivery["next_attempt_at"] > T0


# -- safety -----------------------------------------------------------------------------------


class Recorder:
    """The dispatcher's own HTTP session, traced: records every request it starts to send."""

    def __init__(self) -> None:
        self.seen: list[aiohttp.TraceRequestStartParams] = []

    def client(self) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self.record)
        return default_client(timeout=5, trace_configs=[trace])

    async def record(
        self, _session: Any, _context: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        self.seen.append(params)


def resolves_to(address: str) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        return [address]

    return resolve


@pytest.mark.parametrize(
    ("url", "networks", "address"),
    [
        ("http://10.0.0.1:9/x", None, None),
        ("http://partner.test/hook", None, "10.1.2.3"),  # a name resolving outside the list
        ("http://169.254.169.254/latest/meta-data", ["0.0.0.0/0"], None),  # metadata: never
        ("http://[::ffff:169.254.169.254]/", ["0.0.0.0/0", "::/0"], None),
        ("http://[fe80::1]/", ["::/0"], None),
    ],
)
async def test_targets_outside_the_allow_list_are_refused_before_dialling(
    rig_factory: Any, url: str, networks: list[str] | None, address: str | None
) -> None:
    recorder = Recorder()
    resolver = resolves_to(address) if address else None
    allow = AllowList(networks or ["127.0.0.0/8", "::1/128"], resolver=resolver)
    rig = rig_factory(http_client_factory=recorder.client, allow=allow)
    await rig.outbox.add_endpoint(CONN, url)
    await rig.outbox.emit(CONN, "project.created", {})
    await rig.dispatcher.run_due()
    assert recorder.seen == []
    [attempt] = (await rig.only_delivery())["attempt_log"]
    assert attempt["error_class"] == "refused-by-allow-list"
    assert attempt["response_status"] is None


async def test_the_checked_address_is_the_one_dialled(rig_factory: Any, receiver: Receiver) -> None:
    recorder = Recorder()
    allow = AllowList(resolver=resolves_to("127.0.0.1"))
    rig = rig_factory(http_client_factory=recorder.client, allow=allow)
    port = httpx2.URL(receiver.base).port
    # partner.test resolves nowhere but through the allow-list's resolver.
    await rig.outbox.add_endpoint(CONN, f"http://partner.test:{port}/hook")
    await rig.outbox.emit(CONN, "project.created", {})
    await rig.dispatcher.run_due()
    [request] = recorder.seen
    assert str(request.url) == f"http://127.0.0.1:{port}/hook"
    [received] = receiver.requests
    assert received.headers["host"] == f"partner.test:{port}"
    assert (await rig.only_delivery())["status"] == "succeeded"


async def test_unresolvable_hosts_and_bad_urls_are_classified(rig_factory: Any) -> None:
    async def fail(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    rig = rig_factory(allow=AllowList(resolver=fail))
    await rig.outbox.add_endpoint(CONN, "http://nowhere.invalid/hook")
    await rig.outbox.emit(CONN, "project.created", {})
    await rig.dispatcher.run_due()
    assert (await rig.only_delivery())["attempt_log"][0]["error_class"] == "dns"
    with pytest.raises(WebhookInputError, match="only http and https"):
        await rig.outbox.add_endpoint(CONN, "file:///etc/passwd")


async def test_a_closed_port_is_classified_as_refused(rig_factory: Any) -> None:
    rig = rig_factory()
    await rig.outbox.add_endpoint(CONN, "http://127.0.0.1:9/hook")  # discard: nothing listens
    await rig.outbox.emit(CONN, "project.created", {})
    await rig.dispatcher.run_due()
    assert (await rig.only_delivery())["attempt_log"][0]["error_class"] == "refused"


async def test_queue_and_payload_limits(rig_factory: Any, receiver: Receiver) -> None:
    rig = rig_factory(outbox={"max_pending": 2, "max_payload": 1024})
    await rig.outbox.add_endpoint(CONN, receiver.url())
    await rig.outbox.emit(CONN, "a", {})
    await rig.outbox.emit(CONN, "b", {})
    with pytest.raises(QueueFullError):
        await rig.outbox.emit(CONN, "c", {})
    with pytest.raises(PayloadTooLargeError):
        await rig.outbox.emit("other", "d", {"blob": "x" * 2000})


async def test_the_pending_limit_counts_redelivered_deliveries(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(outbox={"max_pending": 3})
    await rig.outbox.add_endpoint(CONN, receiver.url())
    for name in "abc":
        await rig.outbox.emit(CONN, name, {})
    await rig.dispatcher.run_due()  # all three sent: none pending
    sent = [d["id"] for d in (await rig.outbox.list_deliveries(CONN)).items]
    await rig.outbox.emit(CONN, "d", {})  # 1 pending
    for delivery_id in sent:
        await rig.outbox.redeliver(CONN, delivery_id)  # 4 pending: beyond the limit already
    with pytest.raises(QueueFullError, match="has 4 pending"):
        await rig.outbox.emit(CONN, "e", {})


# -- durability -------------------------------------------------------------------------------


async def test_the_outbox_commits_with_the_state_change(
    rig_factory: Any, store: SQLiteStore, receiver: Receiver
) -> None:
    rig = rig_factory()
    await rig.outbox.add_endpoint(CONN, receiver.url(), events=["project.*"])
    record = Key(TWIN, CONN, "record:projects", "prj_1")
    ops, msg_id = await rig.outbox.enqueue_ops(CONN, "project.created", {"id": "prj_1"}, now=T0)
    assert len(ops) == 2  # the message and one delivery
    with pytest.raises(StoreError):  # the change fails: its event must not exist either
        await store.write([Put(record, {"id": "prj_1"}, expect="present"), *ops])
    assert (await rig.outbox.list_deliveries(CONN)).items == []
    with pytest.raises(Exception, match="no webhook message"):
        await rig.outbox.get_message(CONN, msg_id)

    ops, msg_id = await rig.outbox.enqueue_ops(CONN, "project.created", {"id": "prj_1"}, now=T0)
    await store.write([Put(record, {"id": "prj_1"}, expect="absent"), *ops])
    await rig.dispatcher.run_due()
    assert [r.headers["webhook-id"] for r in receiver.requests] == [msg_id]

    ops, _ = await rig.outbox.enqueue_ops(CONN, "expert.created", {}, now=T0)
    assert len(ops) == 1  # no endpoint subscribes: the message alone, for the log


@dataclass
class Change:
    resource: str
    verb: str
    record: dict[str, Any]
    connection: str


async def test_record_changes_emit_their_events_in_the_same_batch(
    rig_factory: Any, store: SQLiteStore, receiver: Receiver
) -> None:
    spec = load_spec(EXAMPLE)
    resources = infer_resources(spec)
    events = catalogue(spec, resources)
    rig = rig_factory(VirtualClock())
    emit = ChangeEvents(rig.outbox, events, Generator(3), seed=3)
    await rig.outbox.add_endpoint(CONN, receiver.url())
    schema = resources.resources["experts"].schema
    assert schema is not None
    record = Generator(1).generate(schema.json, direction="response")
    record_key = Key(TWIN, CONN, "record:experts", record["id"])
    ops = await emit(Change("experts", "shortlisted", record, CONN))
    await store.write([Put(record_key, record), *ops])
    await rig.dispatcher.run_due()
    [got] = receiver.requests
    body = json.loads(got.body)
    assert body["type"] == "expert.shortlisted" and body["data"]["object"] == record
    assert events["expert.shortlisted"].schema is not None
    jsonschema.validate(body, events["expert.shortlisted"].schema.json)
    assert await emit(Change("experts", "archived", record, CONN)) == []
    full = ChangeEvents(Outbox(store, TWIN, rig.clock, max_pending=0), events, Generator(3))
    assert await full(Change("experts", "shortlisted", record, CONN)) == []  # skipped, logged


async def test_restart_delivers_every_message_at_least_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    path = tmp_path / "restart.db"
    clock = frozen()
    first = SQLiteStore(path)
    await first.open()
    outbox = Outbox(first, TWIN, clock)
    await outbox.add_endpoint(CONN, receiver.url())
    sent = [await outbox.emit(CONN, "call.completed", {"n": n}) for n in range(50)]
    dispatcher = Dispatcher(first, outbox, clock, concurrency=4)
    await dispatcher.start()
    await receiver.wait_for(10)
    await dispatcher.stop(grace=0)  # in-flight attempts are cut off mid-way
    pending = (await outbox.list_deliveries(CONN, status="pending", limit=1)).items
    assert pending, "everything was delivered before the stop; nothing to resume"
    stuck = await first.get(Key(TWIN, CONN, "delivery", pending[0]["id"]))
    assert stuck is not None  # a crashed worker's claim: a lease that has not expired yet
    lease = {"status": "delivering", "lease_until": T0 + 30, "attempts": 1}
    await first.write([Merge(stuck.key, lease, expect=stuck.version)])
    await first.close()

    second = SQLiteStore(path)
    await second.open()
    try:
        outbox = Outbox(second, TWIN, clock)
        dispatcher = Dispatcher(second, outbox, clock, concurrency=8)
        await dispatcher.run_due()
        delivered = {r.headers["webhook-id"] for r in receiver.requests}
        assert stuck.data["message"] not in delivered  # its lease still holds
        clock.advance(MIN_LEASE + 1)  # every lease has expired now
        await dispatcher.run_due()
        delivered = {r.headers["webhook-id"] for r in receiver.requests}
        assert delivered == set(sent)
        page = await outbox.list_deliveries(CONN, status="succeeded", limit=100)
        assert len(page.items) == 50
        await dispatcher.stop()
    finally:
        await second.close()


async def test_the_worker_wakes_when_events_are_enqueued(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(poll_interval=30)  # only a notification can wake it in time
    await rig.outbox.add_endpoint(CONN, receiver.url())
    await rig.dispatcher.start()
    await rig.outbox.emit(CONN, "project.created", {})
    with anyio.fail_after(5):
        await receiver.wait_for(1)
    ops, _ = await rig.outbox.enqueue_ops(CONN, "project.updated", {})
    await rig.store.write(ops)
    with anyio.fail_after(5):
        await receiver.wait_for(2)


# -- endpoint health --------------------------------------------------------------------------


async def test_a_failing_endpoint_is_disabled_under_the_clock(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(retry_schedule=[86400], max_attempts=20, failing_after=3, jitter=0)
    receiver.default = 500
    endpoint, _ = await rig.outbox.add_endpoint(CONN, receiver.url())
    for n in range(3):
        await rig.outbox.emit(CONN, "call.completed", {"n": n})
    await rig.dispatcher.run_due()
    state = await rig.outbox.get_endpoint(CONN, endpoint.id)
    assert (state.status, state.failures, state.failing_since) == ("failing", 3, T0)

    for day in range(1, 6):  # five days of failures (the default) disable it
        rig.clock.advance(86400)
        await rig.dispatcher.run_due()
        if day < 5:
            assert len(receiver.requests) == 3 * (day + 1)
    assert len(receiver.requests) == 15  # no attempt once it was due to be disabled
    assert (await rig.outbox.get_endpoint(CONN, endpoint.id)).status == "disabled"
    rows = (await rig.outbox.list_deliveries(CONN)).items
    assert {(r["status"], r["last_error"]) for r in rows} == {("dropped", "endpoint disabled")}
    await rig.outbox.emit(CONN, "call.completed", {"n": 9})
    assert len((await rig.outbox.list_deliveries(CONN)).items) == 3  # disabled: no delivery

    await rig.outbox.set_status(CONN, endpoint.id, "active")
    receiver.default = 200
    await rig.outbox.emit(CONN, "call.completed", {"n": 10})
    await rig.dispatcher.run_due()
    assert len(receiver.requests) == 16


async def test_success_resets_the_failure_count(rig_factory: Any, receiver: Receiver) -> None:
    rig = rig_factory(retry_schedule="github")
    receiver.statuses = [500, 500]
    endpoint, _ = await rig.outbox.add_endpoint(CONN, receiver.url())
    for _ in range(3):
        await rig.outbox.emit(CONN, "e", {})
        await rig.dispatcher.run_due()
    state = await rig.outbox.get_endpoint(CONN, endpoint.id)
    assert (state.status, state.failures) == ("active", 0)


# -- the delivery log -------------------------------------------------------------------------


async def test_the_log_masks_secrets_and_truncates_bodies(
    rig_factory: Any, receiver: Receiver
) -> None:
    rig = rig_factory(log_body_limit=1024)
    receiver.response_body = b"r" * 10_000
    endpoint, secret = await rig.outbox.add_endpoint(CONN, receiver.url())
    await rig.outbox.emit(CONN, "project.created", {"blob": "y" * 5000})
    await rig.dispatcher.run_due()
    delivery = await rig.only_delivery()
    [attempt] = delivery["attempt_log"]
    assert attempt["request_body_truncated"] and len(attempt["request_body"]) == 1024
    assert attempt["request_body_size"] == len(receiver.requests[0].body)
    assert attempt["response_body_truncated"] and len(attempt["response_body"]) == 4096
    sent = receiver.requests[0].headers["webhook-signature"].removeprefix("v1,")
    logged = attempt["request_headers"]["webhook-signature"]
    assert logged.startswith("v1,") and "…" in logged and sent not in logged
    text = json.dumps(delivery)
    raw_key = secret.removeprefix("whsec_")
    assert secret not in text and raw_key not in text and sent not in text

    view = endpoint.view()
    assert view["secrets"] == [mask_secret(secret)] and raw_key not in json.dumps(view)
    base64.b64decode(raw_key)  # the full secret was shown once, at creation


# -- queries and manual redelivery ------------------------------------------------------------


async def test_list_filter_and_redeliver_failed(rig_factory: Any, receiver: Receiver) -> None:
    rig = rig_factory(retry_schedule="github")  # one attempt, no automatic retry
    receiver.statuses = [500, 500]
    await rig.outbox.add_endpoint(CONN, receiver.url("/one"), scheme="github")
    second, _ = await rig.outbox.add_endpoint(CONN, receiver.url("/two"), events=["call.*"])
    await rig.outbox.emit(CONN, "project.created", {})
    await rig.outbox.emit(CONN, "call.completed", {})
    await rig.dispatcher.run_due()

    outbox = rig.outbox
    assert len((await outbox.list_deliveries(CONN)).items) == 3
    assert len((await outbox.list_deliveries(CONN, event="call.completed")).items) == 2
    assert len((await outbox.list_deliveries(CONN, endpoint=second.id)).items) == 1
    failed = (await outbox.list_deliveries(CONN, status="failed")).items
    assert len(failed) == 2
    page = await outbox.list_deliveries(CONN, limit=2)
    rest = await outbox.list_deliveries(CONN, limit=2, cursor=page.next_cursor)
    assert len(page.items) == 2 and len(rest.items) == 1 and rest.next_cursor is None
    assert not {r["id"] for r in page.items} & {r["id"] for r in rest.items}

    redone = await outbox.redeliver_failed(CONN, since=T0)
    assert sorted(redone) == sorted(r["id"] for r in failed)
    await rig.dispatcher.run_due()
    for delivery_id in redone:
        delivery = await outbox.get_delivery(CONN, delivery_id)
        assert (delivery["status"], delivery["attempts"]) == ("succeeded", 2)
        assert [a["trigger"] for a in delivery["attempt_log"]] == ["scheduled", "manual"]
    assert len(receiver.requests) == 5


async def test_callbacks_go_to_their_url_unsigned(rig_factory: Any, receiver: Receiver) -> None:
    rig = rig_factory()
    url = receiver.url("/callbacks/data")
    await rig.outbox.emit(
        "cb-conn", "post_streams.onData", {"userData": "x"}, url=url, method="put"
    )
    await rig.dispatcher.run_due()
    [got] = receiver.requests
    assert got.path == "/callbacks/data" and json.loads(got.body) == {"userData": "x"}
    assert not any("signature" in name for name in got.headers)
