"""The admin API against its own OpenAPI document: schemathesis, valid and invalid input.

Every check schemathesis has (no server error, status codes, content types, response headers and
bodies conforming to the document, valid input accepted, invalid input rejected, auth enforced) runs
against a real server with an admin token. The example count is bounded to keep the run short.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import httpx2 as httpx
import pytest

from apitwin.config import load_config
from apitwin.server.app import create_app

from conftest import EXAMPLE, serve

TOKEN = "admin-token-for-fuzzing-0123456789"


def run_schemathesis(origin: str, *extra: str) -> str:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{origin}/_apitwin/openapi.json",
        "--url",
        origin,
        "--checks",
        "all",
        "--mode",
        "all",
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        "8",
        "--seed",
        "1",
        "--workers",
        "1",
        "--no-color",
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "-H",
        f"Authorization: Bearer {TOKEN}",
        *extra,
    ]
    with tempfile.TemporaryDirectory() as scratch:  # schemathesis writes a cache where it runs
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=scratch)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-12000:]
    return output


def test_admin_api_survives_schemathesis() -> None:
    settings = load_config(EXAMPLE.parent / "apitwin.yaml")
    app = create_app(replace(settings, db=":memory:", admin_token=TOKEN))
    with serve(app) as origin:
        document = httpx.get(f"{origin}/_apitwin/openapi.json").raise_for_status().json()
        assert document["paths"], "the admin API documents no routes"
        run_schemathesis(origin)
        # Afterwards the server still answers, and still refuses callers without the token.
        assert httpx.get(f"{origin}/_apitwin/health").status_code == 200
        refused = httpx.get(f"{origin}/_apitwin/api/connections")
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("header", ["", "Bearer wrong-token-0123456789", "Basic " + TOKEN])
def test_admin_api_refuses_other_credentials(header: str) -> None:
    settings = load_config(EXAMPLE.parent / "apitwin.yaml")
    app = create_app(replace(settings, db=":memory:", admin_token=TOKEN))
    with serve(app) as origin:
        headers = {"Authorization": header} if header else {}
        answer = httpx.post(
            f"{origin}/_apitwin/api/connections", json={"client_id": "x"}, headers=headers
        )
        assert answer.status_code == 401
        assert answer.json()["type"] == "urn:apitwin:unauthorized"
        listed = httpx.get(
            f"{origin}/_apitwin/api/connections", headers={"Authorization": f"Bearer {TOKEN}"}
        ).json()
        assert "x" not in {c["client_id"] for c in listed["connections"]}
