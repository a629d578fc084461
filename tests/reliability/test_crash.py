"""Crash safety: kill -9 in the middle of a burst of writes and deliveries, and a full disk.

A real `apitwin serve` on a SQLite file, clients writing concurrently through the partner API,
deliveries flowing to a real receiver. After the kill the file must pass `PRAGMA integrity_check`,
hold every write a client was told succeeded, hold no change without the events committed with it,
and, once restarted, deliver every accepted event at least once. On a full disk, writes must fail
with a clear 507 while reads keep working, and succeed again once there is room, in the same
process and after a kill -9 while full.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest
from mcp import Client
from rig import Server, launch, record_figures, write_config

from mcp_clients import error_text

from conftest import EXPERT, PROJECT, Receiver, serve

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(os.name != "posix", reason="kill -9 and resource limits"),
]

KEY = "ak_crash_acme_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
HOME = "prj_CrashHome001"  # a fixture project the experts are submitted to
WORKERS = int(os.environ.get("APITWIN_CRASH_WORKERS", "6"))
KILL_AFTER = int(os.environ.get("APITWIN_CRASH_WRITES", "150"))  # acknowledged writes, then kill
ROUNDS = 400  # per worker at most: the kill comes long before
RULES = """
rules:
  - {after: submitExpert, status: [201], emit: expert.received}
fixtures:
  projects:
    - {id: prj_CrashHome001, title: Home, brief: Experts go here, industry: industrials,
       geographies: [DE], status: open}
"""


@dataclass
class Acked:
    """What clients were told succeeded."""

    projects: list[str] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)
    shortlisted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # answers that were not success
    lock: threading.Lock = field(default_factory=threading.Lock)
    enough: threading.Event = field(default_factory=threading.Event)

    def add(self, kind: str, value: str) -> None:
        with self.lock:
            getattr(self, kind).append(value)
            if self.count() >= KILL_AFTER:
                self.enough.set()

    def count(self) -> int:
        return len(self.projects) + len(self.experts) + len(self.shortlisted)


def _burst(server: Server, worker: int, acked: Acked, stop: threading.Event) -> None:
    """One client: create a project, submit an expert, shortlist it; until the server dies."""
    home = server.partner(f"/projects/{HOME}/experts")
    with httpx.Client(headers=AUTH, timeout=10) as client:
        for n in range(ROUNDS):
            if stop.is_set():
                return
            try:
                made = client.post(
                    server.partner("/projects"), json={**PROJECT, "title": f"W{worker} P{n}"}
                )
                if made.status_code != 201:
                    break
                acked.add("projects", made.json()["id"])
                made = client.post(home, json={**EXPERT, "name": f"Expert {worker}-{n}"})
                if made.status_code != 201:
                    break
                expert_id = made.json()["id"]
                acked.add("experts", expert_id)
                made = client.post(f"{home}/{expert_id}/shortlist")
                if made.status_code != 200:
                    break
                acked.add("shortlisted", expert_id)
            except httpx.TransportError:
                return  # the server is gone: whatever was not answered was not acknowledged
        else:
            return
    with acked.lock:
        acked.errors.append(f"{made.status_code} {made.text[:500]}")
    acked.enough.set()


@dataclass
class Snapshot:
    """The database file as the killed server left it."""

    integrity: str
    records: dict[str, dict[str, dict[str, Any]]]  # kind -> id -> data
    messages: dict[str, dict[str, Any]]  # message id -> event payload
    events: dict[str, str]  # message id -> event type
    deliveries: dict[str, list[str]]  # message id -> delivery statuses


def snapshot(db: Path, conn: str = "acme") -> Snapshot:
    """Read the file directly, as a fresh process would (SQLite recovers the WAL on open)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        rows = con.execute("SELECT kind, id, data FROM items WHERE conn = ?", (conn,)).fetchall()
    found = Snapshot(integrity, {}, {}, {}, {})
    for kind, item_id, text in rows:
        data = orjson.loads(text)
        if kind.startswith("record:"):
            found.records.setdefault(kind.removeprefix("record:"), {})[item_id] = data
        elif kind == "message":
            found.messages[item_id] = orjson.loads(data["body"])
            found.events[item_id] = data["event"]
        elif kind == "delivery":
            found.deliveries.setdefault(data["message"], []).append(data["status"])
    return found


def delivered(hooks: Receiver) -> dict[str, int]:
    """Message id -> times the receiver answered it 200."""
    counts: dict[str, int] = {}
    with hooks.arrived:
        for headers, _ in hooks.received:
            if Receiver.status_of(headers) == 200:
                counts[headers["webhook-id"]] = counts.get(headers["webhook-id"], 0) + 1
    return counts


@pytest.fixture
def hooks() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as origin:
        yield app, origin


def test_kill_9_mid_burst_loses_nothing_acknowledged_and_delivers_every_event(
    tmp_path: Path, hooks: tuple[Receiver, str]
) -> None:
    receiver, origin = hooks
    receiver.statuses = [200, 200, 200, 503] * 2000  # some attempts fail: retries are in flight
    db = tmp_path / "twin.db"
    conn = {"client_id": "acme", "api_key": KEY, "webhook_url": f"{origin}/hooks"}
    config = write_config(tmp_path / "apitwin.yaml", db, [conn], extra=RULES)
    server = launch(config, tmp_path / "server.log")
    acked = Acked()
    stop = threading.Event()
    workers = [
        threading.Thread(target=_burst, args=(server, n, acked, stop), daemon=True)
        for n in range(WORKERS)
    ]
    try:
        for worker in workers:
            worker.start()
        assert acked.enough.wait(120), f"only {acked.count()} writes acknowledged"
        assert not acked.errors, acked.errors
        receiver.wait_for(1, timeout=30)  # deliveries are flowing when the kill comes
        server.kill()  # while every worker has a request in flight
    finally:
        stop.set()
        server.kill()
        for worker in workers:
            worker.join(30)
    with acked.lock:
        projects, experts = set(acked.projects), set(acked.experts)
        shortlisted = set(acked.shortlisted)
    before = len(receiver.received)

    found = snapshot(db)
    assert found.integrity == "ok"
    stored_projects = found.records.get("projects", {})
    stored_experts = found.records.get("experts", {})
    assert projects <= set(stored_projects), "acknowledged projects are missing"
    assert experts <= set(stored_experts), "acknowledged experts are missing"
    for expert_id in shortlisted:
        assert stored_experts[expert_id]["status"] == "shortlisted"

    # No half-applied batch: a change and its events committed together or not at all.
    about: dict[tuple[str, str], str] = {}  # (event type, record id) -> message id
    for msg_id, payload in found.messages.items():
        record_id = payload["data"]["object"]["id"]
        about[(found.events[msg_id], record_id)] = msg_id
        kind = "projects" if found.events[msg_id].startswith("project.") else "experts"
        assert record_id in found.records.get(kind, {}), f"{msg_id} is about no stored record"
        # Seeding runs before the configured endpoint exists: the fixture's event has no target.
        assert found.deliveries.get(msg_id) or record_id == HOME, f"{msg_id} has no delivery"
    assert set(found.deliveries) <= set(found.messages), "a delivery outlived its message"
    for project_id in stored_projects:
        if project_id != HOME:
            assert ("project.created", project_id) in about, f"{project_id} lacks its event"
    for expert_id, data in stored_experts.items():
        if data["status"] == "shortlisted":
            assert ("expert.shortlisted", expert_id) in about, f"{expert_id} lacks its event"
    for expert_id in experts:  # the rule's event is written before the 201 is sent
        assert ("expert.received", expert_id) in about, f"{expert_id} lacks expert.received"

    # Restarted, the twin delivers every accepted event at least once.
    accepted = {msg_id for msg_id in found.messages if found.deliveries.get(msg_id)}
    receiver.statuses = []
    server = launch(config, tmp_path / "server.log")
    try:
        for _ in range(300):
            if accepted <= set(delivered(receiver)):
                break
            moved = httpx.post(f"{server.admin('acme')}/clock/advance", json={"seconds": 3600})
            assert moved.status_code == 200, moved.text
            time.sleep(0.1)
        counts = delivered(receiver)
        missing = accepted - set(counts)
        assert not missing, f"{len(missing)} accepted events never delivered"
        with httpx.Client(headers=AUTH) as client:
            for project_id in sorted(projects)[:50]:
                assert client.get(server.partner(f"/projects/{project_id}")).status_code == 200
    finally:
        server.stop()
    assert snapshot(db).integrity == "ok"
    record_figures(
        "crash",
        {
            "workers": WORKERS,
            "acknowledged_writes": len(projects) + len(experts) + len(shortlisted),
            "records_found": len(stored_projects) + len(stored_experts) - 1,
            "events_accepted": len(accepted),
            "events_delivered": len(accepted & set(counts)),
            "redelivered_after_restart": sum(max(0, n - 1) for n in counts.values()),
            "deliveries_received_before_kill": before,
            "integrity_check": found.integrity,
        },
    )


# -- a full disk --------------------------------------------------------------------------------


class Disk:
    """Room for the database that the test can take away and give back.

    As root: a small tmpfs, filled with a ballast file (writes fail with ENOSPC). Otherwise: the
    server's file size limit (RLIMIT_FSIZE, SIGXFSZ ignored), lowered to nothing and raised again
    from outside (writes fail with EFBIG).
    """

    def __init__(self, root: Path, method: str) -> None:
        self.dir = root / "disk"
        self.dir.mkdir()
        self.mounted = False
        self.server: Server | None = None
        if method == "tmpfs":
            if os.geteuid() != 0 or not shutil.which("mount"):
                pytest.skip("mounting a tmpfs needs root")
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(self.dir)],
                capture_output=True,
                check=False,
            )
            if result.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
            self.mounted = True

    @property
    def kind(self) -> str:
        return "tmpfs (ENOSPC)" if self.mounted else "RLIMIT_FSIZE (EFBIG)"

    def preexec(self) -> None:
        if not self.mounted:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death

    def fill(self) -> None:
        if self.mounted:
            self._empty_wal()
            ballast = self.dir / "ballast"
            with contextlib.suppress(OSError), ballast.open("wb", buffering=0) as out:
                for _ in range(10_000):  # 4 MiB at most, in 4 KiB steps
                    out.write(b"\0" * 4096)
        else:
            assert self.server is not None
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.prlimit(self.server.process.pid, resource.RLIMIT_FSIZE, (0, hard))

    def _empty_wal(self) -> None:
        """Checkpoint the server's WAL into the database and truncate it, from outside. Left
        with frames in it, the WAL is truncated by the server's next write once its checkpoint
        thread has caught up, and the space that frees lets that write succeed on a "full"
        disk; empty, every write needs new space."""
        for _ in range(50):
            with contextlib.closing(sqlite3.connect(self.dir / "twin.db", timeout=10)) as con:
                busy, _, _ = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the server's WAL could not be checkpointed")

    def free(self) -> None:
        if self.mounted:
            (self.dir / "ballast").unlink()
        else:
            assert self.server is not None
            if self.server.process.poll() is None:  # a new process starts with room anyway
                limits = resource.getrlimit(resource.RLIMIT_FSIZE)
                resource.prlimit(self.server.process.pid, resource.RLIMIT_FSIZE, limits)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.dir)], capture_output=True, check=False)


@pytest.fixture(params=["tmpfs", "rlimit"])
def disk(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Disk]:
    found = Disk(tmp_path, request.param)
    try:
        yield found
    finally:
        found.close()


def _project(client: httpx.Client, server: Server, title: str) -> httpx.Response:
    return client.post(server.partner("/projects"), json={**PROJECT, "title": title})


async def test_a_full_disk_fails_writes_clearly_keeps_reads_and_recovers(
    tmp_path: Path, disk: Disk, hooks: tuple[Receiver, str]
) -> None:
    receiver, origin = hooks
    db = disk.dir / "twin.db"
    conn = {"client_id": "acme", "api_key": KEY, "webhook_url": f"{origin}/hooks"}
    config = write_config(tmp_path / "apitwin.yaml", db, [conn])
    log = tmp_path / "server.log"  # outside the small disk
    server = disk.server = launch(config, log, preexec_fn=disk.preexec)
    refused = 0
    acked: set[str] = set()
    try:
        with httpx.Client(headers=AUTH, timeout=10) as client:
            before = [_project(client, server, f"Before {n}") for n in range(5)]
            assert [r.status_code for r in before] == [201] * 5
            acked |= {r.json()["id"] for r in before}
            _wait_for_deliveries(receiver, acked)  # no write of the server's own after the fill

            disk.fill()
            # Partner API writes: 507, the cause named, nothing applied.
            for n in range(5):
                answer = _project(client, server, f"Full {n}")
                assert answer.status_code == 507, answer.text
                assert answer.headers["content-type"] == "application/problem+json"
                assert answer.json()["title"] == "Insufficient Storage"
                assert "full" in answer.json()["detail"]
                assert "nothing of this change was applied" in answer.json()["detail"]
                refused += 1
            # The admin API: the same, as a problem document.
            admin = httpx.post(
                f"{server.admin('acme')}/records/projects",
                json={"data": {**PROJECT, "title": "Admin while full"}},
            )
            assert admin.status_code == 507, admin.text
            assert admin.headers["content-type"].startswith("application/problem+json")
            assert admin.json()["type"] == "urn:apitwin:storage_full"
            assert "full" in admin.json()["detail"]
            refused += 1
            # MCP: a tool error that says so.
            async with Client(f"{server.origin}/mcp") as mcp:
                result = await mcp.call_tool(
                    "create_record",
                    {
                        "connection_id": "research:acme",
                        "resource": "projects",
                        "data": {**PROJECT, "title": "MCP while full"},
                    },
                )
                assert "full" in error_text(result)
                refused += 1
            # Reads still work, and see exactly what was written before.
            listed = client.get(server.partner("/projects"), params={"limit": 100})
            assert listed.status_code == 200, listed.text
            titles = {p["title"] for p in listed.json()["data"]}
            assert not any(t.startswith("Full") or "while full" in t for t in titles)
            assert acked <= {p["id"] for p in listed.json()["data"]}
            assert server.process.poll() is None  # no crash

            # Room again: the same process writes again.
            disk.free()
            after = _project(client, server, "After")
            assert after.status_code == 201, after.text
            acked.add(after.json()["id"])
            _wait_for_deliveries(receiver, acked)

            # Full again, and killed while full: nothing acknowledged is lost.
            disk.fill()
            assert _project(client, server, "Full again").status_code == 507
            refused += 1
            server.kill()
            disk.free()
            server = disk.server = launch(config, log, preexec_fn=disk.preexec)
            restarted = _project(client, server, "After restart")
            assert restarted.status_code == 201, restarted.text
            acked.add(restarted.json()["id"])
            listed = client.get(server.partner("/projects"), params={"limit": 100})
            assert acked <= {p["id"] for p in listed.json()["data"]}
            # Every accepted event arrives: the dispatcher outlived the full disk.
            for _ in range(100):
                if _delivered_projects(receiver) >= acked:
                    break
                httpx.post(f"{server.admin('acme')}/clock/advance", json={"seconds": 3600})
                time.sleep(0.1)
            assert _delivered_projects(receiver) >= acked
    finally:
        server.stop()
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        titles = {
            orjson.loads(text)["title"]
            for (text,) in con.execute("SELECT data FROM items WHERE kind = 'record:projects'")
        }
    assert not any(t.startswith("Full") or "while full" in t for t in titles)
    assert {"After", "After restart"} <= titles
    log_text = log.read_text(errors="replace")
    assert "Traceback" not in log_text, log_text[-3000:]
    record_figures(
        f"disk_full_{'tmpfs' if disk.mounted else 'rlimit'}",
        {"method": disk.kind, "writes_refused_with_507": refused, "acknowledged_kept": len(acked)},
    )


def _wait_for_deliveries(receiver: Receiver, projects: set[str]) -> None:
    deadline = time.monotonic() + 10
    while not _delivered_projects(receiver) >= projects:
        assert time.monotonic() < deadline, "the webhooks of the projects created never came"
        time.sleep(0.02)
    time.sleep(0.3)  # the attempts' outcomes are recorded just after the receiver answered


def _delivered_projects(receiver: Receiver) -> set[str]:
    with receiver.arrived:
        return {
            orjson.loads(body)["data"]["object"]["id"]
            for headers, body in receiver.received
            if Receiver.status_of(headers) == 200
        }
