"""Reads of stored records are answered from kept answers, and never stale.

A real server on a SQLite file, driven by httpx: whatever changes the records (the API, the admin
API, a reset, another process writing the same file) shows in the next read; faults, ``Prefer``
and other connections are never answered from another request's answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest

from apitwin.config import ConnectionConfig
from apitwin.state.sqlite import SQLiteStore
from apitwin.state.store import Put, Scope

from conftest import SPECS, Running, need_specs, serve_twin

PETSTORE = SPECS / "oai-petstore-expanded.oas30.yaml"
GLOBEX = ConnectionConfig(client_id="globex")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    need_specs()
    with serve_twin(PETSTORE, db=str(tmp_path / "twin.db"), connections=(GLOBEX,)) as running:
        yield running


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [pet["name"] for pet in response.json()]


def admin(running: Running, method: str, path: str, body: Any = None) -> httpx.Response:
    url = f"{running.origin}/_apitwin/api/connections/{running.twin.name}:default{path}"
    return httpx.request(method, url, json=body, timeout=10)


def test_a_read_is_answered_again_from_its_kept_answer(running: Running) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        assert http.post("/pets", json={"name": "Garfield"}).status_code == 200
        first = http.get("/pets")
        kept = len(running.twin.answers)
        again = http.get("/pets")
        assert kept >= 1 and len(running.twin.answers) == kept  # answered from what was kept
        assert again.content == first.content and names(again) == ["Garfield"]
        assert again.headers["content-type"] == first.headers["content-type"]
        head = http.head("/pets")
        assert head.status_code == 200 and head.content == b""
        assert http.get("/pets").content == first.content  # HEAD's empty body is its own


def test_every_kind_of_change_shows_in_the_next_read(running: Running, tmp_path: Path) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        pet = http.post("/pets", json={"name": "Garfield"}).json()
        assert names(http.get("/pets")) == ["Garfield"]
        assert http.get(f"/pets/{pet['id']}").json()["name"] == "Garfield"
        # Through the API.
        assert http.post("/pets", json={"name": "Odie"}).status_code == 200
        assert names(http.get("/pets")) == ["Garfield", "Odie"]
        assert http.delete(f"/pets/{pet['id']}").status_code == 204
        assert names(http.get("/pets")) == ["Odie"]
        assert http.get(f"/pets/{pet['id']}").status_code == 404
        # Through the admin API.
        made = admin(running, "POST", "/records/pets", {"data": {"name": "Nermal"}})
        assert made.status_code == 201, made.text
        assert names(http.get("/pets")) == ["Odie", "Nermal"]
        nermal = made.json()["record"]["id"] if "record" in made.json() else made.json()["id"]
        changed = admin(running, "PATCH", f"/records/pets/{nermal}", {"changes": {"tag": "cat"}})
        assert changed.status_code == 200, changed.text
        assert http.get(f"/pets/{nermal}").json()["tag"] == "cat"
        # A reset.
        assert admin(running, "POST", "/reset").status_code == 200
        assert names(http.get("/pets")) == []
        # Another process writing the same file.
        db = tmp_path / "twin.db"
        scope = Scope(running.twin.name, "default", "record:pets")

        async def write_elsewhere() -> None:
            other = SQLiteStore(db)
            await other.open()
            try:
                await other.write([Put(scope.key("77"), {"id": 77, "name": "Arlene"})])
            finally:
                await other.close()

        anyio.run(write_elsewhere)
        assert names(http.get("/pets")) == ["Arlene"]
        assert http.get("/pets/77").json()["name"] == "Arlene"


def test_faults_prefer_and_other_connections_are_never_answered_from_a_kept_answer(
    running: Running,
) -> None:
    with httpx.Client(base_url=running.url, timeout=10) as http:
        http.post("/pets", json={"name": "Garfield"})
        kept = http.get("/pets")
        assert names(kept) == ["Garfield"]
        fault = {"kind": "status", "params": {"status": 503}, "operation": "findPets", "next": 1}
        assert admin(running, "POST", "/faults", fault).status_code == 201
        assert http.get("/pets").status_code == 503
        assert http.get("/pets").content == kept.content  # the fault was for the next one only
        assert http.get("/pets", headers={"Prefer": "code=500"}).status_code == 500
        other = http.get("/pets", headers={"x-apitwin-connection": "globex"})
        assert names(other) == []
        assert http.get("/pets", params={"limit": 0}).status_code in (200, 400)
        assert names(http.get("/pets")) == ["Garfield"]
