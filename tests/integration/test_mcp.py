"""The agent interface: a real MCP client against a real server, and the admin REST API."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client, StdioServerParameters

from conftest import EXAMPLE, PROJECT, Running, serve_twin

pytestmark = pytest.mark.anyio


@pytest.fixture
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agent_sentences_through_streamable_http(twin: Running, mode: str) -> None:
    async with Client(f"{twin.origin}/mcp", mode=mode) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert {"connect", "create_record", "list_records", "describe_api"} <= set(tools)
        assert tools["list_records"].annotations.read_only_hint is True
        assert tools["reset_connection"].annotations.destructive_hint is True

        # "connect to server at ... using client id acme-qa"
        connected = data(await client.call_tool("connect", {"client_id": "acme-qa"}))
        assert connected["created"] is True
        assert connected["client_secret"].startswith("cs_")
        handle = connected["connection_id"]
        assert handle == "research-platform-partner-api:acme-qa" or handle.endswith(":acme-qa")
        again = data(await client.call_tool("connect", {"client_id": "acme-qa"}))
        assert again["created"] is False
        assert "…" in again["client_secret"]

        # "create a new project on that connection"
        created = data(
            await client.call_tool(
                "create_record", {"connection_id": handle, "resource": "projects", "data": PROJECT}
            )
        )
        project_id = created["id"]

        # the system under test sees it through the API with its own credentials
        api = httpx.get(
            f"{connected['base_url']}/projects/{project_id}",
            headers={"Authorization": f"Bearer {connected['api_key']}"},
        )
        assert api.status_code == 200
        assert api.json()["title"] == PROJECT["title"]

        # "show me experts submitted to this project"
        experts = data(
            await client.call_tool(
                "list_records",
                {
                    "connection_id": handle,
                    "resource": "experts",
                    "parent": {"projects": project_id},
                },
            )
        )
        assert experts["records"] == []


async def test_tool_errors_say_what_to_do_next(twin: Running) -> None:
    async with Client(f"{twin.origin}/mcp") as client:
        result = await client.call_tool("describe_api", {"connection_id": "nope"})
        assert result.is_error
        assert "no connection 'nope'; known:" in result.content[0].text
        connected = data(await client.call_tool("connect", {"client_id": "qa"}))
        bad = await client.call_tool(
            "create_record",
            {
                "connection_id": connected["connection_id"],
                "resource": "projects",
                "data": {**PROJECT, "industry": "toys"},
            },
        )
        assert bad.is_error
        assert "/industry" in bad.content[0].text


async def test_the_same_scenario_through_the_admin_api(twin: Running) -> None:
    api = f"{twin.origin}/_apitwin/api"
    connected = httpx.post(f"{api}/connections", json={"client_id": "ci"})
    assert connected.status_code == 201
    handle = connected.json()["connection_id"]
    created = httpx.post(f"{api}/connections/{handle}/records/projects", json={"data": PROJECT})
    assert created.status_code == 201
    listed = httpx.get(f"{api}/connections/{handle}/records/projects")
    assert [r["id"] for r in listed.json()["records"]] == [created.json()["id"]]
    missing = httpx.get(f"{api}/connections/{handle}/records/projects/prj_AAAAAAAAAAAA")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    document = httpx.get(f"{twin.origin}/_apitwin/openapi.json").json()
    assert "/_apitwin/api/connections/{cid}/records/{resource}" in document["paths"]


async def test_stdio_drives_a_running_server_through_its_admin_api(twin: Running) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "apitwin", "mcp", "--server", twin.origin]
    )
    async with Client(params) as client:
        connected = data(await client.call_tool("connect", {"client_id": "remote-qa"}))
        handle = connected["connection_id"]
        created = data(
            await client.call_tool(
                "create_record", {"connection_id": handle, "resource": "projects", "data": PROJECT}
            )
        )
        assert created["record"]["title"] == PROJECT["title"]
    local = twin.twin.connections.get("remote-qa")
    assert local.client_id == "remote-qa"


async def test_seed_data_from_examples_and_generated_records(tmp_path: Any) -> None:
    with serve_twin(EXAMPLE, seed_examples=True) as running:
        api = f"{running.origin}/_apitwin/api"
        handle = httpx.post(f"{api}/connections", json={"client_id": "seeded"}).json()[
            "connection_id"
        ]
        seeded = httpx.get(f"{api}/connections/{handle}/records/projects").json()
        assert seeded["total"] >= 1
        assert seeded["records"][0]["title"] == "Battery supply chain in Southeast Asia"
        made = httpx.post(
            f"{api}/connections/{handle}/records/projects/generate", json={"count": 3}
        )
        assert made.status_code == 201
        assert len(set(made.json()["created"])) == 3
        after = httpx.get(f"{api}/connections/{handle}/records/projects").json()
        assert after["total"] == seeded["total"] + 3
        reset = httpx.post(f"{api}/connections/{handle}/reset", json={})
        assert reset.json()["seeded_records"] >= seeded["total"]
        again = httpx.get(f"{api}/connections/{handle}/records/projects").json()
        assert again["total"] == seeded["total"]
        httpx.post(f"{api}/connections/{handle}/records/projects/generate", json={"count": 2})
        whole = httpx.post(f"{api}/twins/{running.twin.name}/reset")
        assert whole.status_code == 200
        assert set(whole.json()["seeded_records"]) == {"default", "seeded"}
        final = httpx.get(f"{api}/connections/{handle}/records/projects").json()
        assert final["total"] == seeded["total"]


async def test_with_an_admin_token_every_control_surface_refuses_strangers() -> None:
    from apitwin.server.app import App

    from conftest import serve

    plain = twin_app_for_token()
    app = App(plain.twins, plain.store, admin_token="a-long-admin-token-0001")
    with serve(app) as origin:
        assert httpx.get(f"{origin}/_apitwin/api/connections").status_code == 401
        assert httpx.post(f"{origin}/mcp", json={}).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert httpx.get(f"{origin}/_apitwin/api/connections", headers=wrong).status_code == 401
        good = {"Authorization": "Bearer a-long-admin-token-0001"}
        assert httpx.get(f"{origin}/_apitwin/api/connections", headers=good).status_code == 200
        http = httpx.AsyncClient(headers=good, timeout=30)
        from mcp.client.streamable_http import streamable_http_client

        async with http, Client(streamable_http_client(f"{origin}/mcp", http_client=http)) as c:
            assert (await c.list_tools()).tools


def twin_app_for_token() -> Any:
    from conftest import twin_app

    return twin_app(EXAMPLE)
