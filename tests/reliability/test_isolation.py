"""Isolation: connections doing interleaved writes, faults and deliveries never see each other.

A seeded random schedule per connection (bounded), run concurrently against a real `apitwin serve`,
each connection with its own credentials and its own webhook receiver path. Every title carries its
connection's marker, every fault its connection's status; afterwards each connection's records,
journal, faults and deliveries are read back through the partner API, the admin API and MCP, and
must hold exactly that connection's own, and nothing of anyone else's.
"""

from __future__ import annotations

import json
import os
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx2 as httpx
import orjson
import pytest
from mcp import Client
from rig import Server, launch, record_figures, write_config

from mcp_clients import data

from conftest import PROJECT, Receiver, serve

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("APITWIN_ISOLATION_SEED", "20261122"))
STEPS = int(os.environ.get("APITWIN_ISOLATION_STEPS", "30"))  # per connection
CONNECTIONS = 4
FAULT_STATUS = [503, 502, 504, 500]  # one per connection: a leaked fault shows whose it is
STEP_KINDS = ["create_api", "create_api", "create_admin", "list_api", "list_api", "fault", "event"]


def marker(n: int) -> str:
    return f"iso-conn{n}-"


@dataclass
class Expected:
    """What one connection did, as its own thread saw it."""

    n: int
    key: str
    records: set[str] = field(default_factory=set)
    faults: set[str] = field(default_factory=set)
    api_calls: int = 0
    events: int = 0  # deliveries its endpoint should get
    pending_fault: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def cid(self) -> str:
        return f"research:conn{self.n}"


def run_schedule(server: Server, me: Expected, rng: random.Random) -> None:
    partner = {"Authorization": f"Bearer {me.key}"}
    admin = server.admin(f"conn{me.n}")
    with httpx.Client(timeout=20) as client:
        for step in range(STEPS):
            kind = rng.choice(STEP_KINDS)
            title = f"{marker(me.n)}{step}"
            if kind == "create_api":
                made = client.post(
                    server.partner("/projects"), json={**PROJECT, "title": title}, headers=partner
                )
                me.api_calls += 1
                _expect(me, made, 201)
                me.records.add(made.json()["id"])
                me.events += 1
            elif kind == "create_admin":
                made = client.post(
                    f"{admin}/records/projects", json={"data": {**PROJECT, "title": title}}
                )
                _expect(me, made, 201)
                me.records.add(made.json()["id"])
                me.events += 1
            elif kind == "list_api":
                listed = client.get(
                    server.partner("/projects"), params={"limit": 100}, headers=partner
                )
                me.api_calls += 1
                if me.pending_fault:
                    _expect(me, listed, FAULT_STATUS[me.n])
                    me.pending_fault = False
                else:
                    _expect(me, listed, 200)
                    _only_mine(me, listed.text, "a project list")
            elif kind == "fault" and not me.pending_fault:
                rule = {
                    "kind": "status",
                    "params": {"status": FAULT_STATUS[me.n]},
                    "operation": "listProjects",
                    "next": 1,
                }
                added = client.post(f"{admin}/faults", json=rule)
                _expect(me, added, 201)
                me.faults.add(added.json()["id"])
                me.pending_fault = True
            elif kind == "event" and me.records:
                record = rng.choice(sorted(me.records))
                fired = client.post(
                    f"{admin}/events",
                    json={
                        "event": "project.updated",
                        "record": {"resource": "projects", "id": record},
                    },
                )
                _expect(me, fired, 200, 201)
                me.events += 1


def _expect(me: Expected, answer: httpx.Response, *statuses: int) -> None:
    if answer.status_code not in statuses:
        raise AssertionError(
            f"conn{me.n}: {answer.request.url} → {answer.status_code} {answer.text}"
        )


def _only_mine(me: Expected, text: str, where: str) -> None:
    others = [marker(n) for n in range(CONNECTIONS) if n != me.n]
    crossed = [m for m in others if m in text]
    if crossed:
        me.problems.append(f"conn{me.n}: {where} shows {crossed}")


@pytest.fixture
def hooks() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as origin:
        yield app, origin


async def test_connections_never_see_each_others_records_journal_faults_or_deliveries(
    tmp_path: Path, hooks: tuple[Receiver, str]
) -> None:
    receiver, origin = hooks
    people = [Expected(n, f"ak_isolation_conn{n}_{SEED}") for n in range(CONNECTIONS)]
    connections = [
        {"client_id": f"conn{p.n}", "api_key": p.key, "webhook_url": f"{origin}/hooks/conn{p.n}"}
        for p in people
    ]
    config = write_config(tmp_path / "apitwin.yaml", tmp_path / "twin.db", connections)
    server = launch(config, tmp_path / "server.log")
    try:
        baseline = {p.n: _partner_ids(server, p) for p in people}
        failures: list[BaseException] = []

        def run(person: Expected) -> None:
            try:
                run_schedule(server, person, random.Random(f"{SEED}:{person.n}"))
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=run, args=(p,)) for p in people]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        expected_deliveries = sum(p.events for p in people)
        await anyio.to_thread.run_sync(receiver.wait_for, expected_deliveries, 30.0)

        async with Client(f"{server.origin}/mcp") as mcp:
            for p in people:
                await _read_back(server, mcp, p, baseline[p.n])
        by_path = _deliveries_by_path(receiver)
        for p in people:
            got = by_path.get(f"/hooks/conn{p.n}", [])
            assert len(got) == p.events, (p.n, len(got), p.events)
            for body in got:
                _only_mine(p, body, "a webhook")
                assert marker(p.n) in body or _is_seed(body), body[:300]
        problems = [problem for p in people for problem in p.problems]
        assert not problems, problems
    finally:
        server.stop()
    record_figures(
        "isolation",
        {
            "seed": SEED,
            "connections": CONNECTIONS,
            "steps": STEPS * CONNECTIONS,
            "records_created": sum(len(p.records) for p in people),
            "faults_added": sum(len(p.faults) for p in people),
            "partner_api_calls": sum(p.api_calls for p in people),
            "deliveries": sum(p.events for p in people),
            "crossings": 0,
        },
    )


def _is_seed(body: str) -> bool:
    # Example-seeded projects carry no marker; an event about one still belongs to its connection.
    return "iso-conn" not in body


def _partner_ids(server: Server, me: Expected) -> set[str]:
    listed = httpx.get(
        server.partner("/projects"),
        params={"limit": 100},
        headers={"Authorization": f"Bearer {me.key}"},
    )
    assert listed.status_code == 200, listed.text
    return {p["id"] for p in listed.json()["data"]}


async def _read_back(server: Server, mcp: Client, me: Expected, baseline: set[str]) -> None:
    own = baseline | me.records
    admin = server.admin(f"conn{me.n}")
    if me.pending_fault:  # its last fault has not fired yet: it does now, for it alone
        fired = httpx.get(
            server.partner("/projects"), headers={"Authorization": f"Bearer {me.key}"}
        )
        assert fired.status_code == FAULT_STATUS[me.n], fired.text
        me.api_calls += 1
    # Records: the partner API, the admin API, MCP.
    assert await anyio.to_thread.run_sync(_partner_ids, server, me) == own
    listed = httpx.get(f"{admin}/records/projects", params={"limit": 100})
    assert {r["id"] for r in listed.json()["records"]} == own, listed.text[:500]
    _only_mine(me, listed.text, "admin records")
    tool = data(
        await mcp.call_tool(
            "list_records", {"connection_id": me.cid, "resource": "projects", "limit": 100}
        )
    )
    assert {r["id"] for r in tool["records"]} == own
    _only_mine(me, json.dumps(tool), "MCP list_records")

    # The journal: exactly this connection's partner API calls (and two reads of this test's).
    journal = httpx.get(f"{admin}/requests", params={"limit": 500})
    entries = journal.json()["requests"]
    assert len(entries) == me.api_calls + 2, (me.n, len(entries), me.api_calls)
    _only_mine(me, journal.text, "the journal")
    count = httpx.get(f"{admin}/requests/count").json()["count"]
    assert count == me.api_calls + 2
    tool = data(await mcp.call_tool("list_requests", {"connection_id": me.cid, "limit": 100}))
    _only_mine(me, json.dumps(tool), "MCP list_requests")

    # Faults: its own rules only, and each fired for it alone.
    faults = httpx.get(f"{admin}/faults").json()
    assert {f["id"] for f in faults["faults"]} == me.faults, faults
    tool = data(await mcp.call_tool("list_faults", {"connection_id": me.cid}))
    assert {f["id"] for f in tool["faults"]} == me.faults
    for rule in faults["faults"]:
        assert rule["params"]["status"] == FAULT_STATUS[me.n], rule

    # Deliveries: one per event it caused, to its own endpoint.
    deliveries = httpx.get(f"{admin}/deliveries", params={"limit": 100}).json()["deliveries"]
    assert len(deliveries) == me.events, (me.n, len(deliveries), me.events)
    assert {d["status"] for d in deliveries} <= {"succeeded", "pending", "delivering"}
    tool = data(await mcp.call_tool("list_deliveries", {"connection_id": me.cid, "limit": 100}))
    assert {d["id"] for d in tool["deliveries"]} == {d["id"] for d in deliveries}


def _deliveries_by_path(receiver: Receiver) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    with receiver.arrived:
        for path, (_, body) in zip(receiver.paths, receiver.received, strict=True):
            orjson.loads(body)  # a JSON webhook, not an error page
            found.setdefault(path, []).append(body.decode())
    return found
