"""`apitwin.yaml`: its published schema, and load errors naming the line, the field and the fix."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from apitwin.config import SCHEMA, load_config, schema_text
from apitwin.errors import ConfigError
from apitwin.reference import config_reference

from conftest import EXAMPLE

EXAMPLE_CONFIG = EXAMPLE.parent / "apitwin.yaml"


def problems_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The lines of the error loading ``text``, each without the file name."""
    path = tmp_path / "apitwin.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    message = caught.value.message
    return [line.strip().removeprefix(f"{path}:") for line in message.splitlines()]


def properties(schema: dict[str, Any], where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every named field of the schema, with its path."""
    for name, prop in (schema.get("properties") or {}).items():
        yield f"{where}{name}", prop
        yield from properties(prop, f"{where}{name}.")
    for name, definition in (schema.get("$defs") or {}).items():
        yield from properties(definition, f"$defs.{name}.")


def test_the_schema_is_valid_and_every_field_is_described() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    fields = dict(properties(SCHEMA))
    assert len(fields) > 50
    defs = SCHEMA["$defs"]
    undocumented = [
        name
        for name, prop in fields.items()
        if not (prop.get("description") or defs.get(prop.get("$ref", "#/$defs/").split("/")[-1]))
    ]
    assert undocumented == []
    assert all(d.get("description") for d in defs.values())


def test_the_reference_doc_shows_every_field_with_its_description() -> None:
    doc = config_reference()
    for name, prop in properties(SCHEMA):
        if "$ref" in prop:
            continue  # documented where the definition is
        leaf = name.rsplit(".", 1)[-1]
        assert f".{leaf}` — " in doc or f"`{leaf}` — " in doc, name
        assert prop["description"] in doc, name


def test_the_bundled_example_points_editors_at_the_shipped_schema() -> None:
    first = EXAMPLE_CONFIG.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    target = (EXAMPLE_CONFIG.parent / first.split("$schema=", 1)[1]).resolve()
    assert target.read_text(encoding="utf-8") == schema_text()
    assert load_config(EXAMPLE_CONFIG).twins[0].name == "research"


def test_an_unknown_field_is_pointed_at_with_a_suggestion(tmp_path: Path) -> None:
    assert problems_of(
        tmp_path,
        """
        twins:
          - spec: api.yaml
            sead: 3
            connections:
              - client_id: acme-qa
                labl: QA
        """,
    ) == [
        "invalid configuration (2 problems):",
        "3:5: twins[0].sead: unknown field; did you mean 'seed'?",
        "6:9: twins[0].connections[0].labl: unknown field; did you mean 'label'?",
    ]


def test_an_unknown_field_with_no_near_miss_lists_what_is_allowed(tmp_path: Path) -> None:
    [_, problem] = problems_of(tmp_path, "server: {colour: blue}\ntwins: [{spec: a.yaml}]\n")
    allowed = "admin_token, db, host, limits, port"
    assert problem == f"1:10: server.colour: unknown field; allowed: {allowed}"


def test_wrong_types_say_what_was_expected_and_what_was_given(tmp_path: Path) -> None:
    assert problems_of(
        tmp_path,
        """
        server:
          port: eighty
        twins:
          - spec: api.yaml
            seed_examples: 1
        """,
    )[1:] == [
        '2:9: server.port: expected an integer, got a string ("eighty")',
        "5:20: twins[0].seed_examples: expected true or false, got an integer (1)",
    ]


def test_a_bad_choice_lists_the_choices_and_the_nearest(tmp_path: Path) -> None:
    [_, auth, scheme] = problems_of(
        tmp_path,
        """
        twins:
          - spec: api.yaml
            auth: strikt
            webhooks: {scheme: stripes}
        """,
    )
    assert auth == (
        '3:11: twins[0].auth: expected one of: strict, lenient; got "strikt"; '
        "did you mean 'strict'?"
    )
    assert scheme.startswith("4:24: twins[0].webhooks.scheme: expected one of: standard-webhooks,")
    assert scheme.endswith("did you mean 'stripe'?")


def test_a_bad_item_inside_a_choice_of_shapes_is_named_precisely(tmp_path: Path) -> None:
    [_, problem] = problems_of(
        tmp_path, "twins:\n  - spec: api.yaml\n    webhooks: {retry: [5, -1]}\n"
    )
    assert problem == "3:27: twins[0].webhooks.retry[1]: expected a number >= 0, got -1"


def test_missing_required_fields_are_named(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "twins:\n  - name: x\n")[1:] == [
        "2:5: twins[0]: missing required field 'spec'"
    ]
    assert problems_of(tmp_path, "server: {port: 1}\n")[1:] == [
        "1:1: (top level): missing required field 'twins'"
    ]


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        """
        twins:
          - spec: api.yaml
            connections:
              - client_id: qa
                api_key: ${SHORT_KEY}
        """,
        env={"SHORT_KEY": "k3y!"},
    )
    assert problems[1:] == [
        "5:18: twins[0].connections[0].api_key: expected at least 8 characters, got (value hidden)"
    ]
    assert "k3y!" not in "\n".join(problems)


def test_unset_variables_are_named_with_their_field(tmp_path: Path) -> None:
    assert problems_of(
        tmp_path,
        """
        twins:
          - spec: api.yaml
            connections:
              - client_id: qa
                client_secret: ${QA_SECRET}
        """,
    )[1:] == [
        "5:24: twins[0].connections[0].client_secret: environment variable QA_SECRET is not set "
        "(used as ${QA_SECRET})"
    ]


def test_repeated_keys_are_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "twins:\n  - spec: a.yaml\n    seed: 1\n    seed: 2\n")[1:] == [
        "4:5: twins[0].seed: repeated key (first given on line 3)"
    ]


def test_yaml_syntax_errors_give_line_and_column(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "twins:\n  - spec: [a.yaml\n    seed: 1\n") == [
        "3:9: invalid YAML: expected ',' or ']', but got ':'"
    ]


def test_repeated_twin_names_point_at_the_second(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "twins:\n  - {spec: a.yaml}\n  - {spec: a.yaml}\n") == [
        "3:5: twins[1]: twin name 'a' is already used by twins[0]; names must be unique"
    ]


def test_a_valid_config_loads_with_variables_expanded(tmp_path: Path) -> None:
    path = tmp_path / "apitwin.yaml"
    path.write_text(
        "server: {db: state.db}\n"
        "twins:\n  - spec: api.yaml\n    connections:\n"
        "      - {client_id: qa, api_key: '${KEY}'}\n"
    )
    settings = load_config(path, env={"KEY": "ak_from_the_env"})
    assert settings.twins[0].connections[0].api_key == "ak_from_the_env"
    assert settings.db == str(tmp_path / "state.db")
    assert json.loads(schema_text()) == SCHEMA


def test_names_that_must_follow_a_pattern_are_pointed_at(tmp_path: Path) -> None:
    text = "twins:\n  - spec: a.yaml\n    actions:\n      Big-One: {steps: [{emit: x}]}\n"
    assert problems_of(tmp_path, text)[1:] == [
        "4:7: twins[0].actions.Big-One: names here must match ^[a-z][a-z0-9_]{0,63}$"
    ]


def test_dates_stay_text_as_json_has_no_dates(tmp_path: Path) -> None:
    path = tmp_path / "apitwin.yaml"
    path.write_text(
        "twins:\n  - spec: a.yaml\n    fixtures: {projects: [{due: 2026-01-01}]}\n"
        "    connections: [{client_id: qa, label: 2026-02-03}]\n"
    )
    twin = load_config(path).twins[0]
    assert twin.fixtures["projects"][0]["due"] == "2026-01-01"
    assert twin.connections[0].label == "2026-02-03"
