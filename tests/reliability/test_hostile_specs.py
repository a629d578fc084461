"""Hostile specs and configs are refused with a clear message, in bounded time and memory.

Each input is written to a temporary folder and read in a child process whose address space is
capped (RLIMIT_AS) and which must finish within a timeout: a loader that expanded a YAML bomb or
read a huge file whole would die of MemoryError or be killed, and the test would fail.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from apitwin.errors import SpecError
from apitwin.spec.loader import load_spec
from apitwin.spec.refs import SpecLimits

from conftest import serve_twin

MEMORY = 384 * 1024 * 1024  # bytes of address space for a child that reads one hostile file
TIMEOUT = 60  # seconds; a refusal takes well under one

HARNESS = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
from apitwin.errors import ApitwinError, SpecError
kind, path, root = sys.argv[2], sys.argv[3], sys.argv[4] or None
try:
    if kind == "spec":
        from apitwin.spec.loader import load_spec
        spec = load_spec(path, spec_root=root)
        print(json.dumps({"operations": len(spec.operations)}))
    else:
        from apitwin.config import load_config
        settings = load_config(path, env={})
        print(json.dumps({"twins": len(settings.twins)}))
except SpecError as exc:
    print(json.dumps({"problems": [str(p) for p in exc.problems]}))
except ApitwinError as exc:
    print(json.dumps({"problems": [exc.message]}))
"""

HEAD = """openapi: 3.0.3
info: {title: Hostile, version: '1'}
paths:
  /things:
    get:
      responses:
        '200':
          description: ok
          content:
            application/json:
              schema: {$ref: '#/components/schemas/Thing'}
"""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def read_in_child(kind: str, path: Path, spec_root: Path | None = None) -> dict[str, Any]:
    """Load ``path`` (a spec or a config) in a memory-capped child; what it reported."""
    result = subprocess.run(
        [sys.executable, "-c", HARNESS, str(MEMORY), kind, str(path), str(spec_root or "")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def refused(kind: str, path: Path, spec_root: Path | None = None) -> str:
    report = read_in_child(kind, path, spec_root)
    assert "problems" in report, f"{path.name} was accepted: {report}"
    return "\n".join(report["problems"])


def spec_with(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- YAML aliases ---------------------------------------------------------------------------------


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    # Nine levels of ten aliases each: 10^9 values once expanded, a few hundred bytes on disk.
    levels = ["    L0: &L0 {type: string, description: lol}"]
    for i in range(1, 10):
        props = ", ".join(f"p{j}: *L{i - 1}" for j in range(10))
        levels.append(f"    L{i}: &L{i} {{type: object, properties: {{{props}}}}}")
    text = HEAD + "components:\n  schemas:\n" + "\n".join(levels) + "\n    Thing: *L9\n"
    message = refused("spec", spec_with(tmp_path, "laughs.yaml", text))
    assert "laughs.yaml: YAML aliases expand to more than 1000000 extra values" in message


def test_merge_key_bomb_is_refused(tmp_path: Path) -> None:
    levels = ["  m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"]
    for i in range(1, 10):
        merged = ", ".join(f"*m{i - 1}" for _ in range(10))
        levels.append(f"  m{i}: &m{i} {{<<: [{merged}], own{i}: 1}}")
    text = HEAD + "components: {schemas: {Thing: {type: string}}}\nx-merges:\n"
    path = spec_with(tmp_path, "merges.yaml", text + "\n".join(levels) + "\n")
    report = read_in_child("spec", path)
    if "problems" not in report:
        # PyYAML 6.0.4 on copies each merged key once, so these merges no longer multiply: the
        # document is small and read in bounded time and memory (the child's caps held).
        assert report == {"operations": 1}
        return
    message = "\n".join(report["problems"])
    assert "YAML merge keys (<<) copy more than 1000000 entries" in message
    assert "merges.yaml: invalid YAML at line" in message


def test_merges_beyond_the_budget_are_refused(tmp_path: Path) -> None:
    # Forty mappings of distinct keys merged into one: 400 copies, whatever PyYAML deduplicates.
    anchors = [
        f"  m{i}: &m{i} {{" + ", ".join(f"k{i}_{j}: v" for j in range(10)) + "}" for i in range(40)
    ]
    merged = "  all: {<<: [" + ", ".join(f"*m{i}" for i in range(40)) + "]}"
    text = HEAD + "components: {schemas: {Thing: {type: string}}}\nx-merges:\n"
    path = spec_with(tmp_path, "merges.yaml", text + "\n".join([*anchors, merged]) + "\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path, limits=SpecLimits(max_alias_expansion=300))
    assert "YAML merge keys (<<) copy more than 300 entries" in str(caught.value.problems)
    assert load_spec(path, limits=SpecLimits(max_alias_expansion=1000)).operations


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    text = HEAD + "components: {schemas: {Thing: &t {type: array, items: *t}}}\n"
    message = refused("spec", spec_with(tmp_path, "recursive.yaml", text))
    assert "recursive.yaml: invalid YAML at line 12" in message
    assert "recursive" in message


def test_a_few_aliases_are_fine(tmp_path: Path) -> None:
    text = HEAD + (
        "components:\n  schemas:\n"
        "    Name: &name {type: string, maxLength: 40}\n"
        "    Thing: {type: object, properties: {a: *name, b: *name}}\n"
    )
    assert read_in_child("spec", spec_with(tmp_path, "aliases.yaml", text)) == {"operations": 1}


# -- nesting --------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deep_yaml_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    nested = "{a: " * depth + "1" + "}" * depth
    text = HEAD + f"components: {{schemas: {{Thing: {{type: string}}}}}}\nx-deep: {nested}\n"
    message = refused("spec", spec_with(tmp_path, "deep.yaml", text))
    assert "deep.yaml: document nests deeper than 256 levels" in message


@pytest.mark.parametrize("depth", [300, 100_000])
def test_deep_json_nesting_is_refused(tmp_path: Path, depth: int) -> None:
    head = '{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}, "x-deep": '
    text = head + "[" * depth + "]" * depth + "}"
    message = refused("spec", spec_with(tmp_path, "deep.json", text))
    assert "deep.json: document nests deeper than 256 levels" in message


def test_deep_schema_within_the_limit_is_served(tmp_path: Path) -> None:
    depth = 60  # 120 levels of mappings: deep for a real spec, within the limit
    schema = "{type: object, properties: {a: " * depth + "{type: string}" + "}}" * depth
    text = HEAD + f"components:\n  schemas:\n    Thing: {schema}\n"
    path = spec_with(tmp_path, "deep-ok.yaml", text)
    with serve_twin(path) as running:
        answer = httpx.get(f"{running.url}/things", headers=_auth(running.api_key), timeout=30)
        assert answer.status_code == 200
        assert isinstance(answer.json(), dict)


# -- $ref cycles, chains, and where references may lead -------------------------------------------


def test_ref_cycle_is_refused(tmp_path: Path) -> None:
    text = HEAD + (
        "components:\n  schemas:\n"
        "    Thing: {$ref: '#/components/schemas/Other'}\n"
        "    Other: {$ref: '#/components/schemas/Thing'}\n"
    )
    message = refused("spec", spec_with(tmp_path, "cycle.yaml", text))
    assert "circular $ref chain" in message
    assert "cycle.yaml#/components/schemas/Thing" in message


def test_long_ref_chain_is_refused(tmp_path: Path) -> None:
    links = "\n".join(f"    P{i}: {{$ref: '#/components/parameters/P{i + 1}'}}" for i in range(200))
    text = HEAD.replace(
        "    get:\n", "    get:\n      parameters: [{$ref: '#/components/parameters/P0'}]\n"
    )
    text += "components:\n  schemas: {Thing: {type: string}}\n  parameters:\n" + links
    text += "\n    P200: {name: q, in: query, schema: {type: string}}\n"
    message = refused("spec", spec_with(tmp_path, "chain.yaml", text))
    assert "$ref chain longer than 64 references" in message


def test_recursive_schema_is_served(tmp_path: Path) -> None:
    text = HEAD + (
        "components:\n  schemas:\n"
        "    Thing: {type: object, required: [name], properties: {name: {type: string},"
        " parent: {$ref: '#/components/schemas/Thing'},"
        " children: {type: array, items: {$ref: '#/components/schemas/Thing'}}}}\n"
    )
    with serve_twin(spec_with(tmp_path, "tree.yaml", text)) as running:
        answer = httpx.get(f"{running.url}/things", headers=_auth(running.api_key), timeout=30)
        assert answer.status_code == 200
        assert isinstance(answer.json()["name"], str)


def test_ref_outside_the_spec_folder_is_refused_unless_allowed(tmp_path: Path) -> None:
    (tmp_path / "shared.yaml").write_text("Thing: {type: string}\n")
    folder = tmp_path / "spec"
    folder.mkdir()
    text = HEAD + "components: {schemas: {Thing: {$ref: '../shared.yaml#/Thing'}}}\n"
    path = spec_with(folder, "outside.yaml", text)
    message = refused("spec", path)
    assert "$ref '../shared.yaml#/Thing' cannot be resolved: reference leaves the spec root" in (
        message
    )
    assert "--spec-root" in message
    assert read_in_child("spec", path, spec_root=tmp_path) == {"operations": 1}


@pytest.mark.parametrize(
    "target",
    ["https://example.com/schemas.yaml#/Thing", "http://127.0.0.1:9/s.yaml#/Thing"],
)
def test_ref_to_a_url_is_refused(tmp_path: Path, target: str) -> None:
    text = HEAD + f"components: {{schemas: {{Thing: {{$ref: '{target}'}}}}}}\n"
    message = refused("spec", spec_with(tmp_path, "remote.yaml", text))
    assert f"$ref '{target}' cannot be resolved: references to URLs are not followed" in message


def test_symlink_out_of_the_spec_folder_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shared.yaml").write_text("Thing: {type: string}\n")
    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "shared.yaml").symlink_to(outside / "shared.yaml")
    text = HEAD + "components: {schemas: {Thing: {$ref: 'shared.yaml#/Thing'}}}\n"
    message = refused("spec", spec_with(folder, "linked.yaml", text))
    assert "reference leaves the spec root" in message


def test_ref_to_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")  # opening it for reading would wait for a writer forever
    text = HEAD + "components: {schemas: {Thing: {$ref: 'pipe.yaml#/Thing'}}}\n"
    message = refused("spec", spec_with(tmp_path, "fifo.yaml", text))
    assert "$ref 'pipe.yaml#/Thing' cannot be resolved: not a regular file" in message


def test_absolute_file_ref_is_refused(tmp_path: Path) -> None:
    secret = tmp_path.parent / f"{tmp_path.name}-secret.yaml"
    secret.write_text("Thing: {type: string}\n")
    try:
        text = HEAD + f"components: {{schemas: {{Thing: {{$ref: '{secret.as_uri()}#/Thing'}}}}}}\n"
        message = refused("spec", spec_with(tmp_path, "absolute.yaml", text))
        assert "reference leaves the spec root" in message
    finally:
        secret.unlink()


# -- size and encoding ----------------------------------------------------------------------------


def test_enormous_spec_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as file:  # sparse: 8 GiB long, nothing on disk; larger than the cap
        file.write(HEAD.encode())
        file.truncate(8 * 1024**3)
    message = refused("spec", path)
    assert "huge.yaml: file is larger than the 64 MiB limit" in message


def test_spec_size_limit_is_configurable(tmp_path: Path) -> None:
    text = HEAD + "components: {schemas: {Thing: {type: string}}}\n"
    path = spec_with(tmp_path, "small.yaml", text)
    assert len(load_spec(path).operations) == 1
    with pytest.raises(SpecError) as caught:
        load_spec(path, limits=SpecLimits(max_bytes=100))
    assert [str(p) for p in caught.value.problems] == [
        "small.yaml: file is larger than the 100-byte limit"
    ]


def test_invalid_utf8_names_the_byte(tmp_path: Path) -> None:
    raw = (
        HEAD.encode() + b"components: {schemas: {Thing: {type: string, description: 'caf\xe9'}}}\n"
    )
    message = refused("spec", spec_with(tmp_path, "latin1.yaml", raw))
    offset = raw.index(b"\xe9")
    assert f"latin1.yaml: not valid UTF-8: byte 0xe9 at offset {offset} (line 12)" in message


def test_binary_garbage_is_refused(tmp_path: Path) -> None:
    message = refused("spec", spec_with(tmp_path, "garbage.yaml", bytes(range(1, 32)) * 100))
    assert "garbage.yaml: invalid YAML" in message


# -- apitwin.yaml ---------------------------------------------------------------------------------


def config_with(tmp_path: Path, body: str | bytes) -> Path:
    spec_with(tmp_path, "openapi.yaml", HEAD + "components: {schemas: {Thing: {type: string}}}\n")
    path = tmp_path / "apitwin.yaml"
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    return path


def test_config_alias_bomb_is_refused(tmp_path: Path) -> None:
    levels = ["x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [
        f"x-l{i}: &l{i} [" + ", ".join(f"*l{i - 1}" for _ in range(10)) + "]" for i in range(1, 9)
    ]
    body = "\n".join(levels) + "\ntwins:\n  - spec: openapi.yaml\n    fixtures: {things: *l8}\n"
    message = refused("config", config_with(tmp_path, body))
    assert "apitwin.yaml: YAML aliases expand to more than 100000 extra values" in message


def test_config_merge_bomb_is_refused(tmp_path: Path) -> None:
    levels = ["m0: &m0 {" + ", ".join(f"k{j}: v" for j in range(10)) + "}"]
    for i in range(1, 9):
        merged = ", ".join(f"*m{i - 1}" for _ in range(10))
        levels.append(f"m{i}: &m{i} {{<<: [{merged}], own{i}: 1}}")
    body = "\n".join(levels) + "\ntwins: [{spec: openapi.yaml}]\n"
    message = refused("config", config_with(tmp_path, body))
    if "YAML merge keys" not in message:
        # PyYAML 6.0.4 on copies each merged key once: the merges stay small, and the file is
        # refused in bounded time for what it is, fields apitwin.yaml does not have.
        assert "m8: unknown field; allowed: server, twins" in message
        return
    assert "YAML merge keys (<<) copy more than 100000 entries" in message


def test_config_deep_nesting_is_refused(tmp_path: Path) -> None:
    body = "twins:\n  - spec: openapi.yaml\n    fixtures: {things: [" + "[" * 5000 + "]" * 5000
    message = refused("config", config_with(tmp_path, body + "]}\n"))
    assert "apitwin.yaml: " in message
    assert "nests deeper than 64 levels" in message


def test_enormous_config_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = config_with(tmp_path, "twins: [{spec: openapi.yaml}]\n")
    with path.open("r+b") as file:
        file.truncate(2 * 1024**3)
    message = refused("config", path)
    assert "apitwin.yaml: larger than the 4 MiB limit" in message


def test_config_invalid_utf8_names_the_byte(tmp_path: Path) -> None:
    body = b"twins:\n  - spec: openapi.yaml\n    name: caf\xe9\n"
    message = refused("config", config_with(tmp_path, body))
    offset = body.index(b"\xe9")
    assert f"apitwin.yaml:3: not valid UTF-8: byte 0xe9 at offset {offset}" in message


def test_config_that_is_a_fifo_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "apitwin.yaml")
    assert refused("config", tmp_path / "apitwin.yaml").endswith("apitwin.yaml: not a regular file")


# -- the command line -----------------------------------------------------------------------------


def apitwin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "apitwin", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        preexec_fn=_cap_memory,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_check_refuses_a_yaml_bomb_with_exit_2(tmp_path: Path) -> None:
    levels = ["    L0: &L0 {type: string}"]
    for i in range(1, 10):
        props = ", ".join(f"p{j}: *L{i - 1}" for j in range(10))
        levels.append(f"    L{i}: &L{i} {{type: object, properties: {{{props}}}}}")
    text = HEAD + "components:\n  schemas:\n" + "\n".join(levels) + "\n    Thing: *L9\n"
    spec_with(tmp_path, "laughs.yaml", text)
    result = apitwin("check", "laughs.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "apitwin: cannot serve this spec; 1 problem(s):" in result.stderr
    assert "laughs.yaml: YAML aliases expand to more than 1000000 extra values" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_refuses_a_hostile_config_with_exit_2(tmp_path: Path) -> None:
    body = "twins:\n  - spec: openapi.yaml\n    fixtures: {things: [" + "[" * 5000 + "]" * 5000
    config_with(tmp_path, body + "]}\n")
    result = apitwin("check", "--config", "apitwin.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "nests deeper than 64 levels" in result.stderr
    assert "Traceback" not in result.stderr


def _auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}
