"""Every inbound fault kind through the real twin, as a client sees it; the journal tags it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx2 as httpx
import jsonschema
import orjson
import pytest

from conftest import EXAMPLE, PROJECT, Running, serve_twin

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def twin() -> Iterator[Running]:
    with serve_twin(EXAMPLE) as running:
        yield running


class Client:
    def __init__(self, running: Running, client_id: str) -> None:
        self.running = running
        self.control = running.app.control
        self.client_id = client_id

    async def setup(self) -> None:
        view = await self.control.connect(self.client_id)
        self.handle = view["connection_id"]
        self.http = httpx.Client(
            base_url=self.running.url,
            timeout=10,
            headers={"Authorization": f"Bearer {view['api_key']}"},
        )

    async def fault(
        self, kind: str, params: dict[str, Any] | None = None, operation: str = "listProjects"
    ) -> str:
        rule = await self.control.add_fault(
            self.handle, {"kind": kind, "params": params or {}, "operation": operation, "next": 1}
        )
        return str(rule["id"])

    async def last_entry(self) -> dict[str, Any]:
        page = await self.control.list_requests(self.handle, limit=1)
        return dict(page["requests"][0])


async def client(twin: Running, name: str) -> Client:
    made = Client(twin, name)
    await made.setup()
    return made


def schema_of(running: Running, op_id: str, status: str) -> dict[str, Any]:
    op = running.twin.spec.operation(op_id)
    assert op is not None
    schema = op.responses[status].media["application/json"].schema
    assert schema is not None
    return schema.json


async def test_status_fault_answers_in_the_specs_error_shape_once(twin: Running) -> None:
    qa = await client(twin, "status")
    rule = await qa.fault("status", {"status": 503})
    first = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert first.status_code == 503
    assert (await qa.last_entry())["fault"] == rule
    second = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert second.status_code == 200


async def test_rate_limit_sends_retry_after(twin: Running) -> None:
    qa = await client(twin, "rate")
    await qa.fault("rate_limit", {"retry_after": 7})
    answer = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    jsonschema.validate(answer.json(), schema_of(twin, "listProjects", "429"))


async def test_latency_delays_the_answer(twin: Running) -> None:
    qa = await client(twin, "slow")
    await qa.fault("latency", {"ms": 300})
    started = time.perf_counter()
    answer = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert answer.status_code == 200
    assert time.perf_counter() - started >= 0.3


@pytest.mark.parametrize("kind", ["reset", "truncate", "chunk_garbage"])
async def test_broken_connections_reach_the_client(twin: Running, kind: str) -> None:
    qa = await client(twin, f"broken-{kind}")
    rule = await qa.fault(kind)
    with pytest.raises(httpx.TransportError):
        await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert (await qa.last_entry())["fault"] == rule


async def test_empty_malformed_and_mislabelled_bodies(twin: Running) -> None:
    qa = await client(twin, "bodies")
    await qa.fault("empty")
    empty = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert empty.status_code == 200
    assert empty.content == b""
    await qa.fault("malformed_json")
    malformed = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert malformed.headers["content-type"] == "application/json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(malformed.content)
    await qa.fault("wrong_content_type", {"content_type": "text/html"})
    mislabelled = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    assert mislabelled.headers["content-type"] == "text/html"


async def test_schema_break_removes_a_required_field(twin: Running) -> None:
    qa = await client(twin, "breaks")
    await qa.fault("schema_break", {"mode": "missing_required"})
    answer = await anyio.to_thread.run_sync(qa.http.get, "/projects")
    checker = jsonschema.Draft202012Validator(schema_of(twin, "listProjects", "200"))
    errors = list(checker.iter_errors(answer.json()))
    assert errors
    assert all(e.validator == "required" for e in errors)


async def test_conflict_on_the_nth_write(twin: Running) -> None:
    qa = await client(twin, "conflict")
    await qa.fault("conflict", {"on_nth_write": 2}, operation="createProject")
    first = await anyio.to_thread.run_sync(lambda: qa.http.post("/projects", json=PROJECT))
    second = await anyio.to_thread.run_sync(lambda: qa.http.post("/projects", json=PROJECT))
    assert first.status_code == 201
    assert second.status_code == 409
    jsonschema.validate(second.json(), schema_of(twin, "createProject", "409"))


async def test_faults_stay_in_their_connection(twin: Running) -> None:
    mine = await client(twin, "mine")
    other = await client(twin, "other")
    await mine.fault("status", {"status": 500})
    assert (await anyio.to_thread.run_sync(other.http.get, "/projects")).status_code == 200
    assert (await anyio.to_thread.run_sync(mine.http.get, "/projects")).status_code == 500
