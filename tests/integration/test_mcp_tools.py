"""Every MCP tool, through a real client, over every transport and protocol revision.

The scenario calls each tool the server lists and checks what it answers; a tool the server
lists but the scenario does not call fails the test, so a new tool needs a test here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client

from mcp_clients import VARIANT_IDS, VARIANTS, data, error_text, mcp_client, serve_example

from conftest import EXPERT, PROJECT, Receiver, Running, serve

pytestmark = pytest.mark.anyio

# Workflow actions of the example, which are tools of their own too.
ACTION_TOOLS = {"create_project", "shortlist_expert", "request_call", "cancel_call"}


@pytest.fixture(scope="module")
def example() -> Iterator[Running]:
    with serve_example() as running:
        yield running


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as url:
        yield app, url + "/hooks"


class Agent:
    """Calls tools and remembers which ones it called."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.called: set[str] = set()

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        self.called.add(tool)
        return data(await self.client.call_tool(tool, arguments))

    async def fail(self, tool: str, **arguments: Any) -> str:
        self.called.add(tool)
        return error_text(await self.client.call_tool(tool, arguments))


@pytest.mark.parametrize(("transport", "mode", "revision"), VARIANTS, ids=VARIANT_IDS)
async def test_every_listed_tool_answers_with_real_content(
    example: Running,
    receiver: tuple[Receiver, str],
    transport: str,
    mode: str,
    revision: str,
) -> None:
    hooks, hook_url = receiver
    client_id = f"tools-{transport}-{mode}"
    async with mcp_client(example.origin, transport, mode, revision) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) >= ACTION_TOOLS
        agent = Agent(client)
        for tool in listed.values():
            hints = tool.annotations
            assert hints is not None, tool.name
            assert hints.open_world_hint is False, tool.name  # the twin is a closed world
            hinted = (hints.read_only_hint, hints.destructive_hint, hints.idempotent_hint)
            assert None not in hinted, tool.name  # unset hints mean the worst to clients
            if hints.read_only_hint:
                assert not hints.destructive_hint, tool.name
            assert tool.description, tool.name

        # -- connections ---------------------------------------------------------------------
        connected = await agent.call("connect", client_id=client_id, webhook_url=hook_url)
        handle = connected["connection_id"]
        assert handle == f"research:{client_id}"
        assert connected["created"] is True
        assert connected["client_secret"].startswith("cs_")
        assert connected["webhook"]["secret"].startswith("whsec_")
        secret = connected["webhook"]["secret"]
        auth = {"Authorization": f"Bearer {connected['api_key']}"}
        base = connected["base_url"]
        listed_connections = await agent.call("list_connections")
        mine = [c for c in listed_connections["connections"] if c["connection_id"] == handle]
        assert len(mine) == 1
        assert "…" in mine[0]["client_secret"]  # masked once created

        described = await agent.call("describe_api", connection_id=handle)
        assert {"projects", "experts", "calls"} <= set(described["resources"])
        assert "project.created" in described["events"]
        assert {a["name"] for a in described["actions"]} == ACTION_TOOLS
        unknown = await agent.fail("describe_api", connection_id="research:nobody")
        assert "Call connect() to create one" in unknown

        # -- records -------------------------------------------------------------------------
        created = await agent.call(
            "create_record", connection_id=handle, resource="projects", data=PROJECT
        )
        project_id = created["id"]
        assert created["record"]["title"] == PROJECT["title"]
        bad = await agent.fail(
            "create_record",
            connection_id=handle,
            resource="projects",
            data={**PROJECT, "industry": "toys"},
        )
        assert "/industry" in bad
        got = await agent.call(
            "get_record", connection_id=handle, resource="projects", record_id=project_id
        )
        assert got["record"]["brief"] == PROJECT["brief"]
        updated = await agent.call(
            "update_record",
            connection_id=handle,
            resource="projects",
            record_id=project_id,
            changes={"brief": "Operators of grid batteries, and their suppliers."},
        )
        assert updated["record"]["brief"] == "Operators of grid batteries, and their suppliers."
        generated = await agent.call(
            "generate_records", connection_id=handle, resource="projects", count=2
        )
        assert len(set(generated["created"])) == 2
        first = await agent.call("list_records", connection_id=handle, resource="projects", limit=2)
        assert first["total"] == 2 + 1 + 2  # the example's two fixtures, ours, two generated
        assert len(first["records"]) == 2
        assert first["next_cursor"]
        rest = await agent.call(
            "list_records",
            connection_id=handle,
            resource="projects",
            limit=100,
            cursor=first["next_cursor"],
        )
        paged = [r["id"] for r in first["records"] + rest["records"]]
        assert len(set(paged)) == 5
        assert project_id in paged
        filtered = await agent.call(
            "list_records",
            connection_id=handle,
            resource="projects",
            filters={"industry": "financial_services"},
        )
        assert [r["title"] for r in filtered["records"]] == [
            "Cross-border payments for small merchants"
        ]
        removed = await agent.call(
            "delete_record",
            connection_id=handle,
            resource="projects",
            record_id=generated["created"][0],
        )
        assert removed["deleted"] is True
        gone = await agent.fail(
            "get_record",
            connection_id=handle,
            resource="projects",
            record_id=generated["created"][0],
        )
        assert generated["created"][0] in gone
        nested = await agent.fail("list_records", connection_id=handle, resource="experts")
        assert 'parent={"projects": "<id>"}' in nested

        # -- the system under test submits an expert with the connection's credentials --------
        submitted = httpx.post(f"{base}/projects/{project_id}/experts", json=EXPERT, headers=auth)
        assert submitted.status_code == 201, submitted.text
        expert_id = submitted.json()["id"]

        # -- workflow actions ----------------------------------------------------------------
        ran = await agent.call(
            "run_action",
            connection_id=handle,
            action="create_project",
            inputs={"title": "Heat pumps", "brief": "Installers", "industry": "industrials"},
        )
        assert ran["steps"][0]["record"]["title"] == "Heat pumps"
        no_action = await agent.fail("run_action", connection_id=handle, action="nope")
        assert "create_project" in no_action
        assert listed["create_project"].input_schema["properties"]["industry"]["enum"]
        made = await agent.call(
            "create_project",
            connection_id=handle,
            title="Grid storage",
            brief="Battery operators",
            industry="energy_resources",
        )
        assert made["steps"][0]["record"]["status"] == "open"
        not_an_industry = await agent.fail(
            "create_project", connection_id=handle, title="x", brief="y", industry="toys"
        )
        assert "industry" in not_an_industry
        shortlisted = await agent.call(
            "shortlist_expert", connection_id=handle, project_id=project_id, expert_id=expert_id
        )
        assert shortlisted["steps"][0]["record"]["status"] == "shortlisted"
        second = httpx.post(f"{base}/projects/{project_id}/experts", json=EXPERT, headers=auth)
        assert second.status_code == 201, second.text
        rejected = await agent.call(
            "record_action",
            connection_id=handle,
            resource="experts",
            record_id=second.json()["id"],
            action="reject",
            body={"reason": "Outside the target geography"},
            parent={"projects": project_id},
        )
        assert rejected["record"]["status"] == "rejected"
        no_such = await agent.fail(
            "record_action",
            connection_id=handle,
            resource="experts",
            record_id=expert_id,
            action="promote",
            parent={"projects": project_id},
        )
        assert "experts has no action 'promote'" in no_such and "reject" in no_such
        call = await agent.call(
            "request_call",
            connection_id=handle,
            project_id=project_id,
            expert_id=expert_id,
            topic="Cell procurement",
            window_start="2026-12-01T09:00:00Z",
            window_end="2026-12-01T17:00:00Z",
        )
        call_id = call["steps"][0]["record"]["id"]
        cancelled = await agent.call(
            "cancel_call", connection_id=handle, call_id=call_id, reason="Unavailable"
        )
        assert cancelled["steps"][0]["record"]["status"] == "cancelled"

        # -- webhooks ------------------------------------------------------------------------
        triggered = await agent.call(
            "trigger_event",
            connection_id=handle,
            event="project.updated",
            record={"resource": "projects", "id": project_id},
        )
        assert triggered["payload"]["data"]["object"]["id"] == project_id
        (delivery_id,) = triggered["deliveries"]
        advanced = await agent.call("advance_clock", connection_id=handle, seconds=10)
        assert advanced["twin"] == "research"
        assert advanced["now"].endswith("Z") or "+" in advanced["now"]
        deliveries = await agent.call(
            "list_deliveries", connection_id=handle, event="project.updated", limit=5
        )
        # the newest first; update_record emitted one too
        assert deliveries["deliveries"][0]["id"] == delivery_id
        assert len(deliveries["deliveries"]) == 2
        delivery = await agent.call("get_delivery", connection_id=handle, delivery_id=delivery_id)
        assert delivery["status"] == "succeeded"
        assert [a["response_status"] for a in delivery["attempt_log"]] == [200]
        again = await agent.call("redeliver", connection_id=handle, delivery_id=delivery_id)
        assert again["id"] == delivery_id
        assert again["status"] == "pending"
        recent = await agent.call("redeliver", connection_id=handle, failed_within_seconds=60)
        assert recent["redelivered"] == []  # nothing failed
        neither = await agent.fail("redeliver", connection_id=handle)
        assert "failed_within_seconds" in neither

        added = await agent.call(
            "add_endpoint", connection_id=handle, url=hook_url + "/second", events=["project.*"]
        )
        assert added["secret"].startswith("whsec_")
        assert added["secret"] != secret
        endpoints = await agent.call("list_endpoints", connection_id=handle)
        assert {e["url"] for e in endpoints["endpoints"]} == {hook_url, hook_url + "/second"}
        assert added["secret"] not in str(endpoints)
        rotated = await agent.call(
            "rotate_secret", connection_id=handle, endpoint_id=added["id"], grace_seconds=60
        )
        assert rotated["secret"].startswith("whsec_")
        assert rotated["secret"] != added["secret"]
        dropped = await agent.call("remove_endpoint", connection_id=handle, endpoint_id=added["id"])
        assert dropped["removed"] is True
        left = await agent.call("list_endpoints", connection_id=handle)
        assert [e["url"] for e in left["endpoints"]] == [hook_url]

        # -- faults and the journal ----------------------------------------------------------
        rule = await agent.call(
            "add_fault",
            connection_id=handle,
            kind="status",
            params={"status": 503},
            operation="listProjects",
            next=1,
        )
        assert rule["kind"] == "status"
        wrong = await agent.fail("add_fault", connection_id=handle, kind="explode")
        assert "explode" in wrong
        faults = await agent.call("list_faults", connection_id=handle)
        assert [f["id"] for f in faults["faults"]] == [rule["id"]]
        assert httpx.get(f"{base}/projects", headers=auth).status_code == 503
        assert httpx.get(f"{base}/projects", headers=auth).status_code == 200
        journal = await agent.call("list_requests", connection_id=handle, limit=2)
        assert [e["status"] for e in journal["requests"]] == [200, 503]
        assert journal["requests"][1]["fault"] == rule["id"]
        assert journal["next_cursor"]
        older = await agent.call(
            "list_requests", connection_id=handle, limit=1, cursor=journal["next_cursor"]
        )
        assert older["requests"][0]["operation"] == "submitExpert"
        entry = await agent.call(
            "get_request", connection_id=handle, request_id=journal["requests"][1]["id"]
        )
        assert entry["status"] == 503
        assert "…" in entry["request_headers"]["authorization"]
        counted = await agent.call(
            "count_requests", connection_id=handle, operation="listProjects", status="5xx"
        )
        assert counted["count"] == 1
        bad_status = await client.call_tool(
            "count_requests", {"connection_id": handle, "status": "teapot"}
        )
        assert bad_status.is_error
        cleared = await agent.call("clear_faults", connection_id=handle)
        assert cleared["cleared"] == 1

        # -- back to the seed data -----------------------------------------------------------
        reset = await agent.call("reset_connection", connection_id=handle)
        assert reset["reset"] is True
        assert reset["seeded_records"] == 2
        after = await agent.call("list_records", connection_id=handle, resource="projects")
        assert after["total"] == 2

        # -- gone ------------------------------------------------------------------------------
        removed = await agent.call("remove_connection", connection_id=handle)
        assert removed == {"connection_id": handle, "removed": True}
        assert "Call connect() to create one" in await agent.fail(
            "list_records", connection_id=handle, resource="projects"
        )
        assert httpx.get(f"{base}/projects", headers=auth).status_code == 401

        untested = set(listed) - agent.called
        assert not untested, f"tools without a test step: {sorted(untested)}"
        assert agent.called <= set(listed)
    # the delivery the tools reported as succeeded did reach the receiver
    assert delivery["message"] in [headers.get("webhook-id") for headers, _ in hooks.received]
