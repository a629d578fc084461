"""The agent interface: a real MCP client against a real server, and the admin REST API."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.subscriptions import ResourcesListChanged, ResourceUpdated, Subscription
from mcp.types import ResourceListChangedNotification, ResourceUpdatedNotification

from mcp_clients import CURRENT, VARIANT_IDS, VARIANTS, data, mcp_client

from conftest import EXAMPLE, PROJECT, Receiver, Running, serve, serve_twin

pytestmark = pytest.mark.anyio

ROUNDS = 20  # requests made at most while waiting for a notification
WAIT = 20.0  # seconds; bounds every wait for another process


@pytest.fixture
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as url:
        yield app, url + "/hooks"


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
        cursor = await client.call_tool(
            "list_requests", {"connection_id": connected["connection_id"], "cursor": "zzz"}
        )
        assert cursor.is_error
        assert "cursor 'zzz' is not one this journal issued" in cursor.content[0].text
    # The same words from the admin API, as a 400 naming the field, for the cursor and a status.
    async with httpx.AsyncClient(base_url=f"{twin.origin}/_apitwin/api") as admin:
        path = f"/connections/{connected['connection_id']}/requests"
        got = await admin.get(path, params={"cursor": "zzz"})
        assert got.status_code == 400
        assert "is not one this journal issued" in got.text and "cursor" in got.text
        got = await admin.get(f"{path}/count", params={"status": "5xy"})
        assert got.status_code == 400 and "status" in got.text
        action = f"/connections/{connected['connection_id']}/records/projects/prj_x/actions/nope"
        got = await admin.post(action, json={})
        assert got.status_code == 404 and "projects has no action 'nope'" in got.text


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


class Heard:
    """Change notifications a client got, as "list_changed" and "updated <uri>"."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def handler(self, message: Any) -> None:
        """The client session's message handler (the previous revision's notifications)."""
        if isinstance(message, ResourceListChangedNotification):
            self.seen.append("list_changed")
        elif isinstance(message, ResourceUpdatedNotification):
            self.seen.append(f"updated {message.params.uri}")

    async def drain(self, subscription: Subscription) -> None:
        """A subscriptions/listen stream's events (the current revision)."""
        async for event in subscription:
            if isinstance(event, ResourcesListChanged):
                self.seen.append("list_changed")
            elif isinstance(event, ResourceUpdated):
                self.seen.append(f"updated {event.uri}")

    async def until(self, expected: set[str], act: Callable[[], Any]) -> None:
        """Act (in a thread) until every expected notification came, in bounded rounds: over
        stdio the server is watched by polling, which may begin after the first act."""
        for _ in range(ROUNDS):
            await anyio.to_thread.run_sync(act)
            with anyio.move_on_after(2):
                while not expected <= set(self.seen):
                    await anyio.sleep(0.02)
            if expected <= set(self.seen):
                return
        raise AssertionError(f"not notified of {expected - set(self.seen)}; got {self.seen}")


@pytest.mark.parametrize(("transport", "mode", "revision"), VARIANTS, ids=VARIANT_IDS)
async def test_listening_clients_hear_of_new_requests_and_deliveries(
    twin: Running, receiver: tuple[Receiver, str], transport: str, mode: str, revision: str
) -> None:
    _, hook_url = receiver
    heard = Heard()
    async with mcp_client(
        twin.origin, transport, mode, revision, message_handler=heard.handler
    ) as client:
        connected = data(
            await client.call_tool(
                "connect", {"client_id": f"listen-{transport}-{mode}", "webhook_url": hook_url}
            )
        )
        handle = connected["connection_id"]
        requests_uri = f"apitwin://connections/{handle}/requests"
        deliveries_uri = f"apitwin://connections/{handle}/deliveries"
        auth = {"Authorization": f"Bearer {connected['api_key']}"}

        def sut_creates_a_project() -> None:  # a request, and the project.created it emits
            answer = httpx.post(f"{connected['base_url']}/projects", json=PROJECT, headers=auth)
            assert answer.status_code == 201, answer.text

        expected = {"list_changed", f"updated {requests_uri}", f"updated {deliveries_uri}"}
        if revision == CURRENT:
            listen = client.listen(
                resources_list_changed=True, resource_subscriptions=[requests_uri, deliveries_uri]
            )
            async with listen as subscription, anyio.create_task_group() as tasks:
                tasks.start_soon(heard.drain, subscription)
                await heard.until(expected, sut_creates_a_project)
                tasks.cancel_scope.cancel()
        else:
            await client.list_resources()  # a session that lists resources hears list changes
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # removed in the current revision, not this one
                await client.subscribe_resource(requests_uri)
                await client.subscribe_resource(deliveries_uri)
            await heard.until(expected, sut_creates_a_project)

        # what the notifications announced is there to read
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert requests_uri in listed
        newest = await client.read_resource(requests_uri)
        entries = json.loads(newest.contents[0].text)
        assert entries[0]["operation"] == "createProject"
        assert entries[0]["status"] == 201
        assert f"{requests_uri}/{entries[0]['id']}" in listed
        feed = await client.read_resource(deliveries_uri)
        assert "project.created" in feed.contents[0].text


async def test_a_listening_client_does_not_keep_the_server_from_stopping() -> None:
    """uvicorn waits for open responses before it stops; a listen stream must end at Ctrl+C."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "apitwin", "demo", "--db", ":memory:", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # ends at the banner, or when the process does
            if "press Ctrl+C" in line:
                break
        async with (
            Client(f"http://127.0.0.1:{port}/mcp") as client,
            client.listen(resources_list_changed=True) as subscription,
        ):
            process.send_signal(signal.SIGINT)
            with anyio.fail_after(WAIT):
                async for _ in subscription:  # ends when the server closes the stream
                    pass
            stopped = await anyio.to_thread.run_sync(process.wait, WAIT)  # raises if it hangs
            assert stopped in (0, 128 + signal.SIGINT, -signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
