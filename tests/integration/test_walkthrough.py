"""The README walkthrough, end to end: the commands and script it shows, an MCP client for the
agent's part, and `apitwin listen` receiving the twin's signed webhooks."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from listening import WAIT, Listen

from conftest import REPO

pytestmark = pytest.mark.anyio

README_PORT = "http://127.0.0.1:8000"
TITLE = "Grid-scale storage in Germany"


def walkthrough() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Walkthrough")
    return text[start : text.index("\n## ", start + 1)]


def blocks(section: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def command(section: str, name: str) -> list[str]:
    """The walkthrough's `apitwin NAME ...` command line, as arguments after `apitwin`."""
    for block in blocks(section, "sh"):
        for line in block.splitlines():
            words = shlex.split(line.strip())
            if words[:2] == [".venv/bin/apitwin", name]:
                return words[1:]
    raise AssertionError(f"the walkthrough shows no `apitwin {name}` command")


def sut_script(section: str) -> str:
    (script,) = blocks(section, "python")
    # The block is indented under its list item.
    return "\n".join(line.removeprefix("   ") for line in script.splitlines()) + "\n"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def demo(args: list[str]) -> Iterator[str]:
    """The walkthrough's `apitwin demo` on a free port; yields its origin."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apitwin", *args, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # ends at the banner, or when the process does
            seen.append(line)
            if "press Ctrl+C" in line:
                break
        assert "press Ctrl+C" in "".join(seen), "".join(seen)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def steps_of(result: dict[str, Any], resource: str) -> list[dict[str, Any]]:
    return [step for step in result["steps"] if step.get("resource") == resource]


async def test_the_readme_walkthrough(tmp_path: Path) -> None:
    section = walkthrough()
    tools = [
        "connect",
        "create_project",
        "list_records",
        "shortlist_expert",
        "request_call",
        "add_fault",
        "cancel_call",
        "advance_clock",
        "list_deliveries",
    ]
    for tool in tools:  # the README names every tool this test calls
        assert f"`{tool}`" in section, tool

    # 1. the twin
    with demo(command(section, "demo")) as origin:
        async with Client(f"{origin}/mcp") as agent:

            async def call(tool: str, **arguments: Any) -> dict[str, Any]:
                return data(await agent.call_tool(tool, arguments))

            # 2. "Connect to apitwin with client id acme-qa"
            connected = await call("connect", client_id="acme-qa")
            handle = connected["connection_id"]
            assert handle == "research:acme-qa"
            assert connected["token_url"] == [f"{origin}/partner/v1/oauth/token"]

            # 3. apitwin listen, registered on that connection
            listen_args = [
                origin if word == README_PORT else word for word in command(section, "listen")
            ]
            assert handle in listen_args
            listen = Listen(*listen_args[1:], "--port", "0")
            try:
                await walk(call, handle, listen, section, origin, tmp_path)
            finally:
                code, rest = listen.stop()
            assert code == 0
            assert "removed endpoint" in rest
            endpoints = await call("list_endpoints", connection_id=handle)
            assert endpoints["endpoints"] == []


async def walk(
    call: Any, handle: str, listen: Listen, section: str, origin: str, tmp_path: Path
) -> None:
    # 4. "Create a project 'Grid-scale storage in Germany' in energy_resources: ..."
    created = await call(
        "create_project",
        connection_id=handle,
        title=TITLE,
        brief="Speak with operators of grid batteries about procurement.",
        industry="energy_resources",
    )
    (project,) = steps_of(created, "projects")
    line = await anyio.to_thread.run_sync(listen.wait_for, lambda s: "project.created" in s)
    assert "attempt 1  ✓ verified  → 200" in line

    # 5. the system under test, with its OAuth token
    script = tmp_path / "sut.py"
    script.write_text(sut_script(section), encoding="utf-8")
    env = {**os.environ, "PARTNER_API": f"{origin}/partner/v1"}
    ran = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
        )
    )
    assert ran.returncode == 0, ran.stderr
    submitted = re.findall(r"^201 (exp_\S+)$", ran.stdout, flags=re.MULTILINE)
    assert len(submitted) == 2, ran.stdout
    first = await anyio.to_thread.run_sync(listen.wait_for, lambda s: "expert.received" in s)
    second = await anyio.to_thread.run_sync(
        listen.wait_for, lambda s: "expert.received" in s and s != first
    )
    received = [first, second]
    assert all("✓ verified  → 200" in line for line in received)

    # 6. "Show me the experts submitted to that project."
    experts = await call(
        "list_records",
        connection_id=handle,
        resource="experts",
        parent={"projects": project["id"]},
    )
    assert sorted(r["id"] for r in experts["records"]) == sorted(submitted)
    assert {r["name"] for r in experts["records"]} == {"Mara Quillfeather", "Tobin Ashgrove"}
    assert {r["status"] for r in experts["records"]} == {"submitted"}
    mara = next(r for r in experts["records"] if r["name"] == "Mara Quillfeather")

    # 7. "Shortlist Mara Quillfeather and request a call with her ..."
    await call("shortlist_expert", connection_id=handle, project_id=project["id"],
               expert_id=mara["id"])  # fmt: skip
    requested = await call(
        "request_call",
        connection_id=handle,
        project_id=project["id"],
        expert_id=mara["id"],
        topic="Cell procurement",
        window_start="2026-12-01T09:00:00Z",
        window_end="2026-12-01T17:00:00Z",
    )
    (the_call,) = steps_of(requested, "calls")
    assert the_call["record"]["status"] == "requested"
    line = await anyio.to_thread.run_sync(listen.wait_for, lambda s: "expert.shortlisted" in s)
    assert "✓ verified  → 200" in line

    # 8. "Make the next webhook fail its signature check, then cancel the call"
    await call(
        "add_fault",
        connection_id=handle,
        kind="bad_signature",
        params={"mode": "wrong_secret"},
        next=1,
    )
    await call(
        "cancel_call",
        connection_id=handle,
        call_id=the_call["id"],
        reason="The expert is no longer available.",
    )
    failed = await anyio.to_thread.run_sync(listen.wait_for, lambda s: "call.cancelled" in s)
    assert "attempt 1  ✗ signature mismatch  → 400" in failed

    # 9. "Advance the twin's clock by 10 seconds and list the deliveries."
    await call("advance_clock", connection_id=handle, seconds=10)
    retried = await anyio.to_thread.run_sync(
        listen.wait_for, lambda s: "call.cancelled" in s and "attempt 2" in s
    )
    assert "✓ verified  → 200" in retried
    message_id = failed.split()[2]
    assert retried.split()[2] == message_id
    delivery: dict[str, Any] = {}
    for _ in range(100):  # the twin records the outcome just after listen has answered
        listed = await call("list_deliveries", connection_id=handle, event="call.cancelled")
        delivery = listed["deliveries"][0]
        if delivery["status"] == "succeeded":
            break
        await anyio.sleep(0.05)
    assert (delivery["message"], delivery["status"], delivery["attempts"]) == (
        message_id,
        "succeeded",
        2,
    )
    assert delivery["last_fault"]["fault_kind"] == "bad_signature"
