"""Removing a connection: its data and credentials go with it, and its client id starts afresh."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from conftest import EXAMPLE, PROJECT, Receiver, serve, twin_app

CLIENT = "ci-run-1"


def _admin(origin: str) -> httpx.Client:
    return httpx.Client(base_url=f"{origin}/_apitwin/api", timeout=30)


def _bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_a_removed_connection_takes_its_data_and_credentials_with_it(tmp_path: Path) -> None:
    db = tmp_path / "twin.db"
    with serve(twin_app(EXAMPLE, db=db)) as origin, _admin(origin) as admin:
        view = admin.post("/connections", json={"client_id": CLIENT}).json()
        cid, base = view["connection_id"], view["base_url"]
        form = {
            "grant_type": "client_credentials",
            "client_id": CLIENT,
            "client_secret": view["client_secret"],
        }
        token = httpx.post(view["token_url"][0], data=form).json()["access_token"]
        created = httpx.post(f"{base}/projects", json=PROJECT, headers=_bearer(view["api_key"]))
        assert created.status_code == 201, created.text
        assert httpx.get(f"{base}/projects", headers=_bearer(token)).status_code == 200

        removed = admin.delete(f"/connections/{cid}")
        assert removed.status_code == 200, removed.text
        assert removed.json() == {"connection_id": cid, "removed": True}
        listed = admin.get("/connections").json()["connections"]
        assert CLIENT not in {c["client_id"] for c in listed}
        for credential in (view["api_key"], token):
            assert httpx.get(f"{base}/projects", headers=_bearer(credential)).status_code == 401
        assert admin.get(f"/connections/{cid}/records/projects").status_code == 404
        assert admin.delete(f"/connections/{cid}").status_code == 404

        # The default connection answers requests that name none: it stays.
        default = admin.delete(f"/connections/{view['twin']}:default")
        assert default.status_code == 400
        assert "cannot be removed" in default.json()["detail"]

        # The client id connects again afresh: new credentials, seed data only, no history.
        again = admin.post("/connections", json={"client_id": CLIENT})
        assert again.status_code == 201, again.text
        assert again.json()["created"] is True
        assert again.json()["api_key"] != view["api_key"]
        projects = admin.get(f"/connections/{cid}/records/projects", params={"limit": 100})
        assert created.json()["id"] not in {p["id"] for p in projects.json()["records"]}
        assert admin.get(f"/connections/{cid}/requests/count").json()["count"] == 0
        new_key = again.json()["api_key"]
        path = base.removeprefix(origin)

    # Restarted on the same database, the old token still opens nothing (its row went too).
    with serve(twin_app(EXAMPLE, db=db)) as origin:
        assert httpx.get(f"{origin}{path}/projects", headers=_bearer(token)).status_code == 401
        assert httpx.get(f"{origin}{path}/projects", headers=_bearer(new_key)).status_code == 200


class Holding(Receiver):
    """Holds each webhook until released (10 s at most), then answers 200."""

    def __init__(self) -> None:
        super().__init__()
        self.held = threading.Event()
        self.release = threading.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.held.set()
            for _ in range(1000):
                if self.release.is_set():
                    break
                await asyncio.sleep(0.01)
        await super().__call__(scope, receive, send)


def _rows_of(db: Path, twin: str, client_id: str) -> int:
    with contextlib.closing(sqlite3.connect(db)) as con:
        (count,) = con.execute(
            "SELECT COUNT(*) FROM items WHERE twin = ? AND (conn = ? OR id = ?)",
            (twin, client_id, client_id),
        ).fetchone()
    return int(count)


def test_a_delivery_in_flight_when_its_connection_goes_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    hooks = Holding()
    db = tmp_path / "twin.db"
    with (
        serve(hooks) as receiver,
        serve(twin_app(EXAMPLE, db=db)) as origin,
        _admin(origin) as admin,
    ):
        view = admin.post(
            "/connections", json={"client_id": "ci-run-2", "webhook_url": f"{receiver}/hooks"}
        ).json()
        cid, twin = view["connection_id"], view["twin"]
        sent = admin.post(f"/connections/{cid}/events", json={"event": "project.created"})
        assert sent.status_code == 201, sent.text
        assert hooks.held.wait(10)  # the attempt is under way
        assert admin.delete(f"/connections/{cid}").status_code == 200
        hooks.release.set()
        hooks.wait_for(1)
        # The attempt ends after its delivery went: no log of it is written under no delivery.
        left = 0
        for _ in range(20):
            left = _rows_of(db, twin, "ci-run-2")
            if left:
                break
            time.sleep(0.05)
        assert left == 0
