"""The same scenario through the MCP tools and through the admin REST API gives the same results.

Each step is a tool call and the admin API request that does the same; the two runs use two
connections of one server, and their answers are compared once ids, times and secrets (which
differ by nature) are replaced by placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest

from mcp_clients import CURRENT, data, mcp_client, serve_example

from conftest import PROJECT, Running

pytestmark = pytest.mark.anyio

ID = re.compile(r"\b[a-z]{2,5}_(?=[a-z]*[A-Z0-9])[A-Za-z0-9]{6,}\b")  # prj_2kQ9…, not run_action
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
VOLATILE = {"created", "created_at", "updated", "seq", "at", "now", "latency_ms", "next_attempt_at"}
SECRETS = {"secret", "client_secret", "api_key", "webhook_secret"}


@pytest.fixture
def example() -> Iterator[Running]:
    with serve_example() as running:
        yield running


@dataclass
class Step:
    """A tool call and the admin API request doing the same; ``{h}`` is the connection handle,
    ``{project}`` the project the scenario created."""

    tool: str
    arguments: dict[str, Any]
    method: str
    path: str
    body: dict[str, Any] | None = None
    query: dict[str, Any] = field(default_factory=dict)


def scenario() -> list[Step]:
    record = "/connections/{h}/records/projects/{project}"
    return [
        Step("describe_api", {"resource": "projects"}, "GET", "/connections/{h}/describe",
             query={"resource": "projects"}),
        Step("create_record", {"resource": "projects", "data": PROJECT}, "POST",
             "/connections/{h}/records/projects", {"data": PROJECT}),
        Step("get_record", {"resource": "projects", "record_id": "{project}"}, "GET", record),
        Step("update_record",
             {"resource": "projects", "record_id": "{project}", "changes": {"brief": "Cells"}},
             "PATCH", record, {"changes": {"brief": "Cells"}}),
        Step("list_records", {"resource": "projects", "filters": {"industry": "energy_resources"}},
             "GET", "/connections/{h}/records/projects", query={"industry": "energy_resources"}),
        Step("run_action",
             {"action": "create_project",
              "inputs": {"title": "Heat pumps", "brief": "Installers", "industry": "industrials"}},
             "POST", "/connections/{h}/actions/create_project",
             {"inputs": {"title": "Heat pumps", "brief": "Installers", "industry": "industrials"}}),
        Step("add_fault",
             {"kind": "status", "params": {"status": 503}, "operation": "listProjects", "next": 2},
             "POST", "/connections/{h}/faults",
             {"kind": "status", "params": {"status": 503}, "operation": "listProjects", "next": 2}),
        Step("list_faults", {}, "GET", "/connections/{h}/faults"),
        Step("trigger_event",
             {"event": "project.updated", "record": {"resource": "projects", "id": "{project}"}},
             "POST", "/connections/{h}/events",
             {"event": "project.updated", "record": {"resource": "projects", "id": "{project}"}}),
        Step("list_deliveries", {"limit": 5}, "GET", "/connections/{h}/deliveries",
             query={"limit": 5}),
        Step("count_requests", {"operation": "listProjects"}, "GET",
             "/connections/{h}/requests/count", query={"operation": "listProjects"}),
        Step("clear_faults", {}, "DELETE", "/connections/{h}/faults"),
        Step("list_endpoints", {}, "GET", "/connections/{h}/endpoints"),
        Step("delete_record", {"resource": "projects", "record_id": "{project}"}, "DELETE", record),
        Step("reset_connection", {}, "POST", "/connections/{h}/reset"),
        Step("list_records", {"resource": "projects"}, "GET", "/connections/{h}/records/projects"),
        Step("remove_connection", {}, "DELETE", "/connections/{h}"),
    ]  # fmt: skip


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names) if "{" in value else value
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def normalized(value: Any, client_id: str) -> Any:
    """``value`` with what differs between two connections replaced by placeholders."""
    if isinstance(value, dict):
        return {
            k: "<volatile>" if k in VOLATILE else "<secret>" if k in SECRETS else
            normalized(v, client_id)
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [normalized(v, client_id) for v in value]
    if isinstance(value, str):
        value = value.replace(client_id, "<client>")
        return TIME.sub("<time>", ID.sub("<id>", value))
    return value


async def run_mcp(origin: str, client_id: str) -> list[Any]:
    answers = []
    async with mcp_client(origin, "http", "auto", CURRENT) as client:
        connected = data(await client.call_tool("connect", {"client_id": client_id}))
        names = {"h": connected["connection_id"]}
        answers.append(connected)
        for step in scenario():
            answer = data(
                await client.call_tool(
                    step.tool, {"connection_id": names["h"], **fill(step.arguments, names)}
                )
            )
            if step.tool == "create_record":
                names["project"] = answer["id"]
            answers.append(answer)
    return answers


def run_rest(origin: str, client_id: str) -> list[Any]:
    api = httpx.Client(base_url=f"{origin}/_apitwin/api")
    connected = api.post("/connections", json={"client_id": client_id})
    assert connected.status_code == 201, connected.text
    names = {"h": quote(connected.json()["connection_id"], safe=":")}
    answers: list[Any] = [connected.json()]
    for step in scenario():
        body = fill(step.body, names) if step.body is not None else None
        answer = api.request(
            step.method, fill(step.path, names), json=body, params=fill(step.query, names)
        )
        assert answer.status_code < 300, (step.tool, answer.status_code, answer.text)
        if step.tool == "create_record":
            names["project"] = answer.json()["id"]
        answers.append(answer.json())
    return answers


async def test_the_mcp_tools_and_the_admin_api_answer_alike(example: Running) -> None:
    over_mcp = await run_mcp(example.origin, "parity-mcp")
    over_rest = run_rest(example.origin, "parity-rest")
    tools = ["connect", *(s.tool for s in scenario())]
    assert len(over_mcp) == len(over_rest) == len(tools)
    for tool, mine, theirs in zip(tools, over_mcp, over_rest, strict=True):
        assert normalized(mine, "parity-mcp") == normalized(theirs, "parity-rest"), tool
    # the comparison is not vacuous: the runs did things
    assert over_mcp[2]["record"]["title"] == PROJECT["title"]
    assert over_rest[-2]["total"] == 2
    assert over_rest[-1]["removed"] is True
    assert [f["kind"] for f in over_rest[8]["faults"]] == ["status"]
    assert over_mcp[6]["steps"][0]["record"]["title"] == "Heat pumps"
