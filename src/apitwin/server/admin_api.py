"""Admin REST API: the control service over JSON, for scripts and CI. A thin adapter only.

Routes live under ``/_apitwin/api``; the OpenAPI document describing them is served at
``/_apitwin/openapi.json`` and generated from the same route table, so it cannot drift.
"""

from __future__ import annotations

import functools
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from apitwin import __version__
from apitwin.errors import ApitwinError, InvalidInputError
from apitwin.faults import INBOUND, OUTBOUND
from apitwin.service.control import DELIVERY_STATUSES, ControlService
from apitwin.tenants import CLIENT_ID

Handler = Callable[[ControlService, Request, dict[str, Any]], Awaitable[tuple[int, Any]]]

# Larger bodies are refused with 413 (the server passes server.limits.request_body_bytes).
DEFAULT_MAX_BODY = 10 * 1024 * 1024

_ID = {"type": "string", "description": "connection handle '<twin>:<client id>'"}
_OBJECT = {"type": "object"}
_NULLABLE_OBJECT = {"type": ["object", "null"]}
_TEXT = {"type": "string"}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
    },
}


@dataclass(frozen=True, slots=True)
class QueryParam:
    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: _TEXT)


def _q(description: str, **schema: Any) -> QueryParam:
    return QueryParam(description, schema or _TEXT)


_LIMIT = _q("page size (at most 100 are returned)", type="integer", minimum=1)
_CURSOR = _q("next_cursor of the previous page")
_PARENT = _q("'<resource>/<id>' for nested resources", type="string", pattern="^[^/]+/.+$")
_JOURNAL_STATUS = _q(
    "a status such as 201, or a class such as 4xx",
    type="string",
    pattern="^([1-5][0-9][0-9]|[1-5][xX][xX])$",
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Handler
    body: dict[str, Any] | None = None
    query: dict[str, QueryParam] = field(default_factory=dict)
    status: tuple[int, ...] = (200,)  # what success answers with

    @property
    def body_required(self) -> bool:
        return bool(self.body and self.body.get("required"))


def _json(status: int, value: Any, headers: Mapping[str, str] | None = None) -> Response:
    media = "application/problem+json" if status >= 400 else "application/json"
    return Response(orjson.dumps(value), status_code=status, media_type=media, headers=headers)


def problem(
    status: int,
    detail: str,
    kind: str = "error",
    field_name: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:apitwin:{kind}",
        "title": kind.replace("_", " "),
        "status": status,
        "detail": detail,
    }
    if field_name:
        body["field"] = field_name
    return _json(status, body, headers)


class BodyTooLargeError(ApitwinError):
    kind = "payload_too_large"
    status = 413


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"the request body exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _body(request: Request, endpoint: Endpoint, limit: int) -> dict[str, Any]:
    raw = await _read(request, limit)
    if not raw.strip():
        if endpoint.body_required:
            required = ", ".join(endpoint.body.get("required", ())) if endpoint.body else ""
            raise InvalidInputError(f"a JSON object body is required (with {required})")
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError("the body must be a JSON object")
    if endpoint.body is not None:
        _check(_validator(endpoint.method, endpoint.path, "body"), value, "body")
    return value


def _check(validator: Any, value: Any, where: str) -> None:
    """Raise the first violation of the documented schema, naming the field."""
    for error in validator.iter_errors(value):
        path = [str(part) for part in error.instance_path]
        name = path[0] if path else None
        kind = getattr(error.kind, "name", "")
        if kind == "additionalProperties":
            unexpected = sorted(map(str, error.kind.unexpected))
            name = ".".join([*path, unexpected[0]])
            raise InvalidInputError(
                f"{where}: unknown field(s) {', '.join(unexpected)}", field=name
            )
        shown = ".".join(path) if path else where
        raise InvalidInputError(f"{where}: {shown}: {error.message}", field=name)


@functools.cache
def _validator(method: str, path: str, part: str) -> Any:
    endpoint = next(e for e in ENDPOINTS if e.method == method and e.path == path)
    schema = endpoint.body if part == "body" else _query_schema(endpoint)
    return jsonschema_rs.Draft202012Validator(schema or _OBJECT)


def _query_schema(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: dict(p.schema) for name, p in endpoint.query.items()},
    }


_INTEGER = re.compile(r"^-?[0-9]{1,18}$")
_NUMBER = re.compile(r"^-?[0-9]{1,40}(\.[0-9]{1,40})?([eE][-+]?[0-9]{1,3})?$")


def _query(request: Request, endpoint: Endpoint) -> dict[str, Any]:
    """The documented query parameters, typed and checked; an empty value counts as absent."""
    found: dict[str, Any] = {}
    for name, param in endpoint.query.items():
        raw = request.query_params.get(name)
        if raw is None or (raw == "" and dict(param.schema) == _TEXT):
            continue
        kind = param.schema.get("type")
        if kind == "integer" and _INTEGER.match(raw):
            found[name] = int(raw)
        elif kind == "number" and _NUMBER.match(raw) and math.isfinite(float(raw)):
            found[name] = float(raw)
        else:
            found[name] = raw
    _check(_validator(endpoint.method, endpoint.path, "query"), found, "query")
    return found


def _parent(request: Request) -> dict[str, str] | None:
    raw = request.query_params.get("parent")
    if not raw:
        return None
    resource, sep, parent_id = raw.partition("/")
    if not sep or not parent_id:
        raise InvalidInputError(
            "parent must be '<resource>/<id>', e.g. projects/prj_123", field="parent"
        )
    return {resource: parent_id}


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit") or "20"
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInputError("limit must be a positive integer", field="limit")
    return int(raw)


def _text(request: Request, name: str) -> str | None:
    return request.query_params.get(name) or None


_RESERVED = {"parent", "cursor", "limit", "twin", "resource"}


async def list_connections(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"connections": await c.list_connections(_text(r, "twin"))}


async def connect(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    if not isinstance(b.get("client_id"), str):
        raise InvalidInputError("client_id (string) is required", field="client_id")
    view = await c.connect(
        b["client_id"],
        twin=b.get("twin"),
        webhook_url=b.get("webhook_url"),
        label=str(b.get("label") or ""),
    )
    return (201 if view.get("created") else 200), view


async def reset(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.reset_connection(r.path_params["cid"])


async def remove_connection(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.remove_connection(r.path_params["cid"])


async def reset_twin(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.reset_twin(r.path_params["twin"])


async def describe(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.describe_api(r.path_params["cid"], _text(r, "resource"))


async def list_records(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    filters = {k: v for k, v in r.query_params.items() if k not in _RESERVED}
    return 200, await c.list_records(
        r.path_params["cid"],
        r.path_params["resource"],
        parent=_parent(r),
        filters=filters,
        cursor=_text(r, "cursor"),
        limit=_limit(r),
    )


async def create_record(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    data = b.get("data", {})
    if not isinstance(data, dict):
        raise InvalidInputError("data must be an object", field="data")
    return 201, await c.create_record(
        r.path_params["cid"], r.path_params["resource"], data, parent=b.get("parent")
    )


async def generate(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    count = b.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool):
        raise InvalidInputError("count must be an integer", field="count")
    return 201, await c.generate_records(
        r.path_params["cid"], r.path_params["resource"], count, parent=b.get("parent")
    )


async def get_record(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    p = r.path_params
    return 200, await c.get_record(p["cid"], p["resource"], p["id"])


async def update_record(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    p = r.path_params
    changes = b.get("changes", {})
    if not isinstance(changes, dict):
        raise InvalidInputError("changes must be an object", field="changes")
    return 200, await c.update_record(p["cid"], p["resource"], p["id"], changes)


async def delete_record(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    p = r.path_params
    return 200, await c.delete_record(p["cid"], p["resource"], p["id"])


async def advance_clock(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    seconds = b.get("seconds")
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
        raise InvalidInputError("seconds (number) is required", field="seconds")
    return 200, await c.advance_clock(r.path_params["cid"], float(seconds))


async def trigger_event(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    if not isinstance(b.get("event"), str):
        raise InvalidInputError("event (string) is required", field="event")
    return 201, await c.trigger_event(
        r.path_params["cid"], b["event"], record=b.get("record"), overrides=b.get("overrides")
    )


async def list_deliveries(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_deliveries(
        r.path_params["cid"],
        status=_text(r, "status"),
        event=_text(r, "event"),
        limit=_limit(r),
        cursor=_text(r, "cursor"),
    )


async def get_delivery(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.get_delivery(r.path_params["cid"], r.path_params["id"])


async def redeliver(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.redeliver(r.path_params["cid"], r.path_params["id"])


async def redeliver_failed(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    since = b.get("since_seconds", 86400)
    if not isinstance(since, (int, float)) or isinstance(since, bool) or since <= 0:
        raise InvalidInputError("since_seconds must be a positive number", field="since_seconds")
    return 200, await c.redeliver_failed(r.path_params["cid"], float(since))


async def add_endpoint(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    if not isinstance(b.get("url"), str):
        raise InvalidInputError("url (string) is required", field="url")
    return 201, await c.add_endpoint(
        r.path_params["cid"], b["url"], events=b.get("events"), scheme=b.get("scheme")
    )


async def list_endpoints(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_endpoints(r.path_params["cid"])


async def rotate_secret(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    grace = b.get("grace_seconds", 86400)
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or grace < 0:
        raise InvalidInputError("grace_seconds must be a number >= 0", field="grace_seconds")
    return 200, await c.rotate_secret(r.path_params["cid"], r.path_params["id"], float(grace))


async def remove_endpoint(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.remove_endpoint(r.path_params["cid"], r.path_params["id"])


async def run_action(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    inputs = b.get("inputs", {})
    if not isinstance(inputs, dict):
        raise InvalidInputError("inputs must be an object", field="inputs")
    return 200, await c.run_action(r.path_params["cid"], r.path_params["name"], inputs)


async def list_actions(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_actions(r.path_params["cid"])


async def record_action(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    p = r.path_params
    body = b.get("body")
    return 200, await c.record_action(
        p["cid"],
        p["resource"],
        p["id"],
        p["action"],
        body if isinstance(body, dict) else None,
        parent=_parent(r),
    )


async def add_fault(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 201, await c.add_fault(r.path_params["cid"], b)


async def list_faults(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_faults(r.path_params["cid"])


async def clear_faults(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.clear_faults(r.path_params["cid"], _text(r, "rule_id"))


def _journal_query(r: Request) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in ("operation", "method", "text"):
        if _text(r, name):
            found[name] = r.query_params[name]
    status = _text(r, "status")
    if status:
        found["status"] = int(status) if status.isdigit() else status.lower()
    for name in ("since", "until"):
        value = _text(r, name)
        if value is not None:
            found[name] = float(value)
    fault = _text(r, "fault")
    if fault is not None:
        found["fault"] = {"true": True, "false": False}.get(fault, fault)
    return found


async def list_requests(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_requests(
        r.path_params["cid"],
        limit=_limit(r),
        cursor=_text(r, "cursor"),
        **_journal_query(r),
    )


async def count_requests(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.count_requests(r.path_params["cid"], **_journal_query(r))


async def get_request(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.get_request(r.path_params["cid"], r.path_params["id"])


_CONN = "/connections/{cid}"
_REC = _CONN + "/records/{resource}"
_FAULT_KINDS = sorted({*INBOUND, *OUTBOUND})
_FAULT_RULE = {
    "type": "object",
    "required": ["kind"],
    "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": _FAULT_KINDS},
        "direction": {"type": "string", "enum": ["inbound", "outbound"]},
        "params": {"type": "object", "description": "the kind's parameters"},
        "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "operation": _TEXT,
        "endpoint": _TEXT,
        "event_type": _TEXT,
        "trigger": {
            "type": "object",
            "description": "next, probability, seed, until, for_seconds (or give them directly)",
        },
        "next": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        "probability": {"type": "number", "minimum": 0, "maximum": 1},
        "seed": {"type": ["integer", "string"]},
        "until": {"type": ["number", "string"]},
        "for_seconds": {"type": "number", "exclusiveMinimum": 0},
    },
}
ENDPOINTS = [
    Endpoint(
        "GET",
        "/connections",
        "List connections",
        list_connections,
        query={"twin": _q("twin name")},
    ),
    Endpoint(
        "POST",
        "/connections",
        "Connect: get or create the connection for a client id",
        connect,
        body={
            "type": "object",
            "required": ["client_id"],
            "additionalProperties": False,
            "properties": {
                "client_id": {"type": "string", "pattern": CLIENT_ID.pattern},
                "twin": {"type": ["string", "null"]},
                "webhook_url": {"type": ["string", "null"]},
                "label": {"type": ["string", "null"]},
            },
        },
        status=(200, 201),
    ),
    Endpoint(
        "POST",
        "/twins/{twin}/reset",
        "Reset every connection of a twin to its seed data",
        reset_twin,
    ),
    Endpoint(
        "POST",
        _CONN + "/reset",
        "Reset a connection to its seed data",
        reset,
    ),
    Endpoint(
        "DELETE",
        _CONN,
        "Remove a connection with its records, journal, webhook endpoints, deliveries, faults "
        "and tokens",
        remove_connection,
    ),
    Endpoint(
        "GET",
        _CONN + "/describe",
        "Describe the twin's resources and events",
        describe,
        query={"resource": _q("one resource only")},
    ),
    Endpoint(
        "GET",
        _REC,
        "List records; any other query parameter filters by a field's value",
        list_records,
        query={"parent": _PARENT, "cursor": _CURSOR, "limit": _LIMIT},
    ),
    Endpoint(
        "POST",
        _REC,
        "Create a record (emits its events)",
        create_record,
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {"data": _OBJECT, "parent": _NULLABLE_OBJECT},
        },
        status=(201,),
    ),
    Endpoint(
        "POST",
        _REC + "/generate",
        "Generate realistic records",
        generate,
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "count": {"type": "integer", "minimum": 1, "maximum": 1000},
                "parent": _NULLABLE_OBJECT,
            },
        },
        status=(201,),
    ),
    Endpoint("GET", _REC + "/{id}", "Read a record", get_record),
    Endpoint(
        "PATCH",
        _REC + "/{id}",
        "Change a record (JSON merge patch)",
        update_record,
        body={"type": "object", "additionalProperties": False, "properties": {"changes": _OBJECT}},
    ),
    Endpoint("DELETE", _REC + "/{id}", "Delete a record", delete_record),
    Endpoint(
        "POST",
        _CONN + "/events",
        "Send a webhook event now",
        trigger_event,
        body={
            "type": "object",
            "required": ["event"],
            "additionalProperties": False,
            "properties": {
                "event": {"type": "string"},
                "record": _NULLABLE_OBJECT,
                "overrides": _NULLABLE_OBJECT,
            },
        },
        status=(201,),
    ),
    Endpoint(
        "GET",
        _CONN + "/deliveries",
        "List webhook deliveries",
        list_deliveries,
        query={
            "status": _q("delivery status", type="string", enum=list(DELIVERY_STATUSES)),
            "event": _q("event type"),
            "limit": _LIMIT,
            "cursor": _CURSOR,
        },
    ),
    Endpoint(
        "POST",
        _CONN + "/deliveries/redeliver-failed",
        "Deliver again everything that failed recently",
        redeliver_failed,
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {"since_seconds": {"type": "number", "exclusiveMinimum": 0}},
        },
    ),
    Endpoint("GET", _CONN + "/deliveries/{id}", "A delivery and its attempts", get_delivery),
    Endpoint("POST", _CONN + "/deliveries/{id}/redeliver", "Deliver again", redeliver),
    Endpoint(
        "POST",
        _CONN + "/endpoints",
        "Add a webhook endpoint (secret shown once)",
        add_endpoint,
        body={
            "type": "object",
            "required": ["url"],
            "additionalProperties": False,
            "properties": {
                "url": {"type": "string"},
                "events": {"type": ["array", "null"], "items": {"type": "string"}},
                "scheme": {"type": ["string", "null"]},
            },
        },
        status=(201,),
    ),
    Endpoint("GET", _CONN + "/endpoints", "List webhook endpoints", list_endpoints),
    Endpoint(
        "POST",
        _CONN + "/endpoints/{id}/rotate",
        "Rotate an endpoint's secret",
        rotate_secret,
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {"grace_seconds": {"type": "number", "minimum": 0}},
        },
    ),
    Endpoint(
        "DELETE",
        _CONN + "/endpoints/{id}",
        "Remove a webhook endpoint (drops its pending deliveries)",
        remove_endpoint,
    ),
    Endpoint("GET", _CONN + "/actions", "List workflow actions", list_actions),
    Endpoint(
        "POST",
        _CONN + "/actions/{name}",
        "Run a workflow action",
        run_action,
        body={"type": "object", "additionalProperties": False, "properties": {"inputs": _OBJECT}},
    ),
    Endpoint(
        "POST",
        _REC + "/{id}/actions/{action}",
        "Perform a record's action (shortlist, cancel, ...)",
        record_action,
        body={
            "type": "object",
            "additionalProperties": False,
            "properties": {"body": _NULLABLE_OBJECT},
        },
        query={"parent": _PARENT},
    ),
    Endpoint(
        "POST", _CONN + "/faults", "Add a fault rule", add_fault, body=_FAULT_RULE, status=(201,)
    ),
    Endpoint("GET", _CONN + "/faults", "List fault rules", list_faults),
    Endpoint(
        "DELETE",
        _CONN + "/faults",
        "Clear fault rules",
        clear_faults,
        query={"rule_id": _q("only this rule")},
    ),
    Endpoint(
        "GET",
        _CONN + "/requests",
        "Journal: requests the twin received",
        list_requests,
        query={
            "operation": _q("operationId or 'METHOD /path'"),
            "status": _JOURNAL_STATUS,
            "method": _q("HTTP method"),
            "text": _q("text in path or bodies"),
            "since": _q("received at or after (unix time)", type="number"),
            "until": _q("received before (unix time)", type="number"),
            "fault": _q("a fault rule id, or true/false: hit by a fault or not"),
            "limit": _LIMIT,
            "cursor": _CURSOR,
        },
    ),
    Endpoint(
        "GET",
        _CONN + "/requests/count",
        "Count journal entries",
        count_requests,
        query={
            "operation": _q("operationId or 'METHOD /path'"),
            "status": _JOURNAL_STATUS,
            "method": _q("HTTP method"),
            "text": _q("text in path or bodies"),
            "since": _q("received at or after (unix time)", type="number"),
            "until": _q("received before (unix time)", type="number"),
            "fault": _q("a fault rule id, or true/false: hit by a fault or not"),
        },
    ),
    Endpoint("GET", _CONN + "/requests/{id}", "One journal entry", get_request),
    Endpoint(
        "POST",
        _CONN + "/clock/advance",
        "Advance the twin's virtual clock",
        advance_clock,
        body={
            "type": "object",
            "required": ["seconds"],
            "additionalProperties": False,
            "properties": {
                "seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 366 * 86400}
            },
        },
    ),
]


class AdminApi:
    """ASGI app for the admin routes, guarded by an optional bearer token.

    One route per path, so a wrong method gets 405 with every method the path allows. Query
    parameters and bodies are checked against the same schemas the OpenAPI document publishes.
    """

    def __init__(
        self,
        control: ControlService,
        token: str | None,
        prefix: str,
        *,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.control = control
        self.token = token
        self.prefix = prefix
        self.max_body = max_body
        by_path: dict[str, dict[str, Endpoint]] = {}
        for endpoint in ENDPOINTS:
            by_path.setdefault(endpoint.path, {})[endpoint.method] = endpoint
        self.router = Router(
            [Route(path, _Asgi(self._dispatch(methods))) for path, methods in by_path.items()],
            default=self._not_found,
        )

    def _dispatch(self, methods: dict[str, Endpoint]) -> Callable[[Request], Awaitable[Response]]:
        allow = ", ".join(methods)

        async def run(request: Request) -> Response:
            if not self.authorized(request):
                return problem(
                    401,
                    "this admin API needs 'Authorization: Bearer <admin token>'",
                    "unauthorized",
                    headers={"WWW-Authenticate": 'Bearer realm="apitwin"'},
                )
            endpoint = methods.get(request.method)
            if endpoint is None:
                return problem(
                    405,
                    f"{request.method} is not allowed here; use {allow}",
                    "method_not_allowed",
                    headers={"Allow": allow},
                )
            try:
                _query(request, endpoint)
                body = await _body(request, endpoint, self.max_body) if endpoint.body else {}
                status, value = await endpoint.handler(self.control, request, body)
            except ApitwinError as exc:
                return problem(exc.status, exc.message, exc.kind, exc.field)
            return _json(status, value)

        return run

    async def _not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.authorized_scope(scope):
            response = problem(
                401, "this admin API needs 'Authorization: Bearer <admin token>'", "unauthorized"
            )
        else:
            response = problem(404, f"no admin endpoint {scope['path']}", "not_found")
        await response(scope, receive, send)

    def authorized(self, request: Request) -> bool:
        return self.authorized_scope(request.scope)

    def authorized_scope(self, scope: Any) -> bool:
        if not self.token:
            return True
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        kind, _, value = header.decode("latin-1").partition(" ")
        return kind.lower() == "bearer" and secrets.compare_digest(
            value.strip().encode("latin-1"), self.token.encode("utf-8")
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.router(scope, receive, send)


class _Asgi:
    """A request handler as a plain ASGI app, so the route takes every method (405 is ours)."""

    def __init__(self, run: Callable[[Request], Awaitable[Response]]) -> None:
        self.run = run

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        response = await self.run(Request(scope, receive))
        await response(scope, receive, send)


def openapi_document(prefix: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    problem_response = {
        "description": "Problem (RFC 9457)",
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
    for endpoint in ENDPOINTS:
        responses: dict[str, Any] = {
            str(status): {
                "description": "Created" if status == 201 else "OK",
                "content": {"application/json": {"schema": _OBJECT}},
            }
            for status in endpoint.status
        }
        responses["default"] = problem_response
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.handler.__name__,
            "responses": responses,
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _ID if name == "cid" else {"type": "string"},
            }
            for name in _path_names(endpoint.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "description": param.description,
                "schema": dict(param.schema),
            }
            for name, param in endpoint.query.items()
        ]
        if params:
            operation["parameters"] = params
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": endpoint.body_required,
                "content": {"application/json": {"schema": endpoint.body}},
            }
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "apitwin admin API", "version": __version__},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": _PROBLEM},
        },
        "security": [{"admin": []}],
        "paths": paths,
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
