"""`apitwin init`: the starter config it writes loads, checks and serves."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml

from apitwin.config import load_config

from conftest import EXAMPLE, SPECS, need_specs


def apitwin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apitwin", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@contextmanager
def serving(config: Path) -> Iterator[tuple[str, str]]:
    """`apitwin serve --config CONFIG` on a free port; yields its origin and its banner."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "apitwin", "serve", "--config", str(config), "--port", str(port)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=config.parent,
    )
    try:
        assert process.stderr is not None
        banner = []
        for line in process.stderr:  # ends when the process does: bounded by its exit
            banner.append(line)
            if "press Ctrl+C" in line:
                break
        assert "press Ctrl+C" in "".join(banner), "".join(banner)
        yield f"http://127.0.0.1:{port}", "".join(banner)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def init(spec: Path, folder: Path, *extra: str) -> tuple[Path, str]:
    out = folder / "apitwin.yaml"
    result = apitwin("init", str(spec), "-o", str(out), *extra, cwd=folder)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def client_id_of(config: Path) -> str:
    raw = yaml.safe_load(config.read_text())
    return str(raw["twins"][0]["connections"][0]["client_id"])


def api_key_in(banner: str, client_id: str) -> str:
    found = re.search(
        rf"connection {re.escape(client_id)}: client_secret \S+\s+api_key (\S+)", banner
    )
    assert found, banner
    return found.group(1)


def test_init_on_the_bundled_example_shows_what_was_inferred_and_serves(tmp_path: Path) -> None:
    config, said = init(EXAMPLE, tmp_path)
    assert "wrote" in said and "apitwin check --config" in said
    text = config.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert "apitwin schema >" in text
    raw = yaml.safe_load(text)
    twin = raw["twins"][0]
    assert (tmp_path / twin["spec"]).resolve() == EXAMPLE.resolve()  # relative to the config
    assert set(twin["resources"]) == {"projects", "experts", "calls"}  # settings: a singleton
    assert twin["resources"]["projects"] == {"id_field": "id"}
    assert "#   project.created (webhook): projects created" in text
    assert "# settings: singleton under projects" in text
    assert twin["webhooks"]["scheme"] == "standard-webhooks"
    client_id = client_id_of(config)
    assert re.fullmatch(r"dev-[0-9a-f]{6}", client_id)

    settings = load_config(config)
    assert settings.twins[0].connections[0].client_id == client_id
    checked = apitwin("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "projects (collection" in checked.stdout

    with serving(config) as (origin, banner):
        key = api_key_in(banner, client_id)
        base = f"{origin}/partner/v1"
        listed = httpx.get(f"{base}/projects", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200, listed.text
        assert httpx.get(f"{base}/projects").status_code == 401  # strict: a connection is listed


@pytest.mark.parametrize(
    ("name", "path", "status"),
    [
        # A Swagger-era store with an API key in a header, inferred resources and no events.
        ("swagger-petstore.oas30.yaml", "/api/v3/pet/findByStatus?status=available", 200),
        # Singleton-only game with a 3.1 webhook and a callback, five security schemes.
        ("oai-tictactoe.oas31.yaml", "/board", 200),
    ],
)
def test_init_on_real_specs_writes_a_config_that_loads_and_serves(
    tmp_path: Path, name: str, path: str, status: int
) -> None:
    need_specs()
    config, _ = init(SPECS / name, tmp_path)
    load_config(config)
    checked = apitwin("check", "--config", str(config), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    text = config.read_text()
    if name.startswith("oai-tictactoe"):
        assert "#   markStatus (webhook)" in text
        assert "put-square.statusCallback (callback)" in text
        assert "    # resources:" in text  # only singletons: nothing to correct by id
    else:
        assert "events: the spec declares no webhooks or callbacks" in text
        assert "pets: {id_field: id}" in text or "pet: {id_field: id}" in text
    client_id = client_id_of(config)
    with serving(config) as (origin, banner):
        key = api_key_in(banner, client_id)
        answer = httpx.get(
            origin + path, headers={"Authorization": f"Bearer {key}", "api_key": key}
        )
        assert answer.status_code == status, answer.text


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    config, _ = init(EXAMPLE, tmp_path)
    before = config.read_text()
    again = apitwin("init", str(EXAMPLE), "-o", str(config), cwd=tmp_path)
    assert again.returncode == 2
    assert "already exists; pass --force" in again.stderr
    assert config.read_text() == before
    init(EXAMPLE, tmp_path, "--force")
    assert client_id_of(config) != "" and config.read_text() != before  # a new client id


def test_init_of_a_broken_spec_writes_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        'openapi: 3.0.3\ninfo: {title: t, version: "1"}\npaths:\n'
        '  /a: {get: {responses: {"200": {$ref: "#/components/responses/Nope"}}}}\n'
    )
    result = apitwin("init", str(broken), "-o", "out.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "problem" in result.stderr
    assert not (tmp_path / "out.yaml").exists()
    missing = apitwin("init", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "nope.yaml" in missing.stderr
    assert not (tmp_path / "apitwin.yaml").exists()
