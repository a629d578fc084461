"""The command line, run as a user runs it: a real process, its output and exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

from conftest import REPO, SPECS, need_specs

EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"


def apitwin(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apitwin", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@contextmanager
def running(*args: str, cwd: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`apitwin ARGS` as a server process; yields it and its first stderr lines once ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "apitwin", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        banner = []
        assert process.stderr is not None
        for line in process.stderr:
            banner.append(line)
            if "press Ctrl+C" in line:
                break
        yield process, "".join(banner)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_help_lists_every_command() -> None:
    result = apitwin("--help")
    assert result.returncode == 0
    for command in ("check", "serve", "demo"):
        assert command in result.stdout
    for command in ("check", "serve", "demo"):
        sub = apitwin(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: apitwin " + command in sub.stdout


def test_check_describes_the_bundled_example() -> None:
    result = apitwin("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Research Platform Partner API" in out
    assert "base path: /partner/v1" in out
    assert "oauth2: OAuth 2 clientCredentials (token URL /oauth/token)" in out
    assert "project.created (POST)" in out
    assert "experts (collection under projects via projectId" in out
    assert "warnings: 0" in out


def test_check_names_contradictions_in_a_real_spec() -> None:
    need_specs()
    result = apitwin("check", str(SPECS / "spotify-web-api.oas30.yml"))
    assert result.returncode == 0
    assert "[contradiction]" in result.stdout
    assert "discriminator 'type'" in result.stdout


def test_broken_spec_exits_2_with_every_problem_and_no_traceback(tmp_path: Path) -> None:
    spec = tmp_path / "api.yaml"
    spec.write_text(
        textwrap.dedent("""
        openapi: 3.0.3
        info: {title: t, version: "1"}
        paths:
          /a:
            get:
              responses:
                "200": {$ref: "#/components/responses/Nope"}
          /b:
            get:
              responses:
                "200": {$ref: "missing.yaml#/R"}
    """)
    )
    result = apitwin("check", str(spec))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "2 problem(s)" in result.stderr
    assert "api.yaml#/paths/~1a/get/responses/200" in result.stderr
    assert "missing.yaml" in result.stderr


def test_missing_spec_file_is_a_clear_error(tmp_path: Path) -> None:
    result = apitwin("serve", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "file not found" in result.stderr


def test_binding_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    result = apitwin("serve", str(EXAMPLE), "--host", "0.0.0.0", "--db", ":memory:")
    assert result.returncode == 2
    assert "--admin-token" in result.stderr


def test_config_errors_name_the_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "apitwin.yaml"
    config.write_text("twins:\n  - spec: api.yaml\n    sead: 3\n")
    result = apitwin("serve", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:3:5: twins[0].sead: unknown field" in result.stderr
    assert "sead" in result.stderr


def test_serve_prints_a_banner_and_answers(tmp_path: Path) -> None:
    port = free_port()
    with running("serve", str(EXAMPLE), "--port", str(port), "--db", "twin.db", cwd=tmp_path) as (
        _,
        banner,
    ):
        assert f"http://127.0.0.1:{port}/partner/v1" in banner
        assert "connection default: client_secret cs_" in banner
        api_key = banner.split("api_key ", 1)[1].split()[0]
        response = httpx.get(
            f"http://127.0.0.1:{port}/partner/v1/projects",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        assert response.status_code == 200
        assert response.json()["data"] == []
    assert (tmp_path / "twin.db").exists()


def test_config_with_two_twins_serves_both_under_their_prefixes(tmp_path: Path) -> None:
    need_specs()
    config = tmp_path / "apitwin.yaml"
    config.write_text(
        textwrap.dedent(f"""
        server: {{db: ":memory:"}}
        twins:
          - name: research
            spec: {EXAMPLE}
            connections:
              - client_id: acme-qa
                api_key: ak_acme_qa_key_0001
          - name: pets
            spec: {SPECS / "oai-petstore-expanded.oas30.yaml"}
            base_path: /pets-api
            fixtures:
              pets: [{{name: Rex, tag: dog}}]
    """)
    )
    port = free_port()
    with running("serve", "--config", str(config), "--port", str(port), cwd=tmp_path) as (_, b):
        assert "twin 'research'" in b and "twin 'pets'" in b
        origin = f"http://127.0.0.1:{port}"
        projects = httpx.get(
            f"{origin}/partner/v1/projects", headers={"Authorization": "Bearer ak_acme_qa_key_0001"}
        )
        assert projects.status_code == 200
        pets = httpx.get(f"{origin}/pets-api/pets")
        assert [p["name"] for p in pets.json()] == ["Rex"]


def test_two_twins_on_one_prefix_is_a_startup_error(tmp_path: Path) -> None:
    config = tmp_path / "apitwin.yaml"
    config.write_text(
        textwrap.dedent(f"""
        twins:
          - {{name: one, spec: {EXAMPLE}}}
          - {{name: two, spec: {EXAMPLE}}}
    """)
    )
    result = apitwin("serve", "--config", str(config), "--db", ":memory:")
    assert result.returncode == 2
    assert "both served under /partner/v1" in result.stderr


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_demo_is_the_readme_run_command(tmp_path: Path) -> None:
    port = free_port()
    with running("demo", "--port", str(port), "--db", ":memory:", cwd=tmp_path) as (_, banner):
        assert "Research Platform Partner API" in banner
        assert "connection acme-qa" in banner
        assert httpx.get(f"http://127.0.0.1:{port}/_apitwin/health").json()["status"] == "ok"
        projects = httpx.get(
            f"http://127.0.0.1:{port}/partner/v1/projects",
            headers={"Authorization": "Bearer ak_demo_acme_qa_key"},
        ).json()
        assert {p["id"] for p in projects["data"]} == {"prj_DemoBattery1", "prj_DemoPayment2"}
