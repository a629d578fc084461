"""Races on demand, seen by a real client over loopback and a real webhook receiver.

A webhook that overtakes the API answer that caused it; several events for one record delivered
in parallel; a change landing between the client's read and its write (ETag / If-Match).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx2 as httpx
import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from conftest import EXAMPLE, EXPERT, PROJECT, Running, serve, serve_twin

pytestmark = pytest.mark.anyio
_names = itertools.count()


@pytest.fixture(scope="module")
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


class Holding:
    """A receiver that notes each webhook's arrival in a shared order of events, then keeps its
    answer back until the test releases it (bounded)."""

    def __init__(self, order: list[str], lock: threading.Lock) -> None:
        self.order, self.lock = order, lock
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        with self.lock:
            self.order.append("webhook")
            self.received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        self.arrived.set()
        for _ in range(1000):  # at most 10 s
            if self.release.is_set():
                break
            await anyio.sleep(0.01)
        await _answer(send)


class Gate:
    """A receiver that answers nobody until ``expected`` requests are in flight together (or a
    bounded wait ends), and records the most that were: sent at once, or one after another."""

    def __init__(self, expected: int, order: list[str]) -> None:
        self.expected, self.order = expected, order
        self.inflight = 0
        self.peak = 0
        self.received: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await _body(receive)
        self.order.append("webhook")
        self.received.append(({k.decode(): v.decode() for k, v in scope["headers"]}, body))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        for _ in range(500):  # at most 5 s
            if self.peak >= self.expected:
                break
            await anyio.sleep(0.01)
        self.inflight -= 1
        await _answer(send)


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _answer(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


class Client:
    """A connection of the system under test: its HTTP client and the control handle."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.control = running.app.control
        self.client_id = f"race-{next(_names)}"

    async def connect(self, webhook_url: str | None = None) -> dict[str, Any]:
        view = await self.control.connect(self.client_id, webhook_url=webhook_url)
        self.handle = view["connection_id"]
        if view.get("created"):  # the key is shown in full once, when the connection is made
            self.http = httpx.Client(
                base_url=self.running.url,
                timeout=15,
                headers={"Authorization": f"Bearer {view['api_key']}"},
            )
        return view

    async def call(self, method: str, path: str, **options: Any) -> httpx.Response:
        return await anyio.to_thread.run_sync(lambda: self.http.request(method, path, **options))

    async def fault(self, rule: dict[str, Any]) -> str:
        return str((await self.control.add_fault(self.handle, {"next": 1, **rule}))["id"])

    async def journal(self, operation: str) -> dict[str, Any]:
        page = await self.control.list_requests(self.handle, limit=1, operation=operation)
        return dict(page["requests"][0])

    async def deliveries(self) -> list[dict[str, Any]]:
        page = await self.control.list_deliveries(self.handle, limit=100)
        return [await self.control.get_delivery(self.handle, d["id"]) for d in page["deliveries"]]

    async def until(self, done: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + 5
        while not await done():
            assert time.monotonic() < deadline, "timed out"
            await self.running.twin.dispatcher.run_due()
            await anyio.sleep(0.02)


def error_schema(running: Running, op_id: str, status: str) -> dict[str, Any]:
    op = running.twin.spec.operation(op_id)
    assert op is not None
    schema = op.responses[status].media["application/json"].schema
    assert schema is not None
    return schema.json


# -- a webhook before the API response that caused it --------------------------------------------


async def test_webhook_arrives_before_the_response_of_the_create(twin: Running) -> None:
    order: list[str] = []
    lock = threading.Lock()
    hooks = Holding(order, lock)
    qa = Client(twin)
    with serve(hooks) as origin:
        view = await qa.connect(origin + "/hooks")
        rule = await qa.fault({"kind": "webhook_before_response", "operation": "createProject"})

        def create() -> httpx.Response:
            response = qa.http.post("/projects", json={**PROJECT, "status": "open"})
            with lock:
                order.append("response")
            return response

        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(create)
            assert await anyio.to_thread.run_sync(hooks.arrived.wait, 10)
            # The receiver holds its answer, and the twin holds the API answer until it has one.
            with lock:
                assert order == ["webhook"]
            hooks.release.set()
            response = await anyio.to_thread.run_sync(lambda: pending.result(15))
    assert response.status_code == 201
    assert order == ["webhook", "response"]
    [(headers, body)] = hooks.received
    event = Webhook(view["webhook"]["secret"]).verify(body, headers)
    assert event["type"] == "project.created"
    assert event["data"]["object"]["id"] == response.json()["id"]
    entry = await qa.journal("createProject")
    assert (entry["fault"], entry["status"]) == (rule, 201)
    [delivery] = await qa.deliveries()
    assert delivery["status"] == "succeeded"
    [attempt] = delivery["attempt_log"]
    assert (attempt["fault"], attempt["fault_kind"]) == (rule, "webhook_before_response")


async def test_webhook_before_response_only_waits_on_writes(twin: Running) -> None:
    qa = Client(twin)
    await qa.connect()
    rule = await qa.fault({"kind": "webhook_before_response"})
    assert (await qa.call("GET", "/projects")).status_code == 200
    assert (await qa.journal("listProjects"))["fault"] is None
    created = await qa.call("POST", "/projects", json=PROJECT)  # no endpoint: nothing to wait on
    assert created.status_code == 201
    assert (await qa.journal("createProject"))["fault"] == rule


# -- several events for one record, in parallel ---------------------------------------------------


async def test_parallel_delivers_the_events_of_one_record_at_once(twin: Running) -> None:
    order: list[str] = []
    gate = Gate(3, order)
    qa = Client(twin)
    await qa.connect()
    created = await qa.call("POST", "/projects", json=PROJECT)  # before the endpoint: no event
    project = created.json()["id"]
    with serve(gate) as origin:
        view = await qa.connect(origin + "/hooks")
        rule = await qa.fault({"kind": "parallel", "params": {"count": 3}})
        record = {"resource": "projects", "id": project}
        for n in range(3):
            order.append(f"event {n}")
            await qa.control.trigger_event(qa.handle, "project.updated", record=record)

        async def all_sent() -> bool:
            return len(gate.received) >= 3

        await qa.until(all_sent)
    # Held until the third event existed, then all three in flight before any was answered.
    assert order[:3] == ["event 0", "event 1", "event 2"]
    assert gate.peak == 3
    verify = Webhook(view["webhook"]["secret"]).verify
    payloads = [verify(body, headers) for headers, body in gate.received]
    assert {p["data"]["object"]["id"] for p in payloads} == {project}
    attempts = [d["attempt_log"][0] for d in await qa.deliveries()]
    assert len(attempts) == 3
    assert {(a["fault"], a["fault_kind"]) for a in attempts} == {(rule, "parallel")}
    assert len({a["fault_group"] for a in attempts}) == 1


# -- an update between the client's read and its write (ETag / If-Match) -------------------------


async def project(qa: Client) -> tuple[str, str]:
    """A new project's id and the ETag its read answers."""
    created = await qa.call("POST", "/projects", json=PROJECT)
    assert created.status_code == 201
    read = await qa.call("GET", f"/projects/{created.json()['id']}")
    assert read.headers["etag"] == created.headers["etag"]
    return created.json()["id"], read.headers["etag"]


async def test_if_match_guards_writes_with_the_etag_of_the_read(twin: Running) -> None:
    qa = Client(twin)
    await qa.connect()
    project_id, tag = await project(qa)
    path = f"/projects/{project_id}"
    changed = await qa.call("PATCH", path, json={"title": "Renamed"}, headers={"If-Match": tag})
    assert changed.status_code == 200
    fresh = changed.headers["etag"]
    assert fresh != tag
    stale = await qa.call("PATCH", path, json={"title": "Lost update"}, headers={"If-Match": tag})
    assert stale.status_code == 412
    jsonschema.validate(stale.json(), error_schema(twin, "updateProject", "412"))
    assert stale.json()["error"]["code"] == "precondition_failed"
    current = await qa.call("GET", path)
    assert (current.json()["title"], current.headers["etag"]) == ("Renamed", fresh)
    assert (await qa.call("DELETE", path, headers={"If-Match": tag})).status_code == 412
    assert (await qa.call("GET", path)).status_code == 200
    anything = await qa.call("PATCH", path, json={"title": "Any"}, headers={"If-Match": "*"})
    assert anything.status_code == 200


async def test_concurrent_update_lands_between_the_read_and_the_write(twin: Running) -> None:
    qa = Client(twin)
    await qa.connect()
    project_id, tag = await project(qa)
    path = f"/projects/{project_id}"
    changes = {"title": "Changed by someone else"}
    rule = await qa.fault(
        {"kind": "concurrent_update", "operation": "updateProject", "params": {"changes": changes}}
    )
    write = await qa.call("PATCH", path, json={"title": "Mine"}, headers={"If-Match": tag})
    assert write.status_code == 412
    jsonschema.validate(write.json(), error_schema(twin, "updateProject", "412"))
    entry = await qa.journal("updateProject")
    assert (entry["fault"], entry["fault_kind"], entry["status"]) == (
        rule,
        "concurrent_update",
        412,
    )
    now = await qa.call("GET", path)
    assert now.json()["title"] == "Changed by someone else"
    assert now.headers["etag"] != tag
    # Read again, write with the new ETag: it lands.
    retry = await qa.call(
        "PATCH", path, json={"title": "Mine"}, headers={"If-Match": now.headers["etag"]}
    )
    assert (retry.status_code, retry.json()["title"]) == (200, "Mine")


async def test_concurrent_update_without_if_match_is_a_conflict_where_the_spec_has_409(
    twin: Running,
) -> None:
    qa = Client(twin)
    await qa.connect()
    project_id, tag = await project(qa)
    rule = await qa.fault({"kind": "concurrent_update", "operation": "updateProject"})
    write = await qa.call("PATCH", f"/projects/{project_id}", json={"title": "Mine"})
    assert write.status_code == 409
    jsonschema.validate(write.json(), error_schema(twin, "updateProject", "409"))
    assert (await qa.journal("updateProject"))["fault"] == rule
    after = await qa.call("GET", f"/projects/{project_id}")
    assert after.json()["title"] == PROJECT["title"]  # the client's write did not land
    assert after.headers["etag"] != tag  # the other change did


async def test_a_write_that_declares_only_409_answers_409_to_a_stale_if_match(
    twin: Running,
) -> None:
    qa = Client(twin)
    await qa.connect()
    project_id, _ = await project(qa)
    opened = await qa.call("PATCH", f"/projects/{project_id}", json={"status": "open"})
    assert opened.status_code == 200
    expert = await qa.call("POST", f"/projects/{project_id}/experts", json=EXPERT)
    assert expert.status_code == 201, expert.text
    path = f"/projects/{project_id}/experts/{expert.json()['id']}"
    stale = await qa.call(
        "PATCH", path, json={"headline": "Changed"}, headers={"If-Match": '"v999"'}
    )
    assert stale.status_code == 409
    jsonschema.validate(stale.json(), error_schema(twin, "updateProjectExpert", "409"))
