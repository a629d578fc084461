"""Webhooks from real specs, callbacks, emission rules, and no loss across a hard kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import jsonschema
import orjson
import pytest
from test_workflow import Receiver

from apitwin.config import ConnectionConfig, Rule

from conftest import EXAMPLE, EXPERT, PROJECT, SPECS, need_specs, serve, serve_twin

pytestmark = pytest.mark.anyio


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    app = Receiver()
    with serve(app) as url:
        yield app, url


def valid(payload: Any, schema: dict[str, Any]) -> None:
    checker = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [e.message for e in checker.iter_errors(payload)]
    assert errors == []


async def test_callbacks_fire_to_the_url_the_request_named(receiver: tuple[Receiver, str]) -> None:
    need_specs()
    hooks, origin = receiver
    with serve_twin(SPECS / "oai-callback-example.oas30.yaml") as running:
        answer = httpx.post(f"{running.url}/streams", params={"callbackUrl": f"{origin}/cb"})
        assert answer.status_code == 201
        await anyio.to_thread.run_sync(hooks.wait_for, 1)
        _, body = hooks.received[0]
        event = next(e for e in running.twin.events.values() if e.source == "callback")
        assert event.schema is not None
        valid(orjson.loads(body), event.schema.json)
    assert hooks.paths[0] == "/cb/data"


async def test_a_rule_emits_an_event_after_a_request_once_its_delay_has_passed(
    receiver: tuple[Receiver, str],
) -> None:
    hooks, origin = receiver
    connection = ConnectionConfig(
        client_id="acme", api_key="ak_acme_rule_key", webhook_url=f"{origin}/hooks"
    )
    rule = Rule(after="submitExpert", emit="expert.received", delay=2)
    with serve_twin(EXAMPLE, connections=(connection,), rules=(rule,)) as running:
        twin = running.twin
        auth = {"Authorization": "Bearer ak_acme_rule_key"}
        project = httpx.post(f"{running.url}/projects", json=PROJECT, headers=auth).json()
        await anyio.to_thread.run_sync(hooks.wait_for, 1)  # project.created
        expert = httpx.post(
            f"{running.url}/projects/{project['id']}/experts", json=EXPERT, headers=auth
        ).json()
        assert await twin.dispatcher.run_due() == 0  # not yet: 2 s on the twin's clock
        twin.clock.advance(3)
        assert await twin.dispatcher.run_due() == 1
        _, body = hooks.received[-1]
        payload = orjson.loads(body)
        assert payload["type"] == "expert.received"
        assert payload["data"]["object"]["id"] == expert["id"]
        schema = twin.events["expert.received"].schema
        assert schema is not None
        valid(payload, schema.json)


@pytest.mark.parametrize(
    "name",
    [
        "redocly-museum.oas31.yaml",
        "oai-tictactoe.oas31.yaml",
        "swagger-petstore.oas31.yaml",
        "oai-webhook-example.oas31.yaml",
    ],
)
async def test_every_declared_webhook_is_delivered_with_a_schema_valid_payload(
    name: str, receiver: tuple[Receiver, str]
) -> None:
    need_specs()
    hooks, origin = receiver
    with serve_twin(SPECS / name, spec_root=SPECS) as running:
        control = running.app.control
        handle = (await control.connect("qa", webhook_url=f"{origin}/hooks"))["connection_id"]
        webhooks = [e for e in running.twin.events.values() if e.source == "webhook"]
        assert webhooks
        for event in webhooks:
            await control.trigger_event(handle, event.name)
        await anyio.to_thread.run_sync(hooks.wait_for, len(webhooks))
        schemas = [e.schema.json for e in webhooks if e.schema is not None]
        assert len(hooks.received) == len(webhooks)
        for headers, body in hooks.received:
            assert "webhook-signature" in headers
            payload = orjson.loads(body)
            # A webhook declared without a request body (tic-tac-toe's) has nothing to check.
            if schemas:
                assert any(
                    jsonschema.Draft202012Validator(
                        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
                    ).is_valid(payload)
                    for schema in schemas
                )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(config: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "apitwin", "serve", "--config", str(config), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_apitwin/health").status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not start")


@pytest.mark.skipif(os.name != "posix", reason="kill -9")
def test_a_killed_server_delivers_every_accepted_event_after_restart(tmp_path: Path) -> None:
    hooks = Receiver()
    with serve(hooks) as origin:
        hooks.statuses = [503] * 1000  # the receiver is down for now
        config = tmp_path / "apitwin.yaml"
        config.write_text(
            textwrap.dedent(f"""
            server: {{db: twin.db}}
            twins:
              - name: research
                spec: {EXAMPLE}
                connections:
                  - client_id: acme
                    webhook_url: {origin}/hooks
        """)
        )
        port = _free_port()
        api = f"http://127.0.0.1:{port}/_apitwin/api/connections/research:acme"
        process = _start(config, port)
        created = []
        for n in range(20):
            answer = httpx.post(
                f"{api}/records/projects", json={"data": {**PROJECT, "title": f"P{n}"}}
            )
            assert answer.status_code == 201
            created.append(answer.json()["id"])
        process.send_signal(signal.SIGKILL)
        process.wait(10)

        hooks.statuses = []  # the receiver is back
        process = _start(config, port)
        try:
            deadline = time.monotonic() + 30
            seen: set[str] = set()
            while time.monotonic() < deadline and seen != set(created):
                httpx.post(f"{api}/clock/advance", json={"seconds": 3600})
                seen = {
                    orjson.loads(body)["data"]["object"]["id"]
                    for headers, body in list(hooks.received)
                    if hooks.status_of(headers) == 200
                }
            assert seen == set(created)
        finally:
            process.terminate()
            process.wait(10)
