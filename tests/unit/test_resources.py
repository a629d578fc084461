from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from apitwin.spec.loader import load_spec
from apitwin.spec.model import Schema, Spec
from apitwin.spec.resources import (
    Pagination,
    Resource,
    ResourceMap,
    describe_resources,
    infer_resources,
    singular,
)

from conftest import REPO, SPECS, need_specs, shared_specs

EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"
INT = {"type": "integer"}
TEXT = {"type": "string"}


# -- building small specs ---------------------------------------------------------------------


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties}


def array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def page_of(name: str, **extra: Any) -> dict[str, Any]:
    """A `{data: [...], ...extra}` list envelope."""
    return obj(data=array(ref(name)), **extra)


def path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def query(name: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema or {"type": "string"}, **extra}


def op(
    op_id: str,
    answer: dict[str, Any] | None = None,
    *,
    status: str = "200",
    body: dict[str, Any] | None = None,
    media: str = "application/json",
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": "ok"}
    if answer is not None:
        response["content"] = {"application/json": {"schema": answer}}
    result: dict[str, Any] = {"operationId": op_id, "responses": {status: response}}
    if body is not None:
        result["requestBody"] = {"content": {media: {"schema": body}}}
    if params:
        result["parameters"] = params
    return result


def build(folder: Path, paths: dict[str, Any], schemas: dict[str, Any] | None = None) -> Spec:
    doc: dict[str, Any] = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}}
    doc["paths"] = paths
    if schemas:
        doc["components"] = {"schemas": schemas}
    path = folder / "openapi.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_spec(path)


def infer(
    folder: Path, paths: dict[str, Any], schemas: dict[str, Any] | None = None
) -> ResourceMap:
    return infer_resources(build(folder, paths, schemas))


def properties(schema: Schema | None) -> set[str]:
    """Property names of a (bundled) record schema, following a top-level `$ref`."""
    assert schema is not None
    bundled = schema.json
    target = bundled
    if "$ref" in bundled:
        target = bundled["$defs"][bundled["$ref"].rsplit("/", 1)[-1]]
    return set(target.get("properties", {}))


def things(folder: Path, record: dict[str, Any], param: dict[str, Any]) -> Resource:
    """The resource of `GET /things/{param}` answering ``record``."""
    paths = {
        f"/things/{{{param['name']}}}": {
            "parameters": [param],
            "get": op("getThing", obj(**record)),
        }
    }
    return infer(folder, paths).resources["things"]


# -- a small partner platform -----------------------------------------------------------------

SCHEMAS: dict[str, Any] = {
    "ProjectId": {"type": "string", "pattern": "^prj_[a-z0-9]+$"},
    "Project": obj(
        id={**ref("ProjectId"), "readOnly": True},
        title=TEXT,
        status={"type": "string", "enum": ["open", "closed"], "default": "open"},
        created_at={"type": "string", "format": "date-time", "readOnly": True},
        updated_at={"type": "string", "format": "date-time", "readOnly": True},
    ),
    "ProjectCreate": obj(title=TEXT),
    "Settings": obj(
        auto_shortlist={"type": "boolean"},
        notify_emails=array({"type": "string", "format": "email"}),
    ),
    "Expert": obj(id=TEXT, project_id=ref("ProjectId"), name=TEXT, status=TEXT),
    "Call": obj(id=TEXT, expert_id=TEXT),
}
PROJECT_ID = path_param("projectId", ref("ProjectId"))
EXPERT_ID = path_param("expertId")
PAGING = [
    query("cursor"),
    query("limit", {"type": "integer", "minimum": 1, "maximum": 50, "default": 25}),
]
PATHS: dict[str, Any] = {
    "/projects": {
        "get": op(
            "listProjects",
            page_of("Project", next_cursor=TEXT, has_more={"type": "boolean"}),
            params=[query("status"), *PAGING],
        ),
        "post": op("createProject", ref("Project"), status="201", body=ref("ProjectCreate")),
    },
    "/projects/{projectId}": {
        "parameters": [PROJECT_ID],
        "get": op("getProject", ref("Project")),
        "patch": op("updateProject", ref("Project"), body=ref("ProjectCreate")),
        "delete": op("deleteProject", status="204"),
    },
    "/projects/{projectId}/settings": {
        "parameters": [PROJECT_ID],
        "get": op("getSettings", ref("Settings")),
        "put": op("replaceSettings", ref("Settings"), body=ref("Settings")),
    },
    "/projects/{projectId}/experts": {
        "parameters": [PROJECT_ID],
        "get": op("listExperts", page_of("Expert", next_cursor=TEXT), params=PAGING),
        "post": op("submitExpert", ref("Expert"), status="201", body=ref("Expert")),
    },
    "/projects/{projectId}/experts/{expertId}": {
        "parameters": [PROJECT_ID, EXPERT_ID],
        "get": op("getExpert", ref("Expert")),
        "patch": op("updateExpert", ref("Expert"), body=ref("Expert")),
    },
    "/projects/{projectId}/experts/{expertId}/shortlist": {
        "parameters": [PROJECT_ID, EXPERT_ID],
        "post": op("shortlistExpert", ref("Expert")),
    },
    "/calls": {"get": op("listCalls", array(ref("Call")))},
    "/calls/{callId}": {"parameters": [path_param("callId")], "get": op("getCall", ref("Call"))},
    "/calls/{callId}/cancel": {
        "parameters": [path_param("callId")],
        "post": op("cancelCall", ref("Call")),
    },
    "/oauth/token": {
        "post": op(
            "createToken",
            obj(access_token=TEXT),
            body=obj(grant_type=TEXT),
            media="application/x-www-form-urlencoded",
        )
    },
}


@pytest.fixture(scope="module")
def platform_spec(tmp_path_factory: pytest.TempPathFactory) -> Spec:
    return build(tmp_path_factory.mktemp("platform"), PATHS, SCHEMAS)


@pytest.fixture(scope="module")
def platform(platform_spec: Spec) -> ResourceMap:
    return infer_resources(platform_spec)


def roles_of(rmap: ResourceMap) -> dict[str, tuple[str, str, str]]:
    return {op_id: (r.resource, r.role, r.action) for op_id, r in rmap.roles.items()}


def test_every_operation_gets_its_role(platform: ResourceMap) -> None:
    assert roles_of(platform) == {
        "listProjects": ("projects", "list", ""),
        "createProject": ("projects", "create", ""),
        "getProject": ("projects", "read", ""),
        "updateProject": ("projects", "update", ""),
        "deleteProject": ("projects", "delete", ""),
        "getSettings": ("settings", "read", ""),
        "replaceSettings": ("settings", "replace", ""),
        "listExperts": ("experts", "list", ""),
        "submitExpert": ("experts", "create", ""),
        "getExpert": ("experts", "read", ""),
        "updateExpert": ("experts", "update", ""),
        "shortlistExpert": ("experts", "action", "shortlist"),
        "listCalls": ("calls", "list", ""),
        "getCall": ("calls", "read", ""),
        "cancelCall": ("calls", "action", "cancel"),
    }
    assert list(platform.resources) == ["projects", "settings", "experts", "calls"]


def test_for_operation_finds_resource_and_role(platform: ResourceMap, platform_spec: Spec) -> None:
    cancel = platform_spec.operation("cancelCall")
    token = platform_spec.operation("createToken")
    assert cancel is not None and token is not None
    found = platform.for_operation(cancel)
    assert found is not None
    assert (found[0].name, found[1].role, found[1].action) == ("calls", "action", "cancel")
    assert platform.for_operation(token) is None


def test_top_level_collection(platform: ResourceMap) -> None:
    projects = platform.resources["projects"]
    assert (projects.name, projects.singular, projects.kind) == (
        "projects",
        "project",
        "collection",
    )
    assert (projects.collection_path, projects.item_path) == ("/projects", "/projects/{projectId}")
    assert (projects.parent, projects.parent_param, projects.parent_field) == (None, None, None)
    assert (projects.id_param, projects.id_field) == ("projectId", "id")
    assert projects.id_schema["pattern"] == "^prj_[a-z0-9]+$"
    assert "$defs" not in projects.id_schema
    assert properties(projects.schema) == {"id", "title", "status", "created_at", "updated_at"}
    assert properties(projects.create_schema) == {"title"}
    assert projects.server_fields == ("id", "status", "created_at", "updated_at")
    assert projects.timestamp_fields == {"created_at": "created", "updated_at": "updated"}
    assert projects.filters == {"status": "status"}
    assert dict(projects.operations) == {
        "list": "listProjects",
        "create": "createProject",
        "read": "getProject",
        "update": "updateProject",
        "delete": "deleteProject",
    }


def test_list_envelope_and_cursor_pagination(platform: ResourceMap) -> None:
    envelope = platform.resources["projects"].envelope
    assert (envelope.list_field, envelope.next_cursor_field, envelope.has_more_field) == (
        "data",
        "next_cursor",
        "has_more",
    )
    assert envelope.total_field is None
    assert envelope.schema is not None
    assert envelope.schema.uri.endswith("/get/responses/200/content/application~1json/schema")
    assert platform.resources["projects"].pagination == Pagination(
        "cursor", cursor_param="cursor", limit_param="limit", default_limit=25, max_limit=50
    )
    calls = platform.resources["calls"]
    assert calls.envelope.list_field is None  # a bare array
    assert calls.pagination == Pagination()


def test_nested_collection_is_scoped_to_its_parent(platform: ResourceMap) -> None:
    experts = platform.resources["experts"]
    assert experts.collection_path == "/projects/{projectId}/experts"
    assert experts.item_path == "/projects/{projectId}/experts/{expertId}"
    assert (experts.parent, experts.parent_param, experts.parent_field) == (
        "projects",
        "projectId",
        "project_id",
    )
    assert (experts.id_param, experts.id_field, experts.singular) == ("expertId", "id", "expert")
    assert experts.operations["action:shortlist"] == "shortlistExpert"
    assert experts.envelope.next_cursor_field == "next_cursor"
    assert experts.envelope.has_more_field is None


def test_singleton_under_an_item(platform: ResourceMap) -> None:
    settings = platform.resources["settings"]
    assert settings.kind == "singleton"
    assert (settings.collection_path, settings.item_path) == (
        None,
        "/projects/{projectId}/settings",
    )
    assert (settings.parent, settings.parent_param) == ("projects", "projectId")
    assert dict(settings.operations) == {"read": "getSettings", "replace": "replaceSettings"}
    assert properties(settings.schema) == {"auto_shortlist", "notify_emails"}


def test_actions_and_form_endpoints(platform: ResourceMap) -> None:
    assert platform.resources["calls"].operations["action:cancel"] == "cancelCall"
    assert "createToken" not in platform.roles  # form-encoded POST /oauth/token: no resource
    assert "oauth" not in platform.resources and "token" not in platform.resources


def test_describe_resources(platform: ResourceMap) -> None:
    lines = describe_resources(platform)
    assert len(lines) == len(platform.resources)
    assert lines[2] == (
        "experts (collection under projects via projectId (project_id); id expertId -> id: "
        "string; list: data[] cursor 'cursor' limit 'limit'; ops: list, create, read, update, "
        "action:shortlist)"
    )
    assert lines[1] == "settings (singleton under projects via projectId; ops: read, replace)"


# -- collections without create, top-level paths ----------------------------------------------


def test_read_only_collection_needs_no_create_operation(tmp_path: Path) -> None:
    report = obj(id=INT, title={})
    rmap = infer(
        tmp_path,
        {
            "/reports": {"get": op("listReports", array(ref("Report")))},
            "/reports/{reportId}": {
                "parameters": [path_param("reportId", {"type": "integer"})],
                "get": op("getReport", ref("Report")),
            },
        },
        {"Report": report},
    )
    reports = rmap.resources["reports"]
    assert dict(reports.operations) == {"list": "listReports", "read": "getReport"}
    assert reports.create_schema is None
    assert (reports.id_field, reports.id_schema) == ("id", {"type": "integer"})


def test_top_level_paths_without_items(tmp_path: Path) -> None:
    event = obj(id=TEXT)
    user = obj(login=TEXT)
    results = obj(tracks={"type": "object"}, artists={"type": "object"})
    rmap = infer(
        tmp_path,
        {
            "/me": {"get": op("getMe", user), "patch": op("updateMe", user, body=user)},
            "/events": {"get": op("listEvents", array(event))},
            "/feed": {"get": op("getFeed", obj(entries=array(event), next=TEXT))},
            "/search": {"get": op("search", results, params=[query("q", required=True)])},
            "/health": {"get": op("health", TEXT)},
            "/tickets": {"post": op("buyTicket", event, status="201", body=event)},
            "/search-all": {"post": op("searchAll", array(event), body=event)},
        },
    )
    assert roles_of(rmap) == {
        "getMe": ("me", "read", ""),
        "updateMe": ("me", "update", ""),
        "listEvents": ("events", "list", ""),
        "getFeed": ("feed", "list", ""),
        "buyTicket": ("tickets", "create", ""),
    }
    assert rmap.resources["me"].kind == "singleton"
    assert rmap.resources["feed"].envelope.list_field == "entries"
    assert rmap.resources["tickets"].item_path is None


def test_record_schema_comes_from_create_then_list_then_body(tmp_path: Path) -> None:
    def record(*names: str) -> dict[str, Any]:
        return obj(**dict.fromkeys(names, TEXT))

    rmap = infer(
        tmp_path,
        {
            "/a": {"post": op("createA", record("id", "made"), status="201", body=record("x"))},
            "/b": {"get": op("listB", obj(items=array(record("id", "listed"))))},
            "/c": {"post": op("createC", body=record("id", "sent"))},
        },
    )
    assert properties(rmap.resources["a"].schema) == {"id", "made"}
    assert properties(rmap.resources["b"].schema) == {"id", "listed"}
    assert properties(rmap.resources["c"].schema) == {"id", "sent"}


def test_other_lists_under_a_collection(tmp_path: Path) -> None:
    pet_id = path_param("petId", INT)
    rmap = infer(
        tmp_path,
        {
            "/pets": {"post": op("addPet", ref("Pet"), body=ref("Pet"))},
            "/pets/{petId}": {"parameters": [pet_id], "get": op("getPet", ref("Pet"))},
            "/pets/findByStatus": {
                "get": op("findByStatus", array(ref("Pet")), params=[query("status")])
            },
            "/pets/findByTags": {"get": op("findByTags", array(ref("Pet")))},
            "/pets/counts": {"get": op("countPets", array(obj(status=TEXT, count=INT)))},
        },
        {"Pet": obj(id=INT, status=TEXT)},
    )
    pets = rmap.resources["pets"]
    # The first list of the same records serves as the list; a second one is left alone.
    assert (pets.operations["list"], pets.filters) == ("findByStatus", {"status": "status"})
    assert "findByTags" not in rmap.roles
    # Other records are a read-only collection of their own.
    assert rmap.roles["countPets"].resource == "counts"


def test_items_answering_plain_values_are_not_resources(tmp_path: Path) -> None:
    mark = {"type": "string", "enum": [".", "X", "O"]}
    cell = {"parameters": [path_param("row", INT), path_param("column", INT)]}
    rmap = infer(
        tmp_path,
        {
            "/board": {"get": op("getBoard", obj(winner=mark, board=array(array(mark))))},
            "/board/{row}/{column}": {**cell, "get": op("getSquare", mark)},
        },
    )
    assert roles_of(rmap) == {"getBoard": ("board", "read", "")}
    assert rmap.resources["board"].kind == "singleton"


# -- ids, server-set fields, filters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "param", "expected"),
    [
        ({"id": INT, "name": TEXT}, path_param("petId", INT), "id"),
        ({"petId": INT, "name": TEXT}, path_param("petId", INT), "petId"),
        ({"thingId": TEXT, "title": TEXT}, path_param("x"), "thingId"),
        ({"thing_id": TEXT, "title": TEXT}, path_param("x"), "thing_id"),
        ({"uuid": TEXT, "title": TEXT}, path_param("x"), "uuid"),
        ({"key": TEXT, "title": TEXT}, path_param("x"), "key"),
        ({"name": TEXT, "size": INT}, path_param("name"), "name"),
        ({"name": TEXT, "size": INT}, path_param("thingId"), "id"),
        ({"id": INT, "username": TEXT}, path_param("username"), "username"),
        ({"id": INT, "number": INT}, path_param("thing_number", INT), "number"),
        ({"id": INT, "name": TEXT}, path_param("thing"), "name"),  # `{thing}` is no integer
        ({"id": INT, "name": TEXT}, path_param("thingId"), "id"),  # `{thingId}` is, as declared
    ],
)
def test_id_field(
    tmp_path: Path, record: dict[str, Any], param: dict[str, Any], expected: str
) -> None:
    assert things(tmp_path, record, param).id_field == expected


def test_id_schema_is_the_resolved_property_else_the_path_parameter(tmp_path: Path) -> None:
    paths = {
        "/things/{thingId}": {
            "parameters": [path_param("thingId")],
            "get": op("getThing", obj(id=ref("ThingId"))),
        },
        "/gadgets/{gadgetId}": {
            "parameters": [path_param("gadgetId", {"type": "string", "format": "uuid"})],
            "get": op("getGadget", obj(title=TEXT)),
        },
    }
    rmap = infer(tmp_path, paths, {"ThingId": {"type": "string", "pattern": "^t_[0-9]+$"}})
    assert rmap.resources["things"].id_schema == {"type": "string", "pattern": "^t_[0-9]+$"}
    assert rmap.resources["gadgets"].id_schema == {"type": "string", "format": "uuid"}
    assert rmap.resources["gadgets"].server_fields == ()  # the record has no id field


def test_server_set_fields_and_timestamps(tmp_path: Path) -> None:
    record = {
        "id": TEXT,
        "title": TEXT,
        "secret": {"type": "string", "readOnly": True},
        "state": {"type": "string", "default": "new"},
        "createdAt": {"type": "string", "format": "date-time"},
        "lastModified": {"type": ["string", "null"], "format": "date"},
        "updated": INT,  # epoch seconds
        "created": TEXT,  # no format: a label, not a timestamp
        "creation_date": {"type": "string", "format": "date"},
    }
    things_ = things(tmp_path, record, path_param("thingId"))
    assert things_.timestamp_fields == {
        "createdAt": "created",
        "lastModified": "updated",
        "updated": "updated",
        "creation_date": "created",
    }
    assert things_.server_fields == (
        "id",
        "secret",
        "state",
        "createdAt",
        "lastModified",
        "updated",
        "creation_date",
    )


def test_filters_match_record_properties(tmp_path: Path) -> None:
    task = obj(id=TEXT, status=TEXT, projectId=TEXT, owner={"type": "object"}, labels=array(TEXT))
    params = [query(n) for n in ("status", "project_id", "owner", "labels", "q", "cursor")]
    rmap = infer(
        tmp_path,
        {"/tasks": {"get": op("listTasks", array(task), params=params)}},
    )
    assert rmap.resources["tasks"].filters == {"status": "status", "project_id": "projectId"}


# -- envelopes and pagination -----------------------------------------------------------------

WIDGETS = array(obj(id=TEXT))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (WIDGETS, (None, None, None, None)),
        (
            {"data": WIDGETS, "next_cursor": TEXT, "has_more": {"type": "boolean"}},
            ("data", "next_cursor", "has_more", None),
        ),
        ({"items": WIDGETS, "next_cursor": TEXT}, ("items", "next_cursor", None, None)),
        (
            {"results": WIDGETS, "next": TEXT, "total_count": INT},
            ("results", "next", None, "total_count"),
        ),
        ({"widgets": WIDGETS, "nextPageToken": TEXT}, ("widgets", "nextPageToken", None, None)),
        (
            {"entries": WIDGETS, "hasMore": {"type": "boolean"}, "totalCount": INT},
            ("entries", None, "hasMore", "totalCount"),
        ),
        ({"rows": WIDGETS, "count": INT}, ("rows", None, None, "count")),
    ],
    ids=["bare", "data", "items", "results", "named", "entries", "only-array"],
)
def test_list_envelopes(
    tmp_path: Path, answer: dict[str, Any], expected: tuple[str | None, ...]
) -> None:
    if "type" not in answer:
        answer = obj(**answer)
    rmap = infer(tmp_path, {"/widgets": {"get": op("listWidgets", answer)}})
    envelope = rmap.resources["widgets"].envelope
    found = (
        envelope.list_field,
        envelope.next_cursor_field,
        envelope.has_more_field,
        envelope.total_field,
    )
    assert found == expected
    assert properties(rmap.resources["widgets"].schema) == {"id"}


LIMIT = {"type": "integer", "maximum": 10}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (["cursor", "limit"], Pagination("cursor", cursor_param="cursor", limit_param="limit")),
        (["starting_after", "limit"], Pagination("cursor", "starting_after", "limit")),
        (["pageToken", "pageSize"], Pagination("cursor", "pageToken", "pageSize")),
        (["page", "per_page"], Pagination("page", limit_param="per_page", page_param="page")),
        (["offset", "limit"], Pagination("offset", limit_param="limit", offset_param="offset")),
        (["skip", "limit"], Pagination("offset", limit_param="limit", offset_param="skip")),
        (["limit"], Pagination("none", limit_param="limit")),
        ([], Pagination()),
    ],
)
def test_pagination_styles(tmp_path: Path, params: list[str], expected: Pagination) -> None:
    listing = op("listWidgets", WIDGETS, params=[query(p, INT) for p in params])
    rmap = infer(tmp_path, {"/widgets": {"get": listing}})
    assert rmap.resources["widgets"].pagination == expected


def test_limits_come_from_the_limit_parameter(tmp_path: Path) -> None:
    listing = op("listWidgets", WIDGETS, params=[query("per_page", LIMIT)])
    pagination = infer(tmp_path, {"/widgets": {"get": listing}}).resources["widgets"].pagination
    assert (pagination.default_limit, pagination.max_limit) == (10, 10)


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plural", "one"),
    [
        ("experts", "expert"),
        ("categories", "category"),
        ("addresses", "address"),
        ("statuses", "status"),
        ("people", "person"),
        ("boxes", "box"),
        ("branches", "branch"),
        ("caches", "cache"),
        ("movies", "movie"),
        ("usage-records", "usage-record"),
        ("usageRecords", "usageRecord"),
        ("status", "status"),
        ("pet", "pet"),
        ("data", "data"),
        ("series", "series"),
    ],
)
def test_singular(plural: str, one: str) -> None:
    assert singular(plural) == one


def test_name_clashes_are_qualified_by_their_parent(tmp_path: Path) -> None:
    repo = obj(id=INT, name=TEXT)
    repos = array(repo)
    rmap = infer(
        tmp_path,
        {
            "/repos/{owner}/{repo}": {
                "parameters": [path_param("owner"), path_param("repo")],
                "get": op("getRepo", repo),
            },
            "/users/{username}": {
                "parameters": [path_param("username")],
                "get": op("getUser", {"type": "object"}),
            },
            "/users/{username}/repos": {
                "parameters": [path_param("username")],
                "get": op("listUserRepos", repos),
            },
            "/orgs/{org}/repos": {
                "parameters": [path_param("org")],
                "get": op("listOrgRepos", repos),
                "post": op("createOrgRepo", repo, status="201", body=repo),
            },
        },
    )
    # `orgs` has no operations of its own; it stays as the parent of `orgs.repos`.
    assert list(rmap.resources) == ["repos", "users", "users.repos", "orgs", "orgs.repos"]
    repos_ = rmap.resources["repos"]
    assert (repos_.collection_path, repos_.parent_param, repos_.parent) == (
        "/repos/{owner}",
        "owner",
        None,
    )
    assert repos_.id_field == "name"  # `{repo}` names it; the integer `id` cannot be
    assert (rmap.resources["users.repos"].parent, rmap.resources["users.repos"].singular) == (
        "users",
        "repo",
    )
    assert rmap.roles["createOrgRepo"].resource == "orgs.repos"


# -- overrides --------------------------------------------------------------------------------


def test_override_renames_a_resource_everywhere(platform_spec: Spec) -> None:
    rmap = infer_resources(platform_spec, {"projects": {"name": "studies"}})
    assert "projects" not in rmap.resources
    assert rmap.resources["studies"].name == "studies"
    assert rmap.resources["experts"].parent == "studies"
    assert rmap.roles["getProject"].resource == "studies"


def test_override_id_field_and_format(platform_spec: Spec) -> None:
    rmap = infer_resources(
        platform_spec,
        {
            "experts": {"id_field": "name"},
            "calls": {"id_format": "^call_[0-9]+$"},
            "projects": {"id_format": "uuid"},
        },
    )
    experts = rmap.resources["experts"]
    assert (experts.id_field, experts.id_schema) == ("name", {"type": "string"})
    assert experts.server_fields[0] == "name"
    assert rmap.resources["calls"].id_schema == {"type": "string", "pattern": "^call_[0-9]+$"}
    assert rmap.resources["projects"].id_schema == {"type": "string", "format": "uuid"}


def test_override_envelope_pagination_parent_field_and_filters(platform_spec: Spec) -> None:
    rmap = infer_resources(
        platform_spec,
        {
            "experts": {
                "envelope": {"list_field": "results", "total_field": "total"},
                "pagination": {"style": "offset", "offset_param": "skip", "max_limit": 500},
                "parent_field": "project",
                "filters": {"q": "name"},
            },
            "projects": {"filters": {"status": None}},
        },
    )
    experts = rmap.resources["experts"]
    assert (experts.envelope.list_field, experts.envelope.total_field) == ("results", "total")
    assert experts.envelope.next_cursor_field == "next_cursor"  # kept
    assert (experts.pagination.style, experts.pagination.offset_param) == ("offset", "skip")
    assert (experts.pagination.limit_param, experts.pagination.max_limit) == ("limit", 500)
    assert experts.parent_field == "project"
    assert experts.filters == {"q": "name"}
    assert rmap.resources["projects"].filters == {}


def test_operations_can_be_reassigned_added_and_unmapped(platform_spec: Spec) -> None:
    moves = {
        "cancelCall": {"role": "none"},
        "getSettings": {"resource": "projects", "role": "action", "action": "settings"},
        "createToken": {"resource": "calls", "role": "create"},
    }
    rmap = infer_resources(platform_spec, None, moves)
    assert "cancelCall" not in rmap.roles
    assert "action:cancel" not in rmap.resources["calls"].operations
    assert roles_of(rmap)["getSettings"] == ("projects", "action", "settings")
    assert rmap.resources["settings"].operations == {"replace": "replaceSettings"}
    assert rmap.resources["calls"].operations["create"] == "createToken"


def test_operations_may_sit_inside_the_resources_mapping(platform_spec: Spec) -> None:
    overrides = {"projects": {"name": "studies"}, "operations": {"getCall": {"role": "none"}}}
    rmap = infer_resources(platform_spec, overrides)
    assert "getCall" not in rmap.roles
    # Both mappings count; the new read displaces the inferred one.
    moved = infer_resources(
        platform_spec, overrides, {"getCall": {"resource": "studies", "role": "read"}}
    )
    assert roles_of(moved)["getCall"] == ("studies", "read", "")
    assert "getProject" not in moved.roles


@pytest.mark.parametrize(
    ("overrides", "operations", "message"),
    [
        ({"experts": {"idfield": "x"}}, None, "resources.experts: unknown key 'idfield'"),
        ({"experts": {"envelope": {"list": "x"}}}, None, "unknown key 'list'"),
        ({"experts": {"pagination": {"style": "pages"}}}, None, "'pages' is not a style"),
        ({"experts": {"id_format": "(unclosed"}}, None, "nor a valid pattern"),
        ({"experts": {"name": "projects"}}, None, "used by more than one resource"),
        ({"experts": "candidates"}, None, "resources.experts must be a mapping"),
        ({"nobody": {"name": "x"}}, None, "no inferred resource is named 'nobody'"),
        (None, {"getCall": {"role": "read", "resrc": "x"}}, "unknown key 'resrc'"),
        (None, {"missing": {"role": "none"}}, "operations.missing: the spec has no operation"),
        (None, {"getCall": {"resource": "calls"}}, "operations.getCall.role is required"),
        (None, {"getCall": {"resource": "calls", "role": "fetch"}}, "'fetch' is not a role"),
        (None, {"getCall": {"resource": "calls", "role": "action"}}, "getCall.action must be"),
        (None, {"getCall": {"resource": "nobody", "role": "read"}}, "no resource is named"),
    ],
)
def test_bad_overrides_are_refused_with_a_reason(
    platform_spec: Spec,
    overrides: dict[str, Any] | None,
    operations: dict[str, Any] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        infer_resources(platform_spec, overrides, operations)


def test_unknown_key_error_lists_the_allowed_keys(platform_spec: Spec) -> None:
    with pytest.raises(ValueError, match="allowed: name, id_field, id_format, envelope"):
        infer_resources(platform_spec, {"calls": {"ids": "x"}})


# -- the shared corpus ------------------------------------------------------------------------


def corpus(name: str) -> ResourceMap:
    need_specs()
    return infer_resources(load_spec(SPECS / name, spec_root=SPECS))


@pytest.mark.parametrize("path", shared_specs(), ids=lambda p: p.name)
def test_every_shared_spec_infers_consistent_maps(path: Path) -> None:
    spec = load_spec(path, spec_root=SPECS)
    rmap = infer_resources(spec)
    assert len(describe_resources(rmap)) == len(rmap.resources)
    op_ids = {op.operation_id for op in spec.operations}
    for op_id, role in rmap.roles.items():
        assert op_id in op_ids
        key = f"action:{role.action}" if role.role == "action" else role.role
        assert rmap.resources[role.resource].operations[key] == op_id
    for resource in rmap.resources.values():
        assert resource.parent is None or resource.parent in rmap.resources


def test_oai_petstore() -> None:
    rmap = corpus("oai-petstore.oas30.yaml")
    assert roles_of(rmap) == {
        "listPets": ("pets", "list", ""),
        "createPets": ("pets", "create", ""),
        "showPetById": ("pets", "read", ""),
    }
    pets = rmap.resources["pets"]
    assert (pets.id_field, pets.id_param, pets.id_schema["type"]) == ("id", "petId", "integer")
    assert pets.envelope.list_field is None  # a bare array
    assert pets.pagination == Pagination("none", limit_param="limit", max_limit=100)


def test_oai_petstore_expanded() -> None:
    pets = corpus("oai-petstore-expanded.oas30.yaml").resources["pets"]
    assert dict(pets.operations) == {
        "list": "findPets",
        "create": "addPet",
        "read": "find pet by id",
        "delete": "deletePet",
    }
    assert (pets.id_field, pets.id_schema["type"]) == ("id", "integer")
    assert properties(pets.create_schema) == {"name", "tag"}


def test_swagger_petstore() -> None:
    rmap = corpus("swagger-petstore.oas30.yaml")
    assert list(rmap.resources) == ["pet", "inventory", "order", "user"]
    pet = rmap.resources["pet"]
    # No `GET /pet`: findByStatus lists the same Pet records, so it serves as the list.
    assert dict(pet.operations) == {
        "list": "findPetsByStatus",
        "create": "addPet",
        "read": "getPetById",
        "update": "updatePetWithForm",  # POST on the item, no PATCH
        "replace": "updatePet",  # PUT /pet: the pet in the body, id included, names the record
        "delete": "deletePet",
        "action:uploadImage": "uploadFile",
    }
    assert pet.filters == {"status": "status"}
    assert (pet.collection_path, pet.item_path) == ("/pet", "/pet/{petId}")
    # The second view (by tags) and the session operations get no role.
    for op_id in ("findPetsByTags", "loginUser", "logoutUser"):
        assert op_id not in rmap.roles
    assert rmap.resources["order"].collection_path == "/store/order"
    assert rmap.resources["user"].id_field == "username"
    assert rmap.resources["inventory"].kind == "singleton"


def test_redocly_museum() -> None:
    rmap = corpus("redocly-museum.oas31.yaml")
    events = rmap.resources["special-events"]
    assert set(events.operations) == {"list", "create", "read", "update", "delete"}
    assert (events.id_field, events.id_schema["format"]) == ("eventId", "uuid")
    assert events.pagination == Pagination(
        "page", limit_param="limit", page_param="page", default_limit=10, max_limit=30
    )
    assert dict(rmap.resources["museum-hours"].operations) == {"list": "getMuseumHours"}
    tickets = rmap.resources["tickets"]
    assert (dict(tickets.operations), tickets.id_field) == (
        {"create": "buyMuseumTickets"},
        "ticketId",
    )
    assert "getTicketCode" not in rmap.roles  # a PNG, not a record


def test_spotify() -> None:
    rmap = corpus("spotify-web-api.oas30.yml")
    albums = rmap.resources["albums"]
    assert (albums.operations["read"], albums.item_path) == ("get-an-album", "/albums/{id}")
    tracks = rmap.resources["albums.tracks"]
    assert (tracks.collection_path, tracks.parent, tracks.parent_param) == (
        "/albums/{id}/tracks",
        "albums",
        "id",
    )
    assert tracks.operations == {"list": "get-an-albums-tracks"}
    assert (tracks.envelope.list_field, tracks.envelope.total_field) == ("items", "total")
    assert tracks.pagination == Pagination(
        "offset", limit_param="limit", offset_param="offset", max_limit=50
    )
    assert rmap.resources["me"].kind == "singleton"
    assert "search" not in rmap.roles
    assert rmap.resources["users.playlists"].operations["create"] == "create-playlist-for-user"


def test_xero_app_store() -> None:
    rmap = corpus("xero-app-store.oas30.yaml")
    assert rmap.resources["subscriptions"].operations == {"read": "getSubscription"}
    usage = rmap.resources["items.usage-records"]
    assert dict(usage.operations) == {"create": "postUsageRecords", "replace": "putUsageRecords"}
    assert (usage.parent, usage.parent_param, usage.parent_field, usage.id_field) == (
        "items",
        "subscriptionItemId",
        "subscriptionItemId",
        "usageRecordId",
    )
    listed = rmap.resources["subscriptions.usage-records"]
    assert (listed.operations["list"], listed.envelope.list_field) == (
        "getUsageRecords",
        "usageRecords",
    )
    assert (listed.parent, listed.parent_field) == ("subscriptions", "subscriptionId")
    assert rmap.resources["items"].operations == {}  # kept: the parent of usage records


# -- the bundled example ----------------------------------------------------------------------


def test_expert_network_example() -> None:
    if not EXAMPLE.is_file():
        pytest.skip(f"the example spec is not at {EXAMPLE}")
    rmap = infer_resources(load_spec(EXAMPLE))
    projects = rmap.resources["projects"]
    assert {"list", "create", "read", "update"} <= set(projects.operations)
    experts = rmap.resources["experts"]
    assert (experts.parent, experts.parent_param, experts.parent_field) == (
        "projects",
        "projectId",
        "project_id",
    )
    assert {"action:shortlist", "action:reject"} <= set(experts.operations)
    calls = rmap.resources["calls"]
    actions = {"schedule", "reschedule", "cancel", "complete"}
    assert {f"action:{name}" for name in actions} <= set(calls.operations)
    settings = rmap.resources["settings"]
    assert (settings.kind, settings.parent, settings.item_path) == (
        "singleton",
        "projects",
        "/projects/{projectId}/settings",
    )
    for resource in (projects, experts, calls):
        assert resource.pagination.style == "cursor"
        assert (resource.pagination.cursor_param, resource.pagination.limit_param) == (
            "cursor",
            "limit",
        )
        envelope = resource.envelope
        assert (envelope.list_field, envelope.next_cursor_field, envelope.has_more_field) == (
            "data",
            "next_cursor",
            "has_more",
        )
    assert "createAccessToken" not in rmap.roles
    assert not {"oauth", "token", "oauth.token"} & set(rmap.resources)
