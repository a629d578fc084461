"""`apitwin listen` as a user runs it: a real process receiving real signed deliveries."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client
from standardwebhooks.webhooks import Webhook

from listening import WAIT, Listen, json_line

from conftest import EXAMPLE, PROJECT, Receiver, Running, serve, serve_twin


class Admin:
    """The twin's admin API, as a script would call it."""

    def __init__(self, origin: str) -> None:
        self.api = origin + "/_apitwin/api"

    def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        response = httpx.request(method, self.api + path, json=body, params=params or None)
        assert response.status_code < 300, response.text
        return response.json()

    def connect(self, client_id: str) -> str:
        return str(self.call("POST", "/connections", {"client_id": client_id})["connection_id"])

    def delivery(self, handle: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The newest delivery once ``done`` holds for it (the twin records it after the answer)."""
        deadline = time.monotonic() + WAIT
        while True:
            latest = self.call("GET", f"/connections/{handle}/deliveries", limit=1)["deliveries"][0]
            if done(latest) or time.monotonic() > deadline:
                return dict(latest)
            time.sleep(0.05)


@pytest.fixture
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


def test_listen_registers_verifies_each_delivery_and_removes_its_endpoint(twin: Running) -> None:
    admin = Admin(twin.origin)
    handle = admin.connect("qa")
    listen = Listen("--server", twin.origin, "--connection", handle, "--port", "0")
    try:
        endpoints = admin.call("GET", f"/connections/{handle}/endpoints")["endpoints"]
        assert [e["url"] for e in endpoints] == [listen.url]
        assert endpoints[0]["id"] in listen.banner
        assert "whsec_" in listen.banner and "…" in listen.banner  # only ever masked

        created = admin.call("POST", f"/connections/{handle}/records/projects", {"data": PROJECT})
        line = listen.wait_for(lambda s: "project.created" in s)
        assert "attempt 1" in line and "✓ verified" in line and line.rstrip().endswith("→ 200")
        assert admin.delivery(handle, lambda d: d["status"] != "delivering")["status"] == (
            "succeeded"
        )

        # Deliveries whose signature is wrong, missing or stale are refused, and say why.
        reasons = {
            "wrong_secret": "✗ signature mismatch",
            "missing_header": "✗ no signature header",
            "stale_timestamp": "✗ timestamp outside tolerance",
        }
        refused: dict[str, str] = {}
        for mode, reason in reasons.items():
            admin.call(
                "POST",
                f"/connections/{handle}/faults",
                {"kind": "bad_signature", "params": {"mode": mode}, "next": 1},
            )
            sent = admin.call(
                "POST",
                f"/connections/{handle}/events",
                {
                    "event": "project.updated",
                    "record": {"resource": "projects", "id": created["id"]},
                },
            )
            line = listen.wait_for(lambda s, m=sent["message_id"]: m in s and "attempt 1" in s)
            assert reason in line and line.rstrip().endswith("→ 400"), line
            refused[mode] = sent["message_id"]
        assert "behind this machine's clock" in listen.wait_for(lambda s: "outside" in s)

        # A refusal is a failure to the twin: it retries, correctly signed this time.
        admin.call("POST", f"/connections/{handle}/clock/advance", {"seconds": 10})
        for message_id in refused.values():
            line = listen.wait_for(lambda s, m=message_id: m in s and "attempt 2" in s)
            assert "✓ verified" in line and line.rstrip().endswith("→ 200"), line
    finally:
        code, rest = listen.stop()
    assert code == 0
    assert f"removed endpoint {endpoints[0]['id']}" in rest
    assert admin.call("GET", f"/connections/{handle}/endpoints")["endpoints"] == []


def test_the_chosen_status_is_answered_and_makes_the_twin_retry(twin: Running) -> None:
    admin = Admin(twin.origin)
    handle = admin.connect("qa")
    listen = Listen(
        "--server", twin.origin, "--connection", handle, "--port", "0", "--status", "503", "--json"
    )
    try:
        admin.call("POST", f"/connections/{handle}/records/projects", {"data": PROJECT})
        first = json.loads(listen.wait_for(json_line(event="project.created")))
        assert first["verified"] is True and first["reason"] is None
        assert first["status"] == 503 and first["attempt"] == 1
        assert first["payload"]["data"]["object"]["title"] == PROJECT["title"]
        failed = admin.delivery(handle, lambda d: d.get("last_status") == 503)
        assert (failed["status"], failed["last_status"]) == ("pending", 503)

        admin.call("POST", f"/connections/{handle}/clock/advance", {"seconds": 10})
        second = json.loads(listen.wait_for(json_line(message_id=first["message_id"], attempt=2)))
        assert second["status"] == 503 and second["verified"] is True
        retried = admin.call("GET", f"/connections/{handle}/deliveries/{failed['id']}")
        assert [a["response_status"] for a in retried["attempt_log"]] == [503, 503]
    finally:
        code, _ = listen.stop()
    assert code == 0


@pytest.mark.parametrize(
    ("scheme", "by_env"),
    [("stripe", False), ("github", True), ("standard-webhooks-v1a", False), ("slack", True)],
)
def test_a_given_secret_verifies_that_schemes_signatures(
    twin: Running, scheme: str, by_env: bool
) -> None:
    admin = Admin(twin.origin)
    handle = admin.connect("qa")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    endpoint = admin.call(
        "POST", f"/connections/{handle}/endpoints", {"url": url, "scheme": scheme}
    )
    args = ["--port", str(port), "--path", "/hooks", "--scheme", scheme, "--json"]
    env = {"APITWIN_WEBHOOK_SECRET": endpoint["secret"]} if by_env else {}
    listen = Listen(*args, *([] if by_env else ["--secret", endpoint["secret"]]), env=env)
    try:
        assert listen.url == url
        assert endpoint["secret"] not in listen.banner
        admin.call("POST", f"/connections/{handle}/records/projects", {"data": PROJECT})
        record = json.loads(listen.wait_for(json_line(event="project.created")))
        assert (record["verified"], record["status"], record["path"]) == (True, 200, "/hooks")
        assert record["message_id"]

        unsigned = httpx.post(url, json={"type": "project.created", "id": "evt_1"})
        assert unsigned.status_code == 400
        refused = json.loads(listen.wait_for(json_line(message_id="evt_1")))
        assert refused["verified"] is False and refused["reason"] == "no signature header"
    finally:
        listen.stop()


def test_without_a_secret_deliveries_are_shown_unverified(twin: Running) -> None:
    listen = Listen("--port", "0", "--status", "202", "--body")
    try:
        answer = httpx.post(listen.url, json={"type": "order.paid", "id": "evt_2", "n": 1})
        assert answer.status_code == 202
        line = listen.wait_for(lambda s: "order.paid" in s)
        assert "evt_2" in line and "? not verified (no secret)" in line and "→ 202" in line
        assert listen.wait_for(lambda s: '"n": 1' in s)  # --body prints the payload under it
    finally:
        listen.stop()


def test_forward_passes_deliveries_on_and_answers_the_targets_status(twin: Running) -> None:
    admin = Admin(twin.origin)
    handle = admin.connect("qa")
    target = Receiver()
    target.statuses = [500]  # the service behind listen fails once
    with serve(target) as target_origin:
        listen = Listen(
            "--server", twin.origin, "--connection", handle, "--port", "0",
            "--forward", target_origin + "/hooks", "--json",
        )  # fmt: skip
        try:
            admin.call("POST", f"/connections/{handle}/records/projects", {"data": PROJECT})
            first = json.loads(listen.wait_for(json_line(event="project.created")))
            assert first["status"] == 500 and first["verified"] is True
            assert first["forwarded"].endswith(": 500")
            admin.delivery(handle, lambda d: d.get("last_status") == 500)
            admin.call("POST", f"/connections/{handle}/clock/advance", {"seconds": 10})
            second = json.loads(
                listen.wait_for(json_line(message_id=first["message_id"], attempt=2))
            )
            assert second["status"] == 200
            target.wait_for(2)
        finally:
            listen.stop()
    # The service behind listen got the twin's exact bytes and signature headers.
    headers, body = target.received[1]
    assert target.paths == ["/hooks", "/hooks"]
    assert headers["webhook-id"] == first["message_id"]
    assert headers["webhook-signature"].startswith("v1,")
    assert json.loads(body)["type"] == "project.created"


def test_listen_errors_are_one_clear_line(twin: Running, tmp_path: Path) -> None:
    def listen(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "apitwin", "listen", "--port", "0", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    unknown = listen("--server", twin.origin, "--connection", "nope")
    assert unknown.returncode == 2
    assert "no connection" in unknown.stderr and "Traceback" not in unknown.stderr
    alone = listen("--server", twin.origin)
    assert alone.returncode == 2 and "--server and --connection go together" in alone.stderr
    both = listen("--server", twin.origin, "--connection", "x", "--secret", "whsec_x")
    assert both.returncode == 2 and "either --secret" in both.stderr
    secret = listen("--secret", "whsec_not*base64")
    assert secret.returncode == 2 and "does not fit the standard-webhooks scheme" in secret.stderr
    status = listen("--status", "99")
    assert status.returncode == 2 and "not an HTTP status" in status.stderr
    port = int(twin.origin.rsplit(":", 1)[1])
    taken = subprocess.run(
        [sys.executable, "-m", "apitwin", "listen", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert taken.returncode == 2 and "cannot listen on 127.0.0.1" in taken.stderr
    assert Admin(twin.origin).call("GET", "/connections/default/endpoints")["endpoints"] == []


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_standard_webhooks_reference_verifier_accepts_what_listen_accepted(twin: Running) -> None:
    """listen's verdict agrees with the reference library's on the very same delivery."""
    admin = Admin(twin.origin)
    handle = admin.connect("qa")
    target = Receiver()
    with serve(target) as target_origin:
        port = _free_port()
        url = f"http://127.0.0.1:{port}/webhooks"
        endpoint = admin.call("POST", f"/connections/{handle}/endpoints", {"url": url})
        listen = Listen(
            "--port", str(port), "--secret", endpoint["secret"], "--json",
            "--forward", target_origin + "/copy",
        )  # fmt: skip
        try:
            admin.call("POST", f"/connections/{handle}/records/projects", {"data": PROJECT})
            record = json.loads(listen.wait_for(json_line(event="project.created")))
            target.wait_for(1)
        finally:
            listen.stop()
    headers, body = target.received[0]
    assert record["verified"] is True
    assert Webhook(endpoint["secret"]).verify(body, headers)["type"] == "project.created"


@pytest.mark.anyio
async def test_an_agent_can_remove_an_endpoint_too(twin: Running) -> None:
    """Removing an endpoint is a control operation like the others, not only listen's."""
    async with Client(f"{twin.origin}/mcp") as agent:
        connected = await agent.call_tool("connect", {"client_id": "qa"})
        handle = connected.structured_content["connection_id"]
        added = await agent.call_tool(
            "add_endpoint", {"connection_id": handle, "url": "http://127.0.0.1:9/hooks"}
        )
        endpoint_id = added.structured_content["id"]
        removed = await agent.call_tool(
            "remove_endpoint", {"connection_id": handle, "endpoint_id": endpoint_id}
        )
        assert removed.structured_content == {"endpoint_id": endpoint_id, "removed": True}
        listed = await agent.call_tool("list_endpoints", {"connection_id": handle})
        assert listed.structured_content["endpoints"] == []
        again = await agent.call_tool(
            "remove_endpoint", {"connection_id": handle, "endpoint_id": endpoint_id}
        )
        assert again.is_error and f"no webhook endpoint {endpoint_id!r}" in str(again.content)
