from __future__ import annotations

import io
import textwrap
from pathlib import Path

import jsonschema
import pytest

from apitwin.errors import SpecError
from apitwin.logs import LoadProgress
from apitwin.spec.loader import PHASES, Phase, load_spec
from apitwin.spec.refs import SpecLimits, parse_document

from conftest import SPECS, need_specs, shared_specs


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("path", shared_specs(), ids=lambda p: p.name)
def test_every_shared_spec_loads_and_compiles_valid_schemas(path: Path) -> None:
    spec = load_spec(path, spec_root=SPECS)
    schemas = [
        media.schema
        for op in spec.operations
        for response in op.responses.values()
        for media in response.media.values()
        if media.schema is not None
    ]
    schemas += [p.schema for op in spec.operations for p in op.parameters if p.schema]
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema.json)


def test_swagger_2_multi_file_spec_resolves_refs_across_folders() -> None:
    need_specs()
    spec = load_spec(SPECS / "oai-petstore-separate.swagger20/spec/swagger.yaml", spec_root=SPECS)
    assert spec.openapi == "2.0"
    assert spec.base_path == "/api"
    find = spec.operation("findPets")
    assert find is not None
    schema = find.responses["200"].media["application/json"].schema
    assert schema is not None
    assert "$defs" in schema.json


def test_refs_leaving_the_spec_folder_are_refused_with_a_hint() -> None:
    need_specs()
    with pytest.raises(SpecError) as caught:
        load_spec(SPECS / "oai-petstore-separate.swagger20/spec/swagger.yaml")
    assert any("--spec-root" in p.reason for p in caught.value.problems)


def test_broken_spec_reports_every_problem_with_file_and_pointer(tmp_path: Path) -> None:
    spec = write(
        tmp_path,
        "api.yaml",
        """
        openapi: 3.0.3
        info: {title: t, version: "1"}
        paths:
          /a:
            get:
              responses:
                "200":
                  content:
                    application/json:
                      schema: {$ref: "#/components/schemas/Missing"}
          /b:
            get:
              responses:
                "200":
                  content:
                    application/json:
                      schema: {$ref: "other.yaml#/Thing"}
        """,
    )
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    problems = caught.value.problems
    assert len(problems) == 2
    assert {p.file for p in problems} == {"api.yaml", "other.yaml"} or all(
        p.file == "api.yaml" for p in problems
    )
    assert all(p.pointer.startswith("/paths/") for p in problems)


def test_unsupported_version_and_non_openapi_documents_are_named(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unsupported OpenAPI version"):
        load_spec(write(tmp_path, "a.yaml", "openapi: 4.0.0\ninfo: {title: t}\n"))
    with pytest.raises(SpecError, match="not an OpenAPI document"):
        load_spec(write(tmp_path, "b.yaml", "hello: world\n"))
    with pytest.raises(SpecError, match="invalid YAML at line"):
        load_spec(write(tmp_path, "c.yaml", "openapi: [\n"))


def test_invalid_utf8_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"openapi: 3.0.0\ninfo: {title: \xff}\n")
    with pytest.raises(SpecError, match="not valid UTF-8"):
        load_spec(path)


def test_yaml_alias_bombs_are_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x"]']
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 1000) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("openapi: 3.0.0\n" + "\n".join(lines) + "\n")
    with pytest.raises(SpecError, match="YAML aliases"):
        load_spec(path)


def test_status_codes_stay_strings_and_nullable_becomes_a_type_array(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "a.yaml",
            """
            openapi: 3.0.3
            info: {title: t, version: "1"}
            paths:
              /a:
                get:
                  responses:
                    200:
                      description: ok
                      content:
                        application/json:
                          schema:
                            type: object
                            required: [id, name]
                            properties:
                              id: {type: integer, readOnly: true, format: int32}
                              name: {type: string, nullable: true}
                              size: {type: number, minimum: 0, exclusiveMinimum: true}
            """,
        )
    )
    op = spec.operations[0]
    assert list(op.responses) == ["200"]
    schema = op.responses["200"].media["application/json"].schema
    assert schema is not None
    converted = schema.json
    assert converted["properties"]["name"]["type"] == ["string", "null"]
    assert converted["properties"]["size"]["exclusiveMinimum"] == 0
    assert converted["properties"]["id"]["maximum"] == 2**31 - 1


def test_read_only_properties_are_not_required_in_requests(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "a.yaml",
            """
            openapi: 3.1.0
            info: {title: t, version: "1"}
            paths:
              /things:
                post:
                  requestBody:
                    content:
                      application/json:
                        schema: {$ref: "#/components/schemas/Thing"}
                  responses:
                    "201":
                      description: created
                      content:
                        application/json:
                          schema: {$ref: "#/components/schemas/Thing"}
            components:
              schemas:
                Thing:
                  type: object
                  required: [id, name, secret]
                  properties:
                    id: {type: string, readOnly: true}
                    name: {type: string}
                    secret: {type: string, writeOnly: true}
            """,
        )
    )
    op = spec.operations[0]
    assert op.body is not None
    request = op.body.media["application/json"].schema
    response = op.responses["201"].media["application/json"].schema
    assert request is not None and response is not None
    assert request.json["$defs"]["Thing"]["required"] == ["name", "secret"]
    assert response.json["$defs"]["Thing"]["required"] == ["id", "name"]


def test_recursive_schemas_bundle_finitely(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "a.yaml",
            """
            openapi: 3.1.0
            info: {title: t, version: "1"}
            paths:
              /nodes:
                get:
                  responses:
                    "200":
                      description: ok
                      content:
                        application/json:
                          schema: {$ref: "#/components/schemas/Node"}
            components:
              schemas:
                Node:
                  type: object
                  properties:
                    children: {type: array, items: {$ref: "#/components/schemas/Node"}}
            """,
        )
    )
    schema = spec.operations[0].responses["200"].media["application/json"].schema
    assert schema is not None
    assert schema.json["$defs"]["Node"]["properties"]["children"]["items"] == {
        "$ref": "#/$defs/Node"
    }
    validator = jsonschema.Draft202012Validator(schema.json)
    assert validator.is_valid({"children": [{"children": []}]})
    assert not validator.is_valid({"children": [{"children": 3}]})


def test_swagger_2_form_data_and_files_become_a_body(tmp_path: Path) -> None:
    spec = load_spec(
        write(
            tmp_path,
            "a.yaml",
            """
            swagger: "2.0"
            info: {title: t, version: "1"}
            basePath: /api
            paths:
              /upload:
                post:
                  consumes: [multipart/form-data]
                  parameters:
                    - {name: note, in: formData, type: string, required: true}
                    - {name: file, in: formData, type: file}
                    - {name: tags, in: query, type: array, items: {type: string},
                       collectionFormat: pipes}
                  responses:
                    200: {description: ok}
            """,
        )
    )
    op = spec.operations[0]
    assert op.body is not None
    media = op.body.media["multipart/form-data"]
    assert media.schema is not None
    assert media.schema.json["properties"]["file"] == {"type": "string", "format": "binary"}
    assert media.schema.json["required"] == ["note"]
    tags = op.parameters[0]
    assert (tags.name, tags.style, tags.explode) == ("tags", "pipeDelimited", False)


def test_json_schema_ids_and_anchors_resolve_in_3_1(tmp_path: Path) -> None:
    need_specs()
    spec = load_spec(SPECS / "swagger-petstore.oas31.yaml")
    assert any("unquoted #" in w.reason for w in spec.warnings)
    op = spec.operation("addPet")
    assert op is not None and op.body is not None
    schema = op.body.media["application/json"].schema
    assert schema is not None
    jsonschema.Draft202012Validator.check_schema(schema.json)


def test_loading_reports_each_phase_in_order_with_what_it_produced() -> None:
    need_specs()
    root = SPECS / "oai-petstore-separate.swagger20/spec/swagger.yaml"
    phases: list[Phase] = []
    spec = load_spec(root, spec_root=SPECS, progress=phases.append)
    assert [(p.name, p.done) for p in phases] == [
        (name, done) for name in PHASES[:4] for done in (False, True)
    ]
    done = {p.name: p.count for p in phases if p.done}
    assert done["reading"] == root.stat().st_size
    assert done["parsing"] == 1
    assert done["resolving refs"] == 11  # the corpus index counts 11 external $refs
    assert done["building operations"] == len(spec.operations) == 4


def test_slow_loading_on_a_terminal_shows_the_phases_and_otherwise_nothing() -> None:
    need_specs()
    spec = SPECS / "spotify-web-api.oas30.yml"
    screen = io.StringIO()
    load_spec(spec, progress=LoadProgress(screen, tty=True, delay=0.0))
    # As a terminal shows it: a phase under way is overwritten (\r) by its result.
    lines = [line.rsplit("\r", 1)[-1] for line in screen.getvalue().split("\n") if line]
    assert [line.split()[0] for line in lines] == ["reading", "parsing", "resolving", "building"]
    assert "97 operation(s)" in lines[-1]
    piped = io.StringIO()
    display = LoadProgress(piped, tty=False, delay=0.0)
    load_spec(spec, progress=display)
    assert piped.getvalue() == ""
    assert display.summary().startswith("ready in ")
    assert "97 operations" in display.summary()


def test_json_nesting_is_limited_at_exactly_the_limit() -> None:
    limits = SpecLimits(max_nesting=10)
    assert parse_document(b"[" * 10 + b"]" * 10, "ok.json", limits) is not None
    with pytest.raises(ValueError, match="nests deeper than 10 levels"):
        parse_document(b'{"a": ' * 11 + b"1" + b"}" * 11, "deep.json", limits)


def test_json_is_read_from_its_bytes_with_or_without_a_bom() -> None:
    text = '{"openapi": "3.1.0", "info": {"title": "Caf\u00e9"}}'.encode()
    assert parse_document(text, "a.json")["info"]["title"] == "Caf\u00e9"
    assert parse_document(b"\xef\xbb\xbf \n" + text, "b.json")["openapi"] == "3.1.0"


def test_json_that_is_not_utf8_or_not_json_gets_the_reason() -> None:
    with pytest.raises(ValueError, match=r"not valid UTF-8: byte 0xff at offset 30 \(line 1\)"):
        parse_document(b'{"openapi": "3.1.0", "info": "\xff"}', "bad.json")
    with pytest.raises(ValueError, match="invalid YAML at line 1"):
        parse_document(b'{"openapi": "3.1.0",, }', "broken.json")


@pytest.mark.parametrize("depth", [1, 200, 254, 255, 256])
def test_json_within_the_default_nesting_limit_is_read(depth: int) -> None:
    text = b'{"a": ' * (depth - 1) + b"[]" + b"}" * (depth - 1)
    assert parse_document(text, "ok.json") is not None


def test_json_past_the_default_nesting_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="nests deeper than 256 levels"):
        parse_document(b"[" * 257 + b"]" * 257, "deep.json")


def test_refs_are_found_in_json_text_only_where_that_is_exact() -> None:
    from apitwin.spec.loader import _literal_refs

    assert _literal_refs(b'{"$ref" : "#/a", "b": {"$ref":"#/c"}, "d": "\\"$ref\\""}') == [
        "#/a",
        "#/c",
    ]
    assert _literal_refs(b'{"enum": ["$ref"], "x": {"$ref": "#/a"}}') == ["#/a"]
    assert _literal_refs(b'{"\\u0024ref": "#/a"}') is None  # an escaped key
    assert _literal_refs(b'{"$r\\u0065f": "#/a"}') is None
    assert _literal_refs(b'{"$ref": ""}') is None  # the walk warns about it
    assert _literal_refs(b'{"$ref": 5}') is None
    assert _literal_refs(b'{"$ref": "#\\/a\\/b"}') == ["#/a/b"]  # escapes in the value
    assert _literal_refs(None) is None


JSON_SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/a": {
            "get": {
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/A"},
                                "example": {"$ref": "#/not/a/reference"},
                            }
                        },
                    }
                }
            }
        }
    },
    "components": {"schemas": {"A": {"type": "object"}}},
}


def test_a_json_spec_with_a_reference_like_example_loads(tmp_path: Path) -> None:
    import json

    path = tmp_path / "spec.json"
    path.write_text(json.dumps(JSON_SPEC))
    assert [op.key for op in load_spec(path).operations] == ["GET /a"]


def test_a_broken_reference_in_a_json_spec_is_reported_where_it_is(tmp_path: Path) -> None:
    import copy
    import json

    spec = copy.deepcopy(JSON_SPEC)
    media = spec["paths"]["/a"]["get"]["responses"]["200"]["content"]["application/json"]
    media["schema"] = {"$ref": "#/components/schemas/Missing"}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    pointer = "/paths/~1a/get/responses/200/content/application~1json/schema"
    assert any(
        p.pointer == pointer and "cannot be resolved" in p.reason for p in caught.value.problems
    )


def test_a_json_spec_referencing_another_file_reads_it(tmp_path: Path) -> None:
    import copy
    import json

    spec = copy.deepcopy(JSON_SPEC)
    spec["components"]["schemas"]["A"] = {"$ref": "other.json#/B"}
    (tmp_path / "other.json").write_text(
        json.dumps({"B": {"$ref": "#/C"}, "C": {"type": "string"}})
    )
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert load_spec(path).operations
    (tmp_path / "other.json").write_text(json.dumps({"B": {"$ref": "#/Nope"}}))
    with pytest.raises(SpecError, match=r"other\.json"):
        load_spec(path)
