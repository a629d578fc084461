"""Two `apitwin serve` processes on one PostgreSQL database behave as one twin.

Each test starts two real replicas (subprocesses on free loopback ports) on a fresh database of
the server named by APITWIN_TEST_POSTGRES_URL (see tests/pgserver.py), and drives them over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from pgserver import fresh_database

from conftest import EXAMPLE, EXPERT, Receiver, serve

pytestmark = pytest.mark.skipif(os.name != "posix", reason="kill -9")

PROJECT_ID = "prj_SharedTwin01"
KEYS = {"acme": "ak_replica_acme", "globex": "ak_replica_globex"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    origin: str
    log: Path

    def api(self, conn: str = "acme") -> str:
        return f"{self.origin}/_apitwin/api/connections/research:{conn}"

    def partner(self, path: str) -> str:
        return f"{self.origin}/partner/v1{path}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def _config(tmp_path: Path, db: str, hooks: str) -> Path:
    config = tmp_path / "apitwin.yaml"
    config.write_text(
        textwrap.dedent(f"""
        server: {{db: "{db}"}}
        twins:
          - name: research
            spec: {EXAMPLE}
            rules:
              - {{after: submitExpert, status: [201], emit: expert.received}}
            fixtures:
              projects:
                - {{id: {PROJECT_ID}, title: Shared, brief: One database, industry: industrials,
                    geographies: [DE], status: open}}
            connections:
              - client_id: acme
                api_key: {KEYS["acme"]}
                client_secret: cs_replica_acme
                webhook_url: {hooks}/hooks
              - client_id: globex
                api_key: {KEYS["globex"]}
    """)
    )
    return config


def _launch(config: Path, tmp_path: Path, name: str) -> Replica:
    port = _free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "apitwin",
                "serve",
                "--config",
                str(config),
                "--port",
                f"{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Replica(process, f"http://127.0.0.1:{port}", log)


def _wait_healthy(replica: Replica) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            break
        try:
            if httpx.get(f"{replica.origin}/_apitwin/health").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError(f"replica did not start:\n{replica.log.read_text()[-3000:]}")


@contextmanager
def replicas(tmp_path: Path, hooks: str) -> Iterator[tuple[Replica, Replica]]:
    """Two replicas started at the same moment on one empty database."""
    with fresh_database() as db, ExitStack() as stack:
        config = _config(tmp_path, db, hooks)
        pair = (_launch(config, tmp_path, "a"), _launch(config, tmp_path, "b"))
        for replica in pair:
            stack.callback(_stop, replica)
        for replica in pair:
            _wait_healthy(replica)
        yield pair


def _stop(replica: Replica) -> None:
    if replica.process.poll() is None:
        replica.process.terminate()
        try:
            replica.process.wait(15)
        except subprocess.TimeoutExpired:
            replica.kill()


def _auth(conn: str = "acme") -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[conn]}"}


def _expert(name: str) -> dict[str, Any]:
    return {**EXPERT, "name": name}


def test_two_replicas_share_state_connections_faults_journal_and_clock(tmp_path: Path) -> None:
    hooks = Receiver()
    with serve(hooks) as receiver, replicas(tmp_path, receiver) as (a, b):
        # A record created through A is read through B.
        created = httpx.post(
            a.partner(f"/projects/{PROJECT_ID}/experts"), json=_expert("Ada"), headers=_auth()
        )
        assert created.status_code == 201, created.text
        expert_id = created.json()["id"]
        read = httpx.get(a.partner(f"/projects/{PROJECT_ID}/experts/{expert_id}"), headers=_auth())
        through_b = httpx.get(
            b.partner(f"/projects/{PROJECT_ID}/experts/{expert_id}"), headers=_auth()
        )
        assert through_b.status_code == 200 and through_b.json() == read.json()

        # An OAuth token issued by A is accepted by B.
        token = httpx.post(
            a.partner("/oauth/token"),
            data={
                "grant_type": "client_credentials",
                "client_id": "acme",
                "client_secret": "cs_replica_acme",
            },
        ).json()["access_token"]
        listed = httpx.get(
            b.partner(f"/projects/{PROJECT_ID}/experts"),
            headers={"authorization": f"Bearer {token}"},
        )
        assert listed.status_code == 200 and expert_id in listed.text, listed.text

        # A connection created through A is known to B.
        made = httpx.post(
            f"{a.origin}/_apitwin/api/connections",
            json={"client_id": "initech", "twin": "research"},
        )
        assert made.status_code in (200, 201), made.text
        assert httpx.get(f"{b.api('initech')}/faults").status_code == 200

        # Removed through B, it is gone for A too, with the token A issued to it.
        issued = httpx.post(
            a.partner("/oauth/token"),
            data={
                "grant_type": "client_credentials",
                "client_id": "initech",
                "client_secret": made.json()["client_secret"],
            },
        ).json()["access_token"]
        removed = httpx.delete(f"{b.origin}/_apitwin/api/connections/research:initech")
        assert removed.status_code == 200, removed.text
        assert httpx.get(f"{a.api('initech')}/faults").status_code == 404
        refused = httpx.get(
            a.partner(f"/projects/{PROJECT_ID}"), headers={"authorization": f"Bearer {issued}"}
        )
        assert refused.status_code == 401, refused.text

        # "Fail the next 3" added through A fails exactly 3 of 6 requests spread over A and B.
        rule = {"kind": "status", "params": {"status": 503}, "next": 3}
        added = httpx.post(f"{a.api('globex')}/faults", json=rule)
        assert added.status_code in (200, 201), added.text
        statuses = [
            httpx.get(
                replica.partner(f"/projects/{PROJECT_ID}"), headers=_auth("globex")
            ).status_code
            for replica in (a, b, a, b, a, b)
        ]
        assert statuses == [503, 503, 503, 200, 200, 200]

        # The journal holds the requests of both replicas, whichever replica is asked.
        for replica in (a, b):
            journal = httpx.get(f"{replica.api('globex')}/requests", params={"limit": 50})
            entries = journal.json()["requests"]
            assert [e["status"] for e in sorted(entries, key=lambda e: e["at"])] == statuses
            assert sum(1 for e in entries if e["fault"]) == 3

        # The clock advanced through A moves for B too.
        moved = httpx.post(f"{a.api()}/clock/advance", json={"seconds": 86_400})
        assert moved.status_code == 200, moved.text
        later = httpx.post(
            b.partner(f"/projects/{PROJECT_ID}/experts"), json=_expert("Bo"), headers=_auth()
        )
        assert later.status_code == 201, later.text
        stamp = datetime.fromisoformat(later.json()["created_at"].replace("Z", "+00:00"))
        assert stamp.timestamp() > time.time() + 80_000


class HoldingReceiver(Receiver):
    """Answers 200, but while ``holding`` keeps each request open until it is released or its
    sender disconnects (a killed replica); only requests answered on a live connection count as
    delivered."""

    def __init__(self) -> None:
        super().__init__()
        self.holding = threading.Event()
        self.held = 0
        self.lost = 0
        self.delivered: list[str] = []  # webhook ids answered 200 to a live sender

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if self.holding.is_set():
            with self.arrived:
                self.held += 1
            gone = asyncio.ensure_future(receive())  # completes when the sender disconnects
            for _ in range(6000):  # at most a minute
                if gone.done() or not self.holding.is_set():
                    break
                await asyncio.sleep(0.01)
            if gone.done():
                with self.arrived:
                    self.lost += 1
                return
            gone.cancel()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        with self.arrived:
            self.delivered.append(headers["webhook-id"])
            self.received.append((headers, body))
            self.arrived.notify_all()


def _message_ids(replica: Replica) -> set[str]:
    page = httpx.get(f"{replica.api()}/deliveries", params={"limit": 200}).json()
    return {d["message"] for d in page["deliveries"]}


def test_webhooks_from_both_replicas_are_each_delivered_once(tmp_path: Path) -> None:
    hooks = HoldingReceiver()
    with serve(hooks) as receiver, replicas(tmp_path, receiver) as (a, b):
        for n in range(20):
            replica = (a, b)[n % 2]
            answer = httpx.post(
                replica.partner(f"/projects/{PROJECT_ID}/experts"),
                json=_expert(f"Expert {n}"),
                headers=_auth(),
            )
            assert answer.status_code == 201, answer.text
        expected = _message_ids(a)
        assert len(expected) == 20
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and set(hooks.delivered) != expected:
            time.sleep(0.05)
        time.sleep(1.5)  # longer than a dispatcher's poll: a second send would show by now
        assert sorted(hooks.delivered) == sorted(expected)  # each once
        statuses = {
            d["status"]
            for d in httpx.get(f"{b.api()}/deliveries", params={"limit": 200}).json()["deliveries"]
        }
        assert statuses == {"succeeded"}


def test_a_replica_killed_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    hooks = HoldingReceiver()
    hooks.holding.set()
    with serve(hooks) as receiver, replicas(tmp_path, receiver) as (a, b):
        for n in range(10):
            answer = httpx.post(
                a.partner(f"/projects/{PROJECT_ID}/experts"),
                json=_expert(f"Expert {n}"),
                headers=_auth(),
            )
            assert answer.status_code == 201, answer.text
        expected = _message_ids(b)
        assert len(expected) == 10
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and hooks.held < 10:
            time.sleep(0.02)
        assert hooks.held == 10  # every delivery is in flight, held open by the receiver
        in_flight = httpx.get(f"{b.api()}/deliveries", params={"status": "delivering"}).json()
        assert len(in_flight["deliveries"]) == 10

        a.kill()
        hooks.holding.clear()
        # B takes over once the dead replica's leases expire (in virtual time).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not expected <= set(hooks.delivered):
            httpx.post(f"{b.api()}/clock/advance", json={"seconds": 600})
            time.sleep(0.1)
        assert set(hooks.delivered) >= expected
        assert hooks.lost >= 1  # some attempts really died with the killed replica
        done = httpx.get(f"{b.api()}/deliveries", params={"limit": 200}).json()["deliveries"]
        assert {d["status"] for d in done} == {"succeeded"}
        assert orjson.loads(hooks.received[0][1])  # a real, JSON webhook body
