"""Control-plane security: the admin token, loopback binding, secrets, and where webhooks may go.

Every admin route (enumerated from the admin API's own routes and its OpenAPI document) and MCP
refuse callers without the token; binding beyond loopback without one refuses to start; secrets
appear in full once, when created, and nowhere else (answers, journal, tool output, errors, log);
webhook targets outside the allow-list are refused when dialled, whatever the URL says (literal,
name, embedded address) and however the receiver answers (a redirect is never followed).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from rig import EXAMPLE, Server, free_port, launch, record_figures, write_config
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apitwin.clock import VirtualClock
from apitwin.config import ConnectionConfig, WebhookConfig
from apitwin.server.admin_api import ENDPOINTS
from apitwin.state.sqlite import SQLiteStore
from apitwin.webhooks.delivery import Dispatcher
from apitwin.webhooks.outbox import Outbox
from apitwin.webhooks.safety import AllowList
from mcp_clients import data

from conftest import PROJECT, Running, serve, serve_twin

pytestmark = pytest.mark.anyio

TOKEN = "reliability-admin-token-7f3a9c"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "/_apitwin/api"
# What a stranger might send instead of the token.
STRANGERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token-0123456789abc"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": TOKEN},
    {"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()},
    {"X-Admin-Token": TOKEN},
]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Server]:
    config = write_config(tmp_path / "apitwin.yaml", tmp_path / "twin.db", [{"client_id": "acme"}])
    server = launch(config, tmp_path / "server.log", args=["--admin-token", TOKEN])
    try:
        yield server
    finally:
        server.stop()


def _concrete(path: str) -> str:
    values = {"cid": "research:acme", "twin": "research", "resource": "projects"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


async def test_with_a_token_every_admin_route_and_mcp_refuse_callers_without_it(
    guarded: Server,
) -> None:
    document = httpx.get(f"{guarded.origin}/_apitwin/openapi.json").json()
    documented = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    routed = {(e.method, PREFIX + e.path) for e in ENDPOINTS}
    assert routed == documented  # the document lists every route the app serves
    refused = 0
    with httpx.Client(timeout=10) as client:
        for method, path in sorted(routed):
            url = guarded.origin + _concrete(path)
            for headers in STRANGERS:
                body = {} if method in ("POST", "PATCH", "PUT") else None
                answer = client.request(method, url, headers=headers, json=body)
                assert answer.status_code == 401, (method, path, headers, answer.text)
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert TOKEN not in answer.text
                refused += 1
        # Paths the admin API does not have are refused too, not revealed as missing.
        for method in ("GET", "POST", "DELETE"):
            answer = client.request(method, f"{guarded.origin}{PREFIX}/no/such/route")
            assert answer.status_code == 401, answer.text
            refused += 1
        # MCP, in every method its transport uses.
        initialize = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {}},
        }
        for headers in STRANGERS:
            for method in ("POST", "GET", "DELETE"):
                answer = client.request(
                    method,
                    f"{guarded.origin}/mcp",
                    headers={**headers, "accept": "application/json, text/event-stream"},
                    json=initialize if method == "POST" else None,
                )
                assert answer.status_code == 401, (method, headers, answer.text)
                refused += 1
        # The token opens both: the guard refuses strangers, not everyone.
        listed = client.get(f"{guarded.origin}{PREFIX}/connections", headers=GOOD)
        assert listed.status_code == 200, listed.text
    http = httpx.AsyncClient(headers=GOOD, timeout=30)
    target = streamable_http_client(f"{guarded.origin}/mcp", http_client=http)
    async with http, Client(target) as session:
        tools = (await session.list_tools()).tools
        assert {"connect", "list_records", "add_fault"} <= {t.name for t in tools}
    record_figures(
        "security",
        {"admin_routes": len(routed), "unauthorised_calls_refused": refused},
    )


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "partner-twin.example"])
def test_binding_beyond_loopback_without_a_token_refuses_to_start(host: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "APITWIN_ADMIN_TOKEN"}
    command = [sys.executable, "-m", "apitwin", "serve", str(EXAMPLE), "--db", ":memory:"]
    result = subprocess.run(
        [*command, "--host", host, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "--admin-token" in result.stderr and host in result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_binding_beyond_loopback_without_a_token_refuses_to_start(
    tmp_path: Path,
) -> None:
    config = tmp_path / "apitwin.yaml"
    config.write_text(f"server: {{host: 0.0.0.0, db: ':memory:'}}\ntwins:\n  - spec: {EXAMPLE}\n")
    env = {k: v for k, v in os.environ.items() if k != "APITWIN_ADMIN_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "apitwin", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "--admin-token" in result.stderr


# -- secrets ------------------------------------------------------------------------------------


@dataclass
class Secrets:
    """Every secret value the test saw, by where it came from."""

    values: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        assert "…" not in value and len(value) >= 12, (name, value)
        self.values[name] = value

    def absent(self, text: str, where: str) -> None:
        leaked = [name for name, value in self.values.items() if value in text]
        assert not leaked, f"{where} shows {leaked}"


async def test_secrets_are_shown_once_at_creation_and_masked_everywhere_else(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path / "apitwin.yaml", tmp_path / "twin.db", [{"client_id": "acme"}])
    log = tmp_path / "server.log"
    server = launch(config, log, args=["--admin-token", TOKEN])
    hooks_app = _Recorder()
    secrets = Secrets()
    secrets.add("admin token", TOKEN)
    try:
        with serve(hooks_app) as hooks, httpx.Client(headers=GOOD, timeout=10) as admin:
            api = f"{server.origin}{PREFIX}"
            # Created through the admin API: in full in that answer only.
            made = admin.post(f"{api}/connections", json={"client_id": "globex"}).json()
            secrets.add("globex client_secret", made["client_secret"])
            secrets.add("globex api_key", made["api_key"])
            again = admin.post(f"{api}/connections", json={"client_id": "globex"})
            secrets.absent(again.text, "connecting again")
            secrets.absent(admin.get(f"{api}/connections").text, "list_connections")
            cid = made["connection_id"]
            endpoint = admin.post(
                f"{api}/connections/{cid}/endpoints", json={"url": f"{hooks}/hooks"}
            ).json()
            secrets.add("endpoint signing secret", endpoint["secret"])
            secrets.absent(admin.get(f"{api}/connections/{cid}/endpoints").text, "endpoints")

            # Created through MCP: in full in that tool result only.
            http = httpx.AsyncClient(headers=GOOD, timeout=30)
            target = streamable_http_client(f"{server.origin}/mcp", http_client=http)
            async with http, Client(target) as session:
                made_mcp = data(await session.call_tool("connect", {"client_id": "initech"}))
                secrets.add("initech client_secret", made_mcp["client_secret"])
                secrets.add("initech api_key", made_mcp["api_key"])
                again_mcp = await session.call_tool("connect", {"client_id": "initech"})
                secrets.absent(json.dumps(again_mcp.structured_content), "MCP connect again")

                # The secrets in use: API key, OAuth client credentials, the issued token.
                partner = f"{server.origin}/partner/v1"
                with httpx.Client(timeout=10) as client:
                    key = {"Authorization": f"Bearer {made['api_key']}"}
                    assert client.get(f"{partner}/projects", headers=key).status_code == 200
                    token = client.post(
                        f"{partner}/oauth/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": "globex",
                            "client_secret": made["client_secret"],
                        },
                    )
                    assert token.status_code == 200, token.text
                    secrets.add("access token", token.json()["access_token"])
                    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
                    created = client.post(f"{partner}/projects", json=PROJECT, headers=bearer)
                    assert created.status_code == 201, created.text
                    # Wrong credentials: the error does not echo them.
                    wrong_key = made["api_key"][:-4] + "zzzz"
                    secrets.add("a wrong api key", wrong_key)
                    refused = client.get(
                        f"{partner}/projects",
                        headers={"Authorization": f"Bearer {wrong_key}", "X-Api-Key": wrong_key},
                    )
                    assert refused.status_code == 401
                    secrets.absent(refused.text + str(refused.headers), "a 401 answer")
                    wrong_secret = made["client_secret"][:-4] + "zzzz"
                    secrets.add("a wrong client secret", wrong_secret)
                    bad = client.post(
                        f"{partner}/oauth/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": "globex",
                            "client_secret": wrong_secret,
                        },
                    )
                    assert bad.status_code in (400, 401)
                    secrets.absent(bad.text, "a refused token request")
                    stranger = client.get(f"{api}/connections", headers={"Authorization": "x"})
                    secrets.absent(stranger.text, "an admin 401")

                # A signed delivery: the log of its attempts shows no signing secret.
                fired = admin.post(
                    f"{api}/connections/{cid}/events", json={"event": "project.created"}
                )
                assert fired.status_code in (200, 201), fired.text
                hooks_app.wait(1)
                deliveries = admin.get(f"{api}/connections/{cid}/deliveries").json()
                for delivery in deliveries["deliveries"]:
                    one = admin.get(f"{api}/connections/{cid}/deliveries/{delivery['id']}")
                    secrets.absent(one.text, "a delivery's attempt log")

                # The journal (refused requests go to the default connection's), through the
                # admin API and MCP.
                journalled = 0
                for conn in (cid, "research:default"):
                    journal = admin.get(f"{api}/connections/{conn}/requests", params={"limit": 100})
                    secrets.absent(journal.text, "the journal")
                    for entry in journal.json()["requests"]:
                        full = admin.get(f"{api}/connections/{conn}/requests/{entry['id']}")
                        secrets.absent(full.text, "a journal entry")
                        journalled += 1
                assert journalled >= 5
                tool = await session.call_tool("list_requests", {"connection_id": cid})
                secrets.absent(json.dumps(tool.structured_content), "MCP list_requests")
                tool = await session.call_tool("list_connections", {})
                secrets.absent(json.dumps(tool.structured_content), "MCP list_connections")
    finally:
        server.stop()
    first_run = log.read_text(errors="replace")
    secrets.absent(first_run, "the server log")

    # A restart shows no secret of any connection, not even the default's.
    start = len(first_run)
    server = launch(config, log, args=["--admin-token", TOKEN])
    try:
        default = httpx.get(f"{server.origin}{PREFIX}/connections", headers=GOOD).json()
    finally:
        server.stop()
    restarted = log.read_text(errors="replace")[start:]
    secrets.absent(restarted, "the banner after a restart")
    shown = [c for c in default["connections"] if c["client_id"] == "default"]
    assert shown and "…" in shown[0]["client_secret"]
    record_figures("security", {"secrets_checked": len(secrets.values)})


class _Recorder:
    """A webhook receiver answering 200."""

    def __init__(self) -> None:
        import threading

        self.count = 0
        self.arrived = threading.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        with self.arrived:
            self.count += 1
            self.arrived.notify_all()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def wait(self, count: int) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.count >= count, 10)


# -- where webhooks may go ----------------------------------------------------------------------


@dataclass
class Hits:
    paths: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)


@pytest.fixture
def web() -> Iterator[tuple[str, Hits]]:
    """A loopback site: /ok answers 200, /redirect* answer 3xx to /stolen (which records)."""
    hits = Hits()

    async def handle(request: Request) -> Response:
        hits.paths.append(request.url.path)
        hits.hosts.append(request.headers.get("host", ""))
        path = request.url.path
        if path.startswith("/redirect"):
            status = int(path.removeprefix("/redirect") or 302)
            return Response(status_code=status, headers={"location": f"{base[0]}/stolen"})
        return Response(b"ok")

    base: list[str] = []
    app = Starlette(routes=[Route("/{path:path}", handle, methods=["GET", "POST"])])
    with serve(app) as origin:
        base.append(origin)
        yield origin, hits


def _deliveries(running: Running, cid: str) -> list[dict[str, Any]]:
    url = f"{running.origin}{PREFIX}/connections/{cid}/deliveries"
    return httpx.get(url, params={"limit": 200}).json()["deliveries"]


async def _attempted(running: Running, cid: str) -> list[dict[str, Any]]:
    """The deliveries once each has finished its first attempt (the twin's own dispatcher may
    have claimed some before the test's run_due)."""
    for _ in range(200):
        await running.twin.dispatcher.run_due()
        found = _deliveries(running, cid)
        if all(d["attempts"] >= 1 and d["status"] != "delivering" for d in found):
            return found
        await anyio.sleep(0.05)
    raise AssertionError(f"deliveries still in flight: {found}")


async def test_webhook_targets_outside_the_allow_list_are_refused_when_dialled(
    web: tuple[str, Hits],
) -> None:
    origin, hits = web
    port = origin.rsplit(":", 1)[1]
    refused_urls = [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/hook",
        "http://10.0.0.1/hook",
        f"http://0.0.0.0:{port}/zero",  # dials this host on Linux
        f"http://[::]:{port}/zero6",
        f"http://[::ffff:169.254.169.254]:{port}/mapped",
        f"http://[::ffff:10.0.0.1]:{port}/mapped10",
        "http://224.0.0.1/multicast",
        f"http://0:{port}/zero-short",  # resolves to 0.0.0.0
    ]
    redirecting = [f"{origin}/redirect302", f"{origin}/redirect307", f"{origin}/redirect308"]
    allowed = [f"{origin}/ok", f"http://localhost:{port}/named"]
    with serve_twin(EXAMPLE) as running:
        control = running.app.control
        cid = (await control.connect("guarded"))["connection_id"]
        api = f"{running.origin}{PREFIX}/connections/{cid}"
        by_url: dict[str, str] = {}
        for url in [*refused_urls, *redirecting, *allowed]:
            made = httpx.post(f"{api}/endpoints", json={"url": url})
            assert made.status_code == 201, made.text
            by_url[url] = made.json()["id"]
        fired = httpx.post(f"{api}/events", json={"event": "project.created"})
        assert fired.status_code in (200, 201), fired.text
        found = {d["endpoint"]: d for d in await _attempted(running, cid)}
        for url in refused_urls:
            delivery = found[by_url[url]]
            assert delivery["status"] != "succeeded", url
            assert delivery["last_error"].startswith("refused-by-allow-list"), (url, delivery)
        for url in redirecting:
            delivery = found[by_url[url]]
            assert delivery["status"] != "succeeded", url
            assert "redirects are not followed" in delivery["last_error"], delivery
        for url in allowed:
            assert found[by_url[url]]["status"] == "succeeded", found[by_url[url]]
    assert "/stolen" not in hits.paths  # no redirect was followed
    assert not {"/zero", "/zero6", "/mapped", "/mapped10", "/zero-short"} & set(hits.paths)
    assert sorted(hits.paths) == sorted(
        ["/ok", "/named", "/redirect302", "/redirect307", "/redirect308"]
    )
    record_figures(
        "security",
        {"webhook_targets_refused": len(refused_urls), "redirects_not_followed": len(redirecting)},
    )


async def test_a_name_resolving_outside_the_allow_list_is_refused(web: tuple[str, Hits]) -> None:
    origin, hits = web
    port = origin.rsplit(":", 1)[1]
    config = WebhookConfig(allow=("10.0.0.0/8",))  # loopback is not allowed here
    conn = ConnectionConfig(client_id="acme", webhook_url=f"http://localhost:{port}/named")
    with serve_twin(EXAMPLE, connections=(conn,), webhooks=config) as running:
        api = f"{running.origin}{PREFIX}/connections/{running.twin.name}:acme"
        literal = httpx.post(f"{api}/endpoints", json={"url": f"{origin}/literal"})
        assert literal.status_code == 201, literal.text
        fired = httpx.post(f"{api}/events", json={"event": "project.created"})
        assert fired.status_code in (200, 201), fired.text
        found = await _attempted(running, f"{running.twin.name}:acme")
        assert len(found) == 2
        for delivery in found:
            assert delivery["last_error"].startswith("refused-by-allow-list"), delivery
        errors = " ".join(d["last_error"] for d in found)
        assert "localhost resolves to" in errors
    assert hits.paths == []


# -- the guard's own resolver hook: one resolution, and the checked address is the one dialled --


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Outbox, SQLiteStore]]:
    store = SQLiteStore(tmp_path / "twin.db")
    await store.open()
    try:
        yield Outbox(store, "twin", VirtualClock()), store
    finally:
        await store.close()


async def test_the_address_checked_is_the_address_dialled(
    rig: tuple[Outbox, SQLiteStore], web: tuple[str, Hits]
) -> None:
    outbox, store = rig
    origin, hits = web
    port = origin.rsplit(":", 1)[1]
    answers = {
        "partner.invalid": ["127.0.0.1"],
        "mixed.invalid": ["127.0.0.1", "169.254.169.254"],  # one bad address is enough
        "metadata.invalid": ["fd00:ec2::254"],
        "nat64.invalid": ["64:ff9b::a9fe:a9fe"],
    }
    asked: list[str] = []

    async def resolve(host: str, _port: int) -> list[str]:
        asked.append(host)
        return answers[host]

    wide = AllowList(["127.0.0.0/8", "::/0"], resolver=resolve)
    dispatcher = Dispatcher(store, outbox, outbox.clock, allow=wide)
    try:
        for host in answers:
            await outbox.add_endpoint("acme", f"http://{host}:{port}/{host}")
        await outbox.emit("acme", "project.created", {"id": "evt_1"})
        await dispatcher.run_due()
        page = await outbox.list_deliveries("acme")
        by_endpoint = {
            e.url: next(d for d in page.items if d["endpoint"] == e.id)
            for e in await outbox.list_endpoints("acme")
        }
    finally:
        await dispatcher.stop()
    # "partner.invalid" does not resolve on this machine: it was reached at the checked address.
    assert hits.paths == ["/partner.invalid"]
    assert hits.hosts == [f"partner.invalid:{port}"]
    assert sorted(asked) == sorted(answers)  # once each
    for host in ("mixed.invalid", "metadata.invalid", "nat64.invalid"):
        delivery = by_endpoint[f"http://{host}:{port}/{host}"]
        assert delivery["last_error"].startswith("refused-by-allow-list"), delivery
