"""The event catalogue, payload building and OpenAPI runtime expressions."""

from __future__ import annotations

import asyncio
import random
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from apitwin.clock import VirtualClock
from apitwin.errors import ConfigError
from apitwin.generation import Generator
from apitwin.spec.loader import load_spec
from apitwin.spec.model import Spec
from apitwin.spec.resources import ResourceMap, infer_resources
from apitwin.webhooks.events import (
    Catalogue,
    EventType,
    RequestContext,
    build_payload,
    callback_url,
    catalogue,
    evaluate,
    events_for,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "src/apitwin/examples/expert-network/openapi.yaml"
SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"
T0 = 1_700_000_000.0
WEBHOOK_SPECS = [
    "oai-webhook-example.oas31.yaml",
    "oai-tictactoe.oas31.yaml",
    "redocly-museum.oas31.yaml",
    "swagger-petstore.oas31.yaml",
]
CALLBACK_SPECS = ["oai-callback-example.oas30.yaml", "oai-tictactoe.oas31.yaml"]


@pytest.fixture(scope="module")
def example() -> tuple[Spec, ResourceMap, dict[str, EventType]]:
    spec = load_spec(EXAMPLE)
    resources = infer_resources(spec)
    return spec, resources, catalogue(spec, resources)


def frozen() -> VirtualClock:
    return VirtualClock(source=lambda: T0)


def shared(name: str) -> Path:
    path = SPECS / name
    if not path.is_file():
        pytest.skip(f"the shared spec corpus has no {name}")
    return path


def check(event: EventType, payload: Any) -> None:
    """Validates with the `jsonschema` package: independent of the code under test."""
    assert event.schema is not None
    validator = jsonschema.Draft202012Validator(
        event.schema.json, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]
    assert errors == []


def record_of(resources: ResourceMap, name: str, seed: int = 1) -> dict[str, Any]:
    schema = resources.resources[name].schema
    assert schema is not None
    record: dict[str, Any] = Generator(seed).generate(
        schema.json, direction="response", rng=random.Random(seed)
    )
    return record


def payload(event: EventType, record: dict[str, Any] | None, **extra: Any) -> Any:
    return build_payload(
        event, record, generator=Generator(7), rng=random.Random(7), clock=frozen(), **extra
    )


# -- the catalogue ----------------------------------------------------------------------------


def test_the_example_spec_declares_ten_webhooks(example: Any) -> None:
    _, _, events = example
    assert list(events) == [
        "project.created",
        "project.updated",
        "project.closed",
        "expert.received",
        "expert.shortlisted",
        "expert.rejected",
        "call.scheduled",
        "call.rescheduled",
        "call.cancelled",
        "call.completed",
    ]
    assert {e.source for e in events.values()} == {"webhook"}
    assert all(e.schema is not None and e.method == "post" for e in events.values())


@pytest.mark.parametrize(
    ("name", "resource", "verb"),
    [
        ("project.created", "projects", "created"),
        ("project.closed", "projects", "closed"),
        ("expert.shortlisted", "experts", "shortlisted"),
        ("expert.received", "experts", "received"),
        ("call.cancelled", "calls", "cancelled"),
    ],
)
def test_events_link_to_a_resource_and_verb_by_name(
    example: Any, name: str, resource: str, verb: str
) -> None:
    event = example[2][name]
    assert (event.resource, event.verb) == (resource, verb)
    assert event.record_path == ("data", "object")


def test_events_for_a_record_change(example: Any) -> None:
    events = example[2]
    assert [e.name for e in events_for(events, "calls", "cancelled")] == ["call.cancelled"]
    assert events_for(events, "calls", "archived") == []


def test_webhook_payload_schemas_are_read_in_the_producer_direction(example: Any) -> None:
    # readOnly fields (the record's id, timestamps) are required: the twin writes the payload.
    event = example[2]["project.created"]
    assert event.schema.direction == "response"
    project = event.schema.json["$defs"]["Project"]
    assert "id" in project["required"]


@pytest.mark.parametrize("name", WEBHOOK_SPECS)
def test_shared_specs_with_webhooks(name: str) -> None:
    spec = load_spec(shared(name))
    events = catalogue(spec, infer_resources(spec))
    webhooks = [e for e in events.values() if e.source == "webhook"]
    assert [e.name for e in webhooks] == [w.name for w in spec.webhooks]


@pytest.mark.parametrize(
    ("name", "event", "resource", "verb", "path"),
    [
        ("swagger-petstore.oas31.yaml", "newPet", "pet", "created", ()),
        ("redocly-museum.oas31.yaml", "publishNewEvent", "special-events", "created", ()),
        ("oai-webhook-example.oas31.yaml", "newPet", None, "created", None),
    ],
)
def test_events_link_to_a_resource_by_the_payload_schema(
    name: str, event: str, resource: str | None, verb: str, path: tuple[str, ...] | None
) -> None:
    spec = load_spec(shared(name))
    found = catalogue(spec, infer_resources(spec))[event]
    assert (found.resource, found.verb, found.record_path) == (resource, verb, path)


@pytest.mark.parametrize(
    ("name", "suffix", "expression"),
    [
        ("oai-callback-example.oas30.yaml", ".onData", "{$request.query.callbackUrl}/data"),
        ("oai-tictactoe.oas31.yaml", ".statusCallback", "{$request.header.progressUrl}"),
    ],
)
def test_shared_specs_with_callbacks(name: str, suffix: str, expression: str) -> None:
    spec = load_spec(shared(name))
    events = catalogue(spec, infer_resources(spec))
    [event] = [e for e in events.values() if e.source == "callback"]
    op = next(op for op in spec.operations if op.callbacks)
    assert event.name == op.operation_id + suffix
    assert event.expression == expression
    assert event.schema is not None and event.operation is not None


def test_config_declares_events_and_corrects_spec_ones(example: Any) -> None:
    spec, resources, _ = example
    configured = {
        "project.archived": {
            "schema": {
                "type": "object",
                "required": ["kind", "project"],
                "properties": {
                    "kind": {"const": "project.archived"},
                    "project": {"$ref": "#/components/schemas/Project"},
                },
            },
        },
        "call.completed": {"verb": "finished"},
    }
    events = catalogue(spec, resources, configured)
    archived = events["project.archived"]
    assert (archived.source, archived.resource, archived.verb) == ("config", "projects", "archived")
    assert archived.record_path == ("project",)
    assert events["call.completed"].verb == "finished"
    record = record_of(resources, "projects")
    built = payload(archived, record)
    check(archived, built)
    assert built["project"] == record


def test_config_errors_name_the_entry(example: Any) -> None:
    spec, resources, _ = example
    with pytest.raises(ConfigError, match=r"events\.x: unknown key"):
        catalogue(spec, resources, {"x": {"schema": {}, "when": "always"}})
    with pytest.raises(ConfigError, match="no resource is named 'invoices'"):
        catalogue(spec, resources, {"x": {"resource": "invoices"}})


def test_names_in_other_styles_link_too(tmp_path: Path) -> None:
    source = tmp_path / "pets.yaml"
    source.write_text(
        textwrap.dedent(
            """
            openapi: 3.1.0
            info: {title: Pets, version: "1"}
            paths:
              /pets:
                post:
                  operationId: createPet
                  responses:
                    "201":
                      description: created
                      content:
                        application/json:
                          schema: {$ref: "#/components/schemas/Pet"}
              /pets/{petId}:
                get:
                  operationId: getPet
                  parameters: [{name: petId, in: path, required: true, schema: {type: string}}]
                  responses:
                    "200":
                      description: a pet
                      content:
                        application/json:
                          schema: {$ref: "#/components/schemas/Pet"}
            webhooks:
              pet_adopted: {post: {requestBody: {content: {application/json: {schema: {}}}},
                            responses: {"200": {description: ok}}}}
              PetRemoved: {post: {responses: {"200": {description: ok}}}}
              newPet: {post: {responses: {"200": {description: ok}}}}
            components:
              schemas:
                Pet:
                  type: object
                  required: [id, name]
                  properties:
                    id: {type: string, readOnly: true}
                    name: {type: string}
            """
        )
    )
    spec = load_spec(source)
    events = catalogue(spec, infer_resources(spec))
    links = {name: (e.resource, e.verb) for name, e in events.items()}
    assert links == {
        "pet_adopted": ("pets", "adopted"),
        "PetRemoved": ("pets", "deleted"),
        "newPet": ("pets", "created"),
    }


# -- payloads ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["project.created", "expert.shortlisted", "call.cancelled"])
def test_a_payload_carries_the_record_as_stored_and_validates(example: Any, name: str) -> None:
    _, resources, events = example
    event = events[name]
    record = record_of(resources, event.resource)
    built = payload(event, record)
    check(event, built)
    assert built["data"]["object"] == record
    assert built["type"] == name
    assert built["created_at"] == frozen().iso()


def test_event_ids_are_fresh_and_match_the_id_pattern(example: Any) -> None:
    _, resources, events = example
    event = events["project.created"]
    record = record_of(resources, "projects")
    rng = random.Random(3)
    ids = {
        build_payload(event, record, generator=Generator(1), rng=rng, clock=frozen())["id"]
        for _ in range(5)
    }
    assert len(ids) == 5
    assert all(i.startswith("evt_") and len(i) == 20 for i in ids)


@pytest.mark.parametrize(
    ("id_schema", "kind"),
    [("{type: integer, format: int64}", int), ("{type: integer, minimum: 1, maximum: 50}", int)],
)
def test_event_ids_typed_as_numbers_are_fresh_and_valid(
    tmp_path: Path, id_schema: str, kind: type
) -> None:
    source = tmp_path / "numbered.yaml"
    source.write_text(
        textwrap.dedent(
            f"""
            openapi: 3.1.0
            info: {{title: Numbered, version: "1"}}
            paths: {{}}
            webhooks:
              ping:
                post:
                  requestBody:
                    content:
                      application/json:
                        schema:
                          type: object
                          required: [id, note]
                          properties:
                            id: {id_schema}
                            note: {{type: string}}
                  responses: {{"200": {{description: ok}}}}
            """
        )
    )
    spec = load_spec(source)
    event = catalogue(spec, infer_resources(spec))["ping"]
    rng = random.Random(5)
    built = [
        build_payload(event, None, generator=Generator(1), rng=rng, clock=frozen())
        for _ in range(20)
    ]
    for one in built:
        check(event, one)
        assert isinstance(one["id"], kind) and not isinstance(one["id"], bool)
    assert len({one["id"] for one in built}) > 10  # fresh, as far as the schema leaves room


def test_overrides_are_merged_and_the_result_stays_valid(example: Any) -> None:
    _, resources, events = example
    event = events["project.updated"]
    record = record_of(resources, "projects")
    overrides = {"data": {"previous_attributes": {"title": "Old title"}}, "type": "not.allowed"}
    built = payload(event, record, overrides=overrides)
    check(event, built)
    assert built["data"]["previous_attributes"] == {"title": "Old title"}
    assert built["type"] == "project.updated"  # the schema's const wins over the override
    assert built["data"]["object"] == record


def test_parts_of_a_record_that_do_not_fit_fall_back_to_generated_values(example: Any) -> None:
    _, resources, events = example
    event = events["project.created"]
    record = record_of(resources, "projects")
    broken = {**record, "status": 42, "target_expert_count": "many"}
    del broken["brief"]
    built = payload(event, broken)
    check(event, built)
    kept = built["data"]["object"]
    assert kept["title"] == record["title"] and kept["id"] == record["id"]
    assert isinstance(kept["status"], str) and isinstance(kept["target_expert_count"], int)


def test_a_payload_that_is_the_record_itself(tmp_path: Path) -> None:
    spec = load_spec(shared("swagger-petstore.oas31.yaml"))
    resources = infer_resources(spec)
    event = catalogue(spec, resources)["newPet"]
    record = record_of(resources, "pet")
    built = payload(event, record)
    check(event, built)
    assert built == record


def test_an_unlinked_payload_takes_the_record_where_it_validates() -> None:
    spec = load_spec(shared("oai-webhook-example.oas31.yaml"))
    event = catalogue(spec)["newPet"]
    record = {"id": 7, "name": "Rex", "tag": "dog"}
    assert payload(event, record) == record


def test_an_event_without_a_schema_gets_a_plain_envelope() -> None:
    spec = load_spec(shared("oai-tictactoe.oas31.yaml"))
    event = catalogue(spec, infer_resources(spec))["markStatus"]
    assert event.schema is None
    built = payload(event, {"winner": "X"}, overrides={"extra": 1})
    assert built["type"] == "markStatus" and built["data"] == {"winner": "X"}
    assert built["created_at"] == frozen().iso() and built["extra"] == 1


def test_callback_payloads_validate() -> None:
    spec = load_spec(shared("oai-callback-example.oas30.yaml"))
    [event] = catalogue(spec).values()
    built = payload(event, None)
    check(event, built)
    assert built["timestamp"] == frozen().iso()


# -- runtime expressions ----------------------------------------------------------------------

# The example exchange of the OpenAPI specification's runtime expression table.
EXCHANGE = RequestContext(
    method="post",
    url="https://example.org/subscribe/myevent?queryUrl=https://clientdomain.com/stillrunning",
    path={"eventType": "myevent"},
    query=[("queryUrl", "https://clientdomain.com/stillrunning")],
    headers={"content-type": "application/json", "content-length": "188"},
    body={
        "failedUrl": "https://clientdomain.com/failed",
        "successUrls": [
            "https://clientdomain.com/fast",
            "https://clientdomain.com/medium",
            "https://clientdomain.com/slow",
        ],
        "id": 42,
        "a/b": {"c~d": "escaped"},
    },
    status=201,
    response_headers={"Location": "https://example.org/subscription/1"},
    response_body={"subscription": {"id": "sub_1"}},
)


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("$url", EXCHANGE.url),
        ("$method", "POST"),
        ("$request.path.eventType", "myevent"),
        ("$request.query.queryUrl", "https://clientdomain.com/stillrunning"),
        ("$request.header.content-Type", "application/json"),
        ("$request.body#/failedUrl", "https://clientdomain.com/failed"),
        ("$request.body#/successUrls/1", "https://clientdomain.com/medium"),
        ("$response.header.Location", "https://example.org/subscription/1"),
        ("$response.header.location", "https://example.org/subscription/1"),
        ("$response.body#/subscription/id", "sub_1"),
        ("$request.body#/a~1b/c~0d", "escaped"),
        ("$request.body#/id", 42),
        ("$statusCode", 201),
    ],
)
def test_runtime_expressions_per_the_spec_table(expression: str, value: Any) -> None:
    assert evaluate(expression, EXCHANGE) == value


@pytest.mark.parametrize(
    ("template", "url"),
    [
        ("{$request.query.queryUrl}", "https://clientdomain.com/stillrunning"),
        ("{$request.body#/failedUrl}/data", "https://clientdomain.com/failed/data"),
        (
            "http://notificationServer.com?transactionId={$request.body#/id}&email={$method}",
            "http://notificationServer.com?transactionId=42&email=POST",
        ),
        ("https://example.com/{$request.path.eventType}", "https://example.com/myevent"),
        ("$response.header.Location", "https://example.org/subscription/1"),
    ],
)
def test_callback_urls_fill_templates(template: str, url: str) -> None:
    assert callback_url(template, EXCHANGE) == url


@pytest.mark.parametrize(
    "template",
    [
        "{$request.query.QueryUrl}",  # query names are case-sensitive
        "{$request.body#/missing}/data",
        "{$request.body#/successUrls/9}",
        "{$request.header.x-callback}",
        "{$request.cookie.session}",
    ],
)
def test_a_missing_value_gives_no_callback_url(template: str) -> None:
    assert callback_url(template, EXCHANGE) is None


@pytest.mark.anyio
async def test_the_catalogue_is_built_in_steps_or_at_once_when_used_first() -> None:
    spec = load_spec(EXAMPLE)

    def summary(events: Mapping[str, EventType]) -> dict[str, Any]:
        return {n: (e.resource, e.verb, e.record_path, e.source) for n, e in events.items()}

    whole = summary(catalogue(spec))
    assert len(whole) > 3
    warmed = Catalogue(spec)
    await warmed.warm()
    assert summary(warmed) == whole
    used = Catalogue(spec)
    stepping = asyncio.ensure_future(used.warm())
    await asyncio.sleep(0)  # one step done, the rest when used
    assert summary(used) == whole
    await stepping
    assert summary(used) == whole


@pytest.mark.anyio
async def test_warming_starts_after_its_delay_and_a_cancelled_build_is_finished_by_use() -> None:
    spec = load_spec(EXAMPLE)
    whole = {n: e.record_path for n, e in catalogue(spec).items()}
    later = Catalogue(spec)
    warming = asyncio.ensure_future(later.warm(after=0.2))
    await asyncio.sleep(0.05)
    assert later._found == {}  # nothing built yet: start-up's first requests go first
    warming.cancel()
    await asyncio.wait([warming])
    assert {n: e.record_path for n, e in later.items()} == whole


def test_a_catalogue_error_is_raised_on_every_use() -> None:
    spec = load_spec(EXAMPLE)
    broken = Catalogue(spec, None, {"x": {"schema": {}, "when": "always"}})
    for _ in range(2):
        with pytest.raises(ConfigError, match=r"events\.x: unknown key"):
            len(broken)
