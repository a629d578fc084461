"""Smoke test with the MCP Inspector CLI, an independent client (installed by `.ci/run`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import EXAMPLE, REPO, Running, serve_twin

LOCAL = REPO / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector"


def inspector() -> str:
    found = os.environ.get("APITWIN_INSPECTOR") or (str(LOCAL) if LOCAL.exists() else None)
    found = found or shutil.which("mcp-inspector")
    if found is None:
        pytest.skip("the MCP Inspector CLI is not installed (.ci/run installs it from npm)")
    return found


@pytest.fixture(scope="module")
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


def run(twin: Running, *args: str, era: str = "auto") -> dict[str, object]:
    command = [inspector(), "--cli", f"{twin.origin}/mcp", "--protocol-era", era, *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=Path(REPO))
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout))


@pytest.mark.parametrize("era", ["legacy", "modern"])
def test_inspector_lists_tools_strictly_and_calls_connect_and_create_record(
    twin: Running, era: str
) -> None:
    tools = run(twin, "--method", "tools/list", "--strict", era=era)
    names = {tool["name"] for tool in tools["tools"]}  # type: ignore[attr-defined]
    assert {"connect", "create_record", "list_records", "add_fault"} <= names
    connected = run(
        twin,
        "--method",
        "tools/call",
        "--tool-name",
        "connect",
        "--tool-arg",
        f"client_id=inspector-{era}",
        era=era,
    )
    view = json.loads(connected["content"][0]["text"])  # type: ignore[index]
    project = (
        'data={"title": "Smoke", "brief": "From the Inspector", '
        '"industry": "energy_resources", "geographies": ["DE"]}'
    )
    created = run(
        twin,
        "--method",
        "tools/call",
        "--tool-name",
        "create_record",
        "--tool-arg",
        f"connection_id={view['connection_id']}",
        "resource=projects",
        project,
        era=era,
    )
    record = json.loads(created["content"][0]["text"])  # type: ignore[index]
    assert record["record"]["title"] == "Smoke"
