"""Every limit of docs/limits.md, exceeded through a real server: a clear refusal, nothing changed.

Each test starts the bundled example with one limit lowered (server.limits in apitwin.yaml), goes
past it over loopback, checks the answer (413, 431, 429, a tool error) and then that the state the
refused request would have touched is as it was.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client

from apitwin.config import Limits, load_config
from apitwin.errors import ConfigError, SpecError
from apitwin.faults import MAX_RULES
from apitwin.server.app import create_app
from apitwin.server.transport import uvicorn_http_options

from conftest import EXAMPLE, PROJECT, serve

CID = "research:acme-qa"
KEY = {"Authorization": "Bearer ak_demo_acme_qa_key"}
WAIT_ROUNDS = 200  # polls of 50 ms at most while deliveries are attempted


@dataclass
class Twin:
    origin: str

    @property
    def api(self) -> str:
        return self.origin + "/partner/v1"

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.origin}/_apitwin/api{path}", timeout=30, **kwargs)

    def journal_count(self) -> int:
        answer = self.admin("GET", f"/connections/{CID}/requests/count").raise_for_status()
        count: int = answer.json()["count"]
        return count

    def project_total(self) -> int:
        answer = self.admin("GET", f"/connections/{CID}/records/projects").raise_for_status()
        total: int = answer.json()["total"]
        return total


@contextmanager
def twin_with(**limits: Any) -> Iterator[Twin]:
    settings = load_config(EXAMPLE.parent / "apitwin.yaml")
    app = create_app(replace(settings, db=":memory:", limits=Limits(**limits)))
    with serve(app, **uvicorn_http_options(app.limits.request_header_bytes)) as origin:
        yield Twin(origin)


def assert_problem(answer: httpx.Response, status: int, *fragments: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    detail = answer.json()["detail"]
    for fragment in fragments:
        assert fragment in detail


# -- request body ---------------------------------------------------------------------------------


def test_request_body_limit_on_the_api() -> None:
    with twin_with(request_body_bytes=4096) as twin:
        before = (twin.journal_count(), twin.project_total())
        big = {**PROJECT, "brief": "x" * 5000}
        answer = httpx.post(f"{twin.api}/projects", json=big, headers=KEY)
        assert_problem(answer, 413, "exceeds the 4096-byte limit")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            for _ in range(10):
                yield b"x" * 1000

        streamed = httpx.post(
            f"{twin.api}/projects",
            content=chunks(),
            headers={**KEY, "Content-Type": "application/json"},
        )
        assert_problem(streamed, 413, "exceeds the 4096-byte limit")
        assert (twin.journal_count(), twin.project_total()) == before

        # Under the limit, the same request goes through.
        assert httpx.post(f"{twin.api}/projects", json=PROJECT, headers=KEY).status_code == 201
        assert twin.project_total() == before[1] + 1


def test_request_body_limit_on_the_admin_api_and_mcp() -> None:
    with twin_with(request_body_bytes=4096) as twin:
        before = twin.project_total()
        body = {"data": {**PROJECT, "brief": "x" * 5000}}
        answer = twin.admin("POST", f"/connections/{CID}/records/projects", json=body)
        assert_problem(answer, 413, "exceeds the 4096-byte limit")

        def chunks() -> Iterator[bytes]:
            yield b'{"data": {"brief": "'
            for _ in range(10):
                yield b"x" * 1000
            yield b'"}}'

        streamed = twin.admin("POST", f"/connections/{CID}/records/projects", content=chunks())
        assert_problem(streamed, 413, "exceeds the 4096-byte limit")
        assert twin.project_total() == before

        mcp = httpx.post(
            f"{twin.origin}/mcp",
            content=b"{" + b" " * 5000 + b"}",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        assert_problem(mcp, 413, "exceeds the 4096-byte limit")
        mcp_streamed = httpx.post(
            f"{twin.origin}/mcp",
            content=chunks(),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        assert_problem(mcp_streamed, 413, "exceeds the 4096-byte limit")


# -- request headers ------------------------------------------------------------------------------


def test_request_header_limit() -> None:
    with twin_with(request_header_bytes=8192) as twin:
        before = twin.journal_count()
        with socket.create_connection(("127.0.0.1", int(twin.origin.rsplit(":", 1)[1]))) as sock:
            sock.settimeout(30)
            request = (
                b"GET /partner/v1/projects HTTP/1.1\r\nHost: twin\r\n"
                b"Authorization: Bearer ak_demo_acme_qa_key\r\n"
                b"X-Padding: " + b"p" * 10_000 + b"\r\n\r\n"
            )
            sock.sendall(request)
            reply = _read_all(sock)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
        assert b"content-type: application/problem+json" in head
        assert b"exceed the 8192-byte limit" in body

        # httpx sees the same answer; headers under the limit still work.
        refused = httpx.get(f"{twin.api}/projects", headers={**KEY, "X-Padding": "p" * 10_000})
        assert_problem(refused, 431, "exceed the 8192-byte limit")
        fine = httpx.get(f"{twin.api}/projects", headers={**KEY, "X-Padding": "p" * 4000})
        assert fine.status_code == 200
        assert twin.journal_count() == before + 1  # only the accepted request was journaled


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    for _ in range(1000):  # the server closes the connection after its answer
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


# -- the journal ----------------------------------------------------------------------------------


def test_journal_keeps_the_newest_entries_per_connection() -> None:
    with twin_with(journal_entries=5) as twin:
        for page in range(1, 9):
            answer = httpx.get(f"{twin.api}/projects", params={"limit": page}, headers=KEY)
            assert answer.status_code == 200
        listed = twin.admin("GET", f"/connections/{CID}/requests", params={"limit": 100})
        entries = listed.raise_for_status().json()["requests"]
        assert len(entries) == 5
        assert sorted(e["query"] for e in entries) == [f"limit={n}" for n in range(4, 9)]


def test_journal_cuts_long_bodies() -> None:
    with twin_with(journal_body_bytes=64) as twin:
        answer = httpx.post(f"{twin.api}/projects", json=PROJECT, headers=KEY)
        assert answer.status_code == 201
        listed = twin.admin("GET", f"/connections/{CID}/requests").raise_for_status()
        entry = listed.json()["requests"][0]
        sent = entry["request_body"]
        assert sent["truncated"] is True
        assert len(sent["text"]) == 64
        assert sent["size"] == len(answer.request.content)
        assert entry["response_body"]["truncated"] is True


# -- pending deliveries ---------------------------------------------------------------------------


def test_pending_deliveries_per_connection() -> None:
    with twin_with(pending_deliveries=2) as twin:
        closed = _closed_port()  # every attempt fails, so deliveries stay pending (retrying)
        endpoint = twin.admin(
            "POST",
            f"/connections/{CID}/endpoints",
            json={"url": f"http://127.0.0.1:{closed}/hooks", "events": ["project.closed"]},
        )
        assert endpoint.status_code == 201, endpoint.text
        for _ in range(2):
            sent = twin.admin(
                "POST", f"/connections/{CID}/events", json={"event": "project.closed"}
            )
            assert sent.status_code == 201, sent.text
        deliveries = _wait_until_attempted(twin, 2)

        refused = twin.admin("POST", f"/connections/{CID}/events", json={"event": "project.closed"})
        assert_problem(refused, 429, "has 2 pending deliveries; the limit is 2")
        assert refused.json()["type"] == "urn:apitwin:queue_full"
        assert _deliveries(twin) == deliveries


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _deliveries(twin: Twin) -> list[tuple[str, str]]:
    answer = twin.admin("GET", f"/connections/{CID}/deliveries", params={"limit": 100})
    return sorted((d["id"], d["status"]) for d in answer.raise_for_status().json()["deliveries"])


def _wait_until_attempted(twin: Twin, count: int) -> list[tuple[str, str]]:
    """The deliveries once each has failed its first attempt and waits, pending, for a retry."""
    for _ in range(WAIT_ROUNDS):
        answer = twin.admin("GET", f"/connections/{CID}/deliveries", params={"limit": 100})
        found = answer.raise_for_status().json()["deliveries"]
        if len(found) == count and all(
            d["status"] == "pending" and d["attempts"] >= 1 for d in found
        ):
            return _deliveries(twin)
        time.sleep(0.05)
    raise AssertionError(f"deliveries were not attempted: {found}")


# -- connections ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_connections_per_twin() -> None:
    # The example configures three connections (default, acme-qa, acme-uat): the limit is reached.
    with twin_with(connections=3) as twin:
        names = {c["client_id"] for c in twin.admin("GET", "/connections").json()["connections"]}
        assert len(names) == 3
        refused = twin.admin("POST", "/connections", json={"client_id": "one-more"})
        assert_problem(refused, 429, "already has the maximum of 3 connections")
        assert refused.json()["type"] == "urn:apitwin:limit_exceeded"

        async with Client(f"{twin.origin}/mcp") as client:
            result = await client.call_tool("connect", {"client_id": "one-more"})
            assert result.is_error
            assert "already has the maximum of 3 connections" in result.content[0].text

        after = {c["client_id"] for c in twin.admin("GET", "/connections").json()["connections"]}
        assert after == names
        # An existing client id still connects: that creates nothing.
        assert twin.admin("POST", "/connections", json={"client_id": "acme-qa"}).status_code == 200

        # Removing one makes room (here through MCP; the admin API's DELETE does the same).
        async with Client(f"{twin.origin}/mcp") as client:
            removed = await client.call_tool(
                "remove_connection", {"connection_id": "research:acme-uat"}
            )
            assert not removed.is_error, removed.content
            assert "declared in apitwin.yaml" in str(removed.structured_content)
        made = twin.admin("POST", "/connections", json={"client_id": "one-more"})
        assert made.status_code == 201, made.text
        after = {c["client_id"] for c in twin.admin("GET", "/connections").json()["connections"]}
        assert after == names - {"acme-uat"} | {"one-more"}


# -- fault rules ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fault_rules_per_connection() -> None:
    with twin_with(fault_rules=5) as twin:
        rule = {"kind": "status", "params": {"status": 503}, "operation": "listProjects"}
        for _ in range(5):
            added = twin.admin("POST", f"/connections/{CID}/faults", json=rule)
            assert added.status_code == 201, added.text
        refused = twin.admin("POST", f"/connections/{CID}/faults", json=rule)
        assert_problem(refused, 429, "at most 5 rules per connection")
        assert refused.json()["type"] == "urn:apitwin:limit_exceeded"
        async with Client(f"{twin.origin}/mcp") as client:
            result = await client.call_tool(
                "add_fault", {"connection_id": CID, "kind": "status", "params": {"status": 503}}
            )
            assert result.is_error
            assert "at most 5 rules per connection" in result.content[0].text
        listed = twin.admin("GET", f"/connections/{CID}/faults").raise_for_status()
        assert len(listed.json()["faults"]) == 5
        # Clearing one makes room again.
        first = listed.json()["faults"][0]["id"]
        cleared = twin.admin("DELETE", f"/connections/{CID}/faults", params={"rule_id": first})
        assert cleared.status_code == 200, cleared.text
        again = twin.admin("POST", f"/connections/{CID}/faults", json=rule)
        assert again.status_code == 201, again.text


def test_fault_rules_default_is_documented() -> None:
    assert Limits().fault_rules == MAX_RULES == 100


# -- spec size and the settings themselves --------------------------------------------------------


def write_config(tmp_path: Path, limits: str) -> Path:
    (tmp_path / "openapi.yaml").write_bytes(EXAMPLE.read_bytes())
    path = tmp_path / "apitwin.yaml"
    path.write_text(f"server:\n  limits: {limits}\ntwins:\n  - spec: openapi.yaml\n")
    return path


def test_spec_size_limit_from_the_config(tmp_path: Path) -> None:
    settings = load_config(write_config(tmp_path, "{spec_bytes: 2048}"))
    assert settings.limits.spec_bytes == 2048
    with pytest.raises(SpecError) as caught:
        create_app(settings)
    assert [str(p) for p in caught.value.problems] == [
        "openapi.yaml: file is larger than the 2048-byte limit"
    ]


def test_limits_in_the_config_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as typo:
        load_config(write_config(tmp_path, "{journal_entires: 10}"))
    assert "server.limits.journal_entires: unknown field; did you mean 'journal_entries'?" in str(
        typo.value
    )
    with pytest.raises(ConfigError) as zero:
        load_config(write_config(tmp_path, "{connections: 0}"))
    assert "server.limits.connections: expected a number >= 1, got 0" in str(zero.value)
    defaults = load_config(write_config(tmp_path, "{}")).limits
    assert defaults == Limits()


# -- webhook history ------------------------------------------------------------------------------


def _wait_deliveries(twin: Twin, done: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for _ in range(WAIT_ROUNDS):
        answer = twin.admin("GET", f"/connections/{CID}/deliveries", params={"limit": 100})
        found = answer.raise_for_status().json()["deliveries"]
        if done(found):
            return found
        time.sleep(0.05)
    raise AssertionError(f"deliveries never reached the expected state: {found}")


def test_webhook_history_keeps_the_newest_finished_and_every_pending_delivery() -> None:
    from conftest import Receiver

    receiver = Receiver()
    with serve(receiver) as hook, twin_with(deliveries_kept=5) as twin:
        added = twin.admin(
            "POST",
            f"/connections/{CID}/endpoints",
            json={"url": f"{hook}/hooks", "events": ["project.closed"]},
        )
        assert added.status_code == 201, added.text
        sent = []
        for _ in range(8):
            answer = twin.admin(
                "POST", f"/connections/{CID}/events", json={"event": "project.closed"}
            )
            assert answer.status_code == 201, answer.text
            sent.extend(answer.json()["deliveries"])
        # Pruning runs after each event here (a tenth of 5, at least 1): only the newest 5
        # finished deliveries stay once all are delivered and one more pass has run.
        _wait_deliveries(twin, lambda d: all(x["status"] == "succeeded" for x in d))
        last = twin.admin("POST", f"/connections/{CID}/events", json={"event": "project.closed"})
        sent.extend(last.json()["deliveries"])
        kept = _wait_deliveries(
            twin, lambda d: len(d) == 5 and all(x["status"] == "succeeded" for x in d)
        )
        assert [d["id"] for d in kept] == sent[-5:][::-1]  # newest first
        pruned = twin.admin("GET", f"/connections/{CID}/deliveries/{sent[0]}")
        assert pruned.status_code == 404
        # A kept delivery still has its attempt log and can be sent again.
        detail = twin.admin("GET", f"/connections/{CID}/deliveries/{sent[-1]}").json()
        assert [a["response_status"] for a in detail["attempt_log"]] == [200]
        again = twin.admin("POST", f"/connections/{CID}/deliveries/{sent[-1]}/redeliver")
        assert again.status_code == 200, again.text

        # Deliveries still waiting are never removed, however many there are.
        closed = _closed_port()
        failing = twin.admin(
            "POST",
            f"/connections/{CID}/endpoints",
            json={"url": f"http://127.0.0.1:{closed}/hooks", "events": ["project.updated"]},
        )
        assert failing.status_code == 201, failing.text
        waiting = []
        for _ in range(7):
            answer = twin.admin(
                "POST", f"/connections/{CID}/events", json={"event": "project.updated"}
            )
            waiting.extend(answer.json()["deliveries"])
        found = _wait_deliveries(
            twin,
            lambda d: sum(x["status"] == "pending" and x["attempts"] >= 1 for x in d) == 7,
        )
        assert {d["id"] for d in found if d["event"] == "project.updated"} == set(waiting)
