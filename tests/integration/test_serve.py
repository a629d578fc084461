"""A real twin on 127.0.0.1, driven by httpx."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import jsonschema
import pytest

from apitwin.config import ConnectionConfig
from apitwin.spec.loader import load_spec

from conftest import SPECS, need_specs, serve_twin

PETSTORE = """
openapi: 3.0.3
info: {title: Pets, version: "1.0"}
servers: [{url: "https://pets.example/v1"}]
security: [{key: []}]
paths:
  /pets:
    get:
      operationId: listPets
      parameters:
        - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100}}
        - {name: tags, in: query, style: form, explode: false,
           schema: {type: array, items: {type: string, enum: [cat, dog]}}}
      responses:
        "200":
          description: pets
          headers:
            X-Total: {required: true, schema: {type: integer, minimum: 0}}
          content:
            application/json:
              schema: {type: array, items: {$ref: "#/components/schemas/Pet"}}
        "404":
          description: none
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Error"}
    post:
      operationId: createPet
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: "#/components/schemas/NewPet"}
          application/x-www-form-urlencoded:
            schema: {$ref: "#/components/schemas/NewPet"}
      responses:
        "201":
          description: created
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
              examples:
                rex: {value: {id: 1, name: Rex, tag: dog}}
                tom: {value: {id: 2, name: Tom, tag: cat}}
            application/xml:
              schema: {$ref: "#/components/schemas/Pet"}
        "422":
          description: invalid
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Error"}
  /pets/{petId}:
    get:
      operationId: getPet
      parameters:
        - {name: petId, in: path, required: true, schema: {type: integer, format: int64}}
      responses:
        "200":
          description: a pet
          content:
            application/json:
              schema: {$ref: "#/components/schemas/Pet"}
  /public/ping:
    get:
      operationId: ping
      security: []
      responses:
        "204": {description: pong}
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-Api-Key}
  schemas:
    NewPet:
      type: object
      required: [name]
      properties:
        name: {type: string, minLength: 1, maxLength: 40}
        tag: {type: string, enum: [cat, dog]}
        age: {type: integer, minimum: 0}
    Pet:
      allOf:
        - $ref: "#/components/schemas/NewPet"
        - type: object
          required: [id]
          properties:
            id: {type: integer, format: int64}
    Error:
      type: object
      required: [code, message]
      properties:
        code: {type: integer}
        message: {type: string}
        errors:
          type: array
          items:
            type: object
            properties:
              field: {type: string}
              message: {type: string}
"""

KEY = {"X-Api-Key": "ak_test_key_for_pets"}


@pytest.fixture(scope="module")
def pets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("spec") / "pets.yaml"
    path.write_text(textwrap.dedent(PETSTORE))
    default = ConnectionConfig(client_id="default", api_key=KEY["X-Api-Key"])
    with serve_twin(path, seed=3, connections=(default,)) as running:
        yield running.url


def schema_of(path: Path, op_id: str, status: str) -> dict[str, object]:
    spec = load_spec(path)
    op = spec.operation(op_id)
    assert op is not None
    schema = op.responses[status].media["application/json"].schema
    assert schema is not None
    return schema.json


def test_default_response_is_the_lowest_2xx_and_validates(pets: str) -> None:
    response = httpx.get(f"{pets}/pets", headers=KEY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["x-total"]) >= 0
    body = response.json()
    assert isinstance(body, list)
    assert all({"id", "name"} <= set(pet) for pet in body)


def test_same_request_gets_the_same_generated_body(pets: str) -> None:
    first = httpx.get(f"{pets}/pets/7", headers=KEY).json()
    again = httpx.get(f"{pets}/pets/7", headers=KEY).json()
    assert first == again


def test_create_answers_the_stored_record_and_prefer_selects_an_example(pets: str) -> None:
    body = {"name": "Rex"}
    created = httpx.post(f"{pets}/pets", json=body, headers=KEY)
    assert created.status_code == 201
    assert created.json()["name"] == "Rex"
    assert isinstance(created.json()["id"], int)
    chosen = httpx.post(f"{pets}/pets", json=body, headers={**KEY, "Prefer": "example=tom"})
    assert chosen.json() == {"id": 2, "name": "Tom", "tag": "cat"}


def test_prefer_code_selects_a_declared_response(pets: str) -> None:
    response = httpx.get(f"{pets}/pets", headers={**KEY, "Prefer": "code=404"})
    assert response.status_code == 404
    assert {"code", "message"} <= set(response.json())


def test_prefer_code_that_is_not_declared_is_refused_clearly(pets: str) -> None:
    response = httpx.get(f"{pets}/pets", headers={**KEY, "Prefer": "code=418"})
    assert response.status_code == 400
    assert "code=418 is not declared" in response.text


def test_invalid_request_lists_every_violation_in_the_operations_error_shape(pets: str) -> None:
    response = httpx.post(f"{pets}/pets", json={"name": "", "tag": "bird", "age": -1}, headers=KEY)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == 422
    fields = sorted(e["field"] for e in body["errors"])
    assert fields == ["/age", "/name", "/tag"]


def test_invalid_query_parameters_are_problem_json_with_locations(pets: str) -> None:
    response = httpx.get(f"{pets}/pets?limit=abc&tags=cat,bird", headers=KEY)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    errors = response.json()["errors"]
    assert {(e["in"], e["name"]) for e in errors} == {("query", "limit"), ("query", "tags")}


def test_path_parameters_are_typed(pets: str) -> None:
    assert httpx.get(f"{pets}/pets/12", headers=KEY).status_code == 200
    response = httpx.get(f"{pets}/pets/twelve", headers=KEY)
    assert response.status_code == 400
    assert response.json()["errors"][0]["name"] == "petId"


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(pets: str) -> None:
    missing = httpx.get(f"{pets}/owners", headers=KEY)
    assert missing.status_code == 404
    assert "no operation matches GET /owners" in missing.json()["detail"]
    wrong = httpx.delete(f"{pets}/pets", headers=KEY)
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, POST"


def test_wrong_content_type_is_415_and_unacceptable_accept_is_406(pets: str) -> None:
    response = httpx.post(
        f"{pets}/pets", content=b"name=x", headers={**KEY, "Content-Type": "text/csv"}
    )
    assert response.status_code == 415
    refused = httpx.get(f"{pets}/pets", headers={**KEY, "Accept": "image/png"})
    assert refused.status_code == 406


def test_form_bodies_are_decoded_and_validated(pets: str) -> None:
    ok = httpx.post(f"{pets}/pets", data={"name": "Rex", "age": "3"}, headers=KEY)
    assert ok.status_code == 201
    bad = httpx.post(f"{pets}/pets", data={"name": "Rex", "age": "old"}, headers=KEY)
    assert bad.status_code == 422


def test_malformed_json_is_a_clear_400(pets: str) -> None:
    response = httpx.post(
        f"{pets}/pets", content=b"{not json", headers={**KEY, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.text


def test_missing_credentials_answer_401_with_a_reason(pets: str) -> None:
    response = httpx.get(f"{pets}/pets")
    assert response.status_code == 401
    assert "X-Api-Key" in response.text
    assert httpx.get(f"{pets}/public/ping").status_code == 204


def test_xml_media_is_served_when_asked_for(pets: str) -> None:
    response = httpx.post(
        f"{pets}/pets", json={"name": "Rex"}, headers={**KEY, "Accept": "application/xml"}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/xml"
    assert response.text.startswith("<")


def test_requests_outside_the_base_path_are_404(pets: str) -> None:
    response = httpx.get(pets.removesuffix("/v1") + "/pets", headers=KEY)
    assert response.status_code == 404


def test_multi_file_swagger_spec_is_served(tmp_path: Path) -> None:
    need_specs()
    spec = load_spec(SPECS / "oai-petstore-separate.swagger20/spec/swagger.yaml", spec_root=SPECS)
    with serve_twin(spec) as running:
        response = httpx.get(f"{running.url}/pets?limit=5&tags=a,b")
        assert response.status_code == 200
        schema = spec.operation("findPets")
        assert schema is not None
        media = schema.responses["200"].media["application/json"]
        assert media.schema is not None
        jsonschema.validate(response.json(), media.schema.json)


def test_a_websocket_upgrade_is_answered_as_plain_http(pets: str) -> None:
    # No WebSocket protocol is loaded: the request is served like any other, not switched.
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    response = httpx.get(pets + "/pets", headers={**KEY, **upgrade})
    assert response.status_code == 200
    assert isinstance(response.json(), list)
