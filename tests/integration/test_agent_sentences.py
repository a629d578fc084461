"""What a user says to the coding agent, replayed as the MCP tool calls it makes, against the
bundled example; checked by what the system under test sees: the API with its own credentials,
and its webhook receiver."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx2 as httpx
import pytest
from standardwebhooks.webhooks import Webhook

from mcp_clients import CURRENT, data, mcp_client, serve_example

from conftest import EXPERT, Receiver, Running, serve

pytestmark = pytest.mark.anyio

CLIENT_ID = "acme-qa"
# The system under test's own configuration: the credentials the example gives acme-qa.
CLIENT_SECRET = "cs_demo_acme_qa_secret"
TITLE = "Grid-scale storage in Germany"
EXPERTS = ["Mara Quillfeather", "Tobin Ashgrove"]


@pytest.fixture
def example() -> Iterator[Running]:
    with serve_example() as running:
        yield running


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """The system under test's webhook receiver."""
    app = Receiver()
    with serve(app) as url:
        yield app, url + "/hooks"


class SystemUnderTest:
    """The expert network's integration: OAuth client credentials, then the partner's API."""

    def __init__(self, base_url: str, token_url: str) -> None:
        token = httpx.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
        )
        assert token.status_code == 200, token.text
        self.api = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
        )

    def open_project(self, title: str) -> dict[str, object]:
        listed = self.api.get("/projects", params={"status": "open", "limit": 100})
        assert listed.status_code == 200, listed.text
        return next(p for p in listed.json()["data"] if p["title"] == title)

    def submit(self, project_id: str, name: str) -> str:
        answer = self.api.post(f"/projects/{project_id}/experts", json={**EXPERT, "name": name})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


def events_of(hooks: Receiver, secret: str) -> list[tuple[str, str]]:
    """(type, webhook-id) of every delivery the receiver got; each signature must verify."""
    found = []
    for headers, body in hooks.received:
        event = Webhook(secret).verify(body, headers)
        found.append((str(event["type"]), headers["webhook-id"]))
    return found


async def test_the_agent_sentences_against_the_bundled_example(
    example: Running, receiver: tuple[Receiver, str]
) -> None:
    hooks, hook_url = receiver
    async with mcp_client(example.origin, "http", "auto", CURRENT) as agent:
        # "connect to server at http://127.0.0.1:8000 using client id acme-qa"
        # (with where the system under test receives webhooks)
        connected = data(
            await agent.call_tool(
                "connect",
                {"client_id": CLIENT_ID, "server_url": example.origin, "webhook_url": hook_url},
            )
        )
        handle = connected["connection_id"]
        assert handle == "research:acme-qa"
        assert connected["created"] is False  # configured in the example's apitwin.yaml
        secret = connected["webhook"]["secret"]

        # "create a new project on that connection"
        made = data(
            await agent.call_tool(
                "create_project",
                {
                    "connection_id": handle,
                    "title": TITLE,
                    "brief": "Speak with operators of grid batteries about procurement.",
                    "industry": "energy_resources",
                },
            )
        )
        project = made["steps"][0]["record"]

        # the system under test finds it with its own credentials and submits two experts
        sut = SystemUnderTest(connected["base_url"], connected["token_url"][0])
        assert sut.open_project(TITLE)["id"] == project["id"]
        expert_ids = [sut.submit(project["id"], name) for name in EXPERTS]
        await anyio.to_thread.run_sync(hooks.wait_for, 1)
        assert events_of(hooks, secret)[0][0] == "project.created"

        # "show me experts submitted to this project"
        experts = data(
            await agent.call_tool(
                "list_records",
                {
                    "connection_id": handle,
                    "resource": "experts",
                    "parent": {"projects": project["id"]},
                    "filters": {"status": "submitted"},
                },
            )
        )
        assert sorted(e["name"] for e in experts["records"]) == sorted(EXPERTS)
        assert sorted(e["id"] for e in experts["records"]) == sorted(expert_ids)

        # the platform acknowledges each submission two seconds later (a rule of the example)
        data(await agent.call_tool("advance_clock", {"connection_id": handle, "seconds": 3}))
        await anyio.to_thread.run_sync(hooks.wait_for, 3)
        received = [kind for kind, _ in events_of(hooks, secret)]
        assert received.count("expert.received") == 2

        # "make the next webhook fail with a 503"
        rule = data(
            await agent.call_tool(
                "add_fault",
                {"connection_id": handle, "kind": "fail", "params": {"status": 503}, "next": 1},
            )
        )
        shortlisted = data(
            await agent.call_tool(
                "shortlist_expert",
                {"connection_id": handle, "project_id": project["id"], "expert_id": expert_ids[0]},
            )
        )
        assert shortlisted["steps"][0]["record"]["status"] == "shortlisted"
        pending = data(
            await agent.call_tool(
                "list_deliveries", {"connection_id": handle, "event": "expert.shortlisted"}
            )
        )
        (delivery,) = pending["deliveries"]
        failed = data(
            await agent.call_tool(
                "get_delivery", {"connection_id": handle, "delivery_id": delivery["id"]}
            )
        )
        assert failed["status"] == "pending"  # a retry is scheduled
        assert [a["response_status"] for a in failed["attempt_log"]] == [503]
        # the failed attempt never reached the system under test ...
        assert "expert.shortlisted" not in [kind for kind, _ in events_of(hooks, secret)]
        # ... the retry does, once it is due, signed like any delivery
        data(await agent.call_tool("advance_clock", {"connection_id": handle, "seconds": 10}))
        await anyio.to_thread.run_sync(hooks.wait_for, 4)
        kind, webhook_id = events_of(hooks, secret)[3]
        assert kind == "expert.shortlisted"
        retried = data(
            await agent.call_tool(
                "get_delivery", {"connection_id": handle, "delivery_id": delivery["id"]}
            )
        )
        assert retried["status"] == "succeeded"
        assert [a["response_status"] for a in retried["attempt_log"]] == [503, 200]
        assert webhook_id == retried["message"]
        faults = data(await agent.call_tool("list_faults", {"connection_id": handle}))
        (spent,) = faults["faults"]
        assert spent["id"] == rule["id"]

        # "what did our platform send in its last three requests?"
        journal = data(
            await agent.call_tool("list_requests", {"connection_id": handle, "limit": 3})
        )
        last = journal["requests"]
        assert [e["operation"] for e in last] == ["submitExpert", "submitExpert", "listProjects"]
        assert [e["status"] for e in last] == [201, 201, 200]
        assert EXPERTS[1] in last[0]["request_body"]["text"]
        assert EXPERTS[0] in last[1]["request_body"]["text"]
        assert last[2]["query"] == "status=open&limit=100"
        assert "…" in last[0]["request_headers"]["authorization"]  # tokens never in full
