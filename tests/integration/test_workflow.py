"""Events, faults and the journal through the agent's tools, against a real webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from mcp import Client
from standardwebhooks.webhooks import Webhook

from conftest import EXAMPLE, EXPERT, PROJECT, Receiver, Running, serve, serve_twin

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as url:
        yield app, url + "/hooks"


@pytest.fixture
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def test_creating_a_project_delivers_a_signed_webhook_and_a_failure_is_retried(
    twin: Running, receiver: tuple[Receiver, str]
) -> None:
    hooks, hook_url = receiver
    async with Client(f"{twin.origin}/mcp") as client:
        connected = data(
            await client.call_tool("connect", {"client_id": "acme-qa", "webhook_url": hook_url})
        )
        handle = connected["connection_id"]
        secret = connected["webhook"]["secret"]
        assert secret.startswith("whsec_")
        listed = data(await client.call_tool("list_endpoints", {"connection_id": handle}))
        assert secret not in str(listed)

        created = data(
            await client.call_tool(
                "create_record", {"connection_id": handle, "resource": "projects", "data": PROJECT}
            )
        )
        await anyio.to_thread.run_sync(hooks.wait_for, 1)
        headers, body = hooks.received[0]
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "project.created"
        assert event["data"]["object"]["id"] == created["id"]

        # "make the next delivery fail with a 503", then watch the retry
        hooks.statuses = [503]
        data(
            await client.call_tool(
                "trigger_event",
                {
                    "connection_id": handle,
                    "event": "project.updated",
                    "record": {"resource": "projects", "id": created["id"]},
                },
            )
        )
        await anyio.to_thread.run_sync(hooks.wait_for, 2)
        failed = data(await client.call_tool("list_deliveries", {"connection_id": handle}))
        latest = failed["deliveries"][0]
        assert latest["event"] == "project.updated"
        assert latest["status"] == "pending"
        data(await client.call_tool("advance_clock", {"connection_id": handle, "seconds": 10}))
        await anyio.to_thread.run_sync(hooks.wait_for, 3)
        retried = data(
            await client.call_tool(
                "get_delivery", {"connection_id": handle, "delivery_id": latest["id"]}
            )
        )
        assert retried["status"] == "succeeded"
        assert [a["response_status"] for a in retried["attempt_log"]] == [503, 200]
        Webhook(secret).verify(hooks.received[2][1], hooks.received[2][0])

        # rotate: during the grace period both the old and the new secret verify
        endpoint_id = listed["endpoints"][0]["id"]
        rotated = data(
            await client.call_tool(
                "rotate_secret", {"connection_id": handle, "endpoint_id": endpoint_id}
            )
        )
        data(
            await client.call_tool(
                "trigger_event",
                {
                    "connection_id": handle,
                    "event": "project.updated",
                    "record": {"resource": "projects", "id": created["id"]},
                },
            )
        )
        await anyio.to_thread.run_sync(hooks.wait_for, 4)
        headers, body = hooks.received[3]
        Webhook(secret).verify(body, headers)
        Webhook(rotated["secret"]).verify(body, headers)


async def test_an_injected_fault_reaches_the_system_under_test_and_the_journal_tags_it(
    twin: Running,
) -> None:
    async with Client(f"{twin.origin}/mcp") as client:
        connected = data(await client.call_tool("connect", {"client_id": "qa"}))
        handle = connected["connection_id"]
        auth = {"Authorization": f"Bearer {connected['api_key']}"}
        rule = data(
            await client.call_tool(
                "add_fault",
                {
                    "connection_id": handle,
                    "kind": "status",
                    "params": {"status": 503},
                    "operation": "listProjects",
                    "next": 1,
                },
            )
        )
        first = httpx.get(f"{connected['base_url']}/projects", headers=auth)
        second = httpx.get(f"{connected['base_url']}/projects", headers=auth)
        assert first.status_code == 503
        assert second.status_code == 200

        # "what did our platform send in its last three requests?"
        journal = data(
            await client.call_tool("list_requests", {"connection_id": handle, "limit": 3})
        )
        entries = journal["requests"]
        assert [e["status"] for e in entries[:2]] == [200, 503]
        assert entries[1]["fault"] == rule["id"]
        assert "…" in entries[0]["request_headers"]["authorization"]
        counted = data(
            await client.call_tool(
                "count_requests",
                {"connection_id": handle, "operation": "listProjects", "status": "200"},
            )
        )
        assert counted["count"] == 1


async def test_journal_entries_are_readable_as_mcp_resources(twin: Running) -> None:
    async with Client(f"{twin.origin}/mcp") as client:
        connected = data(await client.call_tool("connect", {"client_id": "res"}))
        handle = connected["connection_id"]
        httpx.get(
            f"{connected['base_url']}/projects",
            headers={"Authorization": f"Bearer {connected['api_key']}"},
        )
        entry = data(await client.call_tool("list_requests", {"connection_id": handle}))
        request_id = entry["requests"][0]["id"]
        templates = await client.list_resource_templates()
        assert any("requests/{request_id}" in t.uri_template for t in templates.resource_templates)
        read = await client.read_resource(f"apitwin://connections/{handle}/requests/{request_id}")
        assert f'"id":"{request_id}"' in read.contents[0].text


@pytest.fixture
def demo() -> Iterator[Running]:
    from apitwin.config import load_config

    config = load_config(EXAMPLE.parent / "apitwin.yaml").twins[0]
    with serve_twin(EXAMPLE, actions=config.actions, fixtures=config.fixtures) as running:
        yield running


async def test_workflow_actions_are_typed_tools_that_read_like_the_domain(
    demo: Running, receiver: tuple[Receiver, str]
) -> None:
    hooks, hook_url = receiver
    async with Client(f"{demo.origin}/mcp") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["create_project"].input_schema["properties"]["industry"]["enum"]
        assert set(tools["shortlist_expert"].input_schema["required"]) == {
            "connection_id",
            "project_id",
            "expert_id",
        }
        connected = data(
            await client.call_tool("connect", {"client_id": "acme-qa", "webhook_url": hook_url})
        )
        handle = connected["connection_id"]
        secret = connected["webhook"]["secret"]
        project = data(
            await client.call_tool(
                "create_project",
                {
                    "connection_id": handle,
                    "title": "Grid storage",
                    "brief": "Battery operators",
                    "industry": "energy_resources",
                },
            )
        )["steps"][0]["record"]
        # the expert network submits an expert through the API with its own credentials
        auth = {"Authorization": f"Bearer {connected['api_key']}"}
        expert = httpx.post(
            f"{connected['base_url']}/projects/{project['id']}/experts", json=EXPERT, headers=auth
        )
        assert expert.status_code == 201
        shortlisted = data(
            await client.call_tool(
                "shortlist_expert",
                {
                    "connection_id": handle,
                    "project_id": project["id"],
                    "expert_id": expert.json()["id"],
                },
            )
        )
        assert shortlisted["steps"][0]["record"]["status"] == "shortlisted"
        await anyio.to_thread.run_sync(hooks.wait_for, 2)  # project.created, expert.shortlisted
        events = [Webhook(secret).verify(body, headers)["type"] for headers, body in hooks.received]
        assert "expert.shortlisted" in events
        bad = await client.call_tool(
            "create_project",
            {"connection_id": handle, "title": "x", "brief": "y", "industry": "toys"},
        )
        assert bad.is_error
