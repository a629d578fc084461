"""Admin REST API: the control service over JSON, for scripts and CI. A thin adapter only.

Routes live under ``/_apitwin/api``; the OpenAPI document describing them is served at
``/_apitwin/openapi.json`` and generated from the same route table, so it cannot drift.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from apitwin import __version__
from apitwin.errors import ApitwinError, InvalidInputError
from apitwin.service.control import ControlService

Handler = Callable[[ControlService, Request, dict[str, Any]], Awaitable[tuple[int, Any]]]

_ID = {"type": "string", "description": "connection handle '<twin>:<client id>'"}
_OBJECT = {"type": "object"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    summary: str
    handler: Handler
    body: dict[str, Any] | None = None
    query: dict[str, str] = field(default_factory=dict)


def _json(status: int, value: Any) -> Response:
    media = "application/problem+json" if status >= 400 else "application/json"
    return Response(orjson.dumps(value), status_code=status, media_type=media)


def problem(
    status: int, detail: str, kind: str = "error", field_name: str | None = None
) -> Response:
    body: dict[str, Any] = {
        "type": f"urn:apitwin:{kind}",
        "title": kind.replace("_", " "),
        "status": status,
        "detail": detail,
    }
    if field_name:
        body["field"] = field_name
    return _json(status, body)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError("the body must be a JSON object")
    return value


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
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit():
        raise InvalidInputError("limit must be a positive integer", field="limit")
    return int(raw)


_RESERVED = {"parent", "cursor", "limit", "twin", "resource"}


async def list_connections(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"connections": await c.list_connections(r.query_params.get("twin"))}


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


async def reset_twin(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.reset_twin(r.path_params["twin"])


async def describe(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.describe_api(r.path_params["cid"], r.query_params.get("resource"))


async def list_records(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    filters = {k: v for k, v in r.query_params.items() if k not in _RESERVED}
    return 200, await c.list_records(
        r.path_params["cid"],
        r.path_params["resource"],
        parent=_parent(r),
        filters=filters,
        cursor=r.query_params.get("cursor"),
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
    q = r.query_params
    return 200, await c.list_deliveries(
        r.path_params["cid"],
        status=q.get("status"),
        event=q.get("event"),
        limit=_limit(r),
        cursor=q.get("cursor"),
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
    return 200, await c.clear_faults(r.path_params["cid"], r.query_params.get("rule_id"))


def _journal_query(r: Request) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in ("operation", "method", "text"):
        if name in r.query_params:
            found[name] = r.query_params[name]
    status = r.query_params.get("status")
    if status:
        found["status"] = int(status) if status.isdigit() else status
    return found


async def list_requests(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.list_requests(
        r.path_params["cid"],
        limit=_limit(r),
        cursor=r.query_params.get("cursor"),
        **_journal_query(r),
    )


async def count_requests(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.count_requests(r.path_params["cid"], **_journal_query(r))


async def get_request(c: ControlService, r: Request, b: dict[str, Any]) -> tuple[int, Any]:
    return 200, await c.get_request(r.path_params["cid"], r.path_params["id"])


_CONN = "/connections/{cid}"
_REC = _CONN + "/records/{resource}"
ENDPOINTS = [
    Endpoint(
        "GET", "/connections", "List connections", list_connections, query={"twin": "twin name"}
    ),
    Endpoint(
        "POST",
        "/connections",
        "Connect: get or create the connection for a client id",
        connect,
        body={
            "type": "object",
            "required": ["client_id"],
            "properties": {
                "client_id": {"type": "string"},
                "twin": {"type": "string"},
                "webhook_url": {"type": "string"},
                "label": {"type": "string"},
            },
        },
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
        "GET",
        _CONN + "/describe",
        "Describe the twin's resources and events",
        describe,
        query={"resource": "one resource only"},
    ),
    Endpoint(
        "GET",
        _REC,
        "List records",
        list_records,
        query={
            "parent": "'<resource>/<id>' for nested resources",
            "cursor": "next_cursor",
            "limit": "page size",
            "<field>": "filter by a field's value",
        },
    ),
    Endpoint(
        "POST",
        _REC,
        "Create a record (emits its events)",
        create_record,
        body={"type": "object", "properties": {"data": _OBJECT, "parent": _OBJECT}},
    ),
    Endpoint(
        "POST",
        _REC + "/generate",
        "Generate realistic records",
        generate,
        body={"type": "object", "properties": {"count": {"type": "integer"}, "parent": _OBJECT}},
    ),
    Endpoint("GET", _REC + "/{id}", "Read a record", get_record),
    Endpoint(
        "PATCH",
        _REC + "/{id}",
        "Change a record (JSON merge patch)",
        update_record,
        body={"type": "object", "properties": {"changes": _OBJECT}},
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
            "properties": {"event": {"type": "string"}, "record": _OBJECT, "overrides": _OBJECT},
        },
    ),
    Endpoint(
        "GET",
        _CONN + "/deliveries",
        "List webhook deliveries",
        list_deliveries,
        query={
            "status": "pending|delivering|succeeded|failed|dropped",
            "event": "event type",
            "limit": "page size",
            "cursor": "next_cursor",
        },
    ),
    Endpoint(
        "POST",
        _CONN + "/deliveries/redeliver-failed",
        "Deliver again everything that failed recently",
        redeliver_failed,
        body={"type": "object", "properties": {"since_seconds": {"type": "number"}}},
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
            "properties": {
                "url": {"type": "string"},
                "events": {"type": "array"},
                "scheme": {"type": "string"},
            },
        },
    ),
    Endpoint("GET", _CONN + "/endpoints", "List webhook endpoints", list_endpoints),
    Endpoint(
        "POST",
        _CONN + "/endpoints/{id}/rotate",
        "Rotate an endpoint's secret",
        rotate_secret,
        body={"type": "object", "properties": {"grace_seconds": {"type": "number"}}},
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
        body={"type": "object", "properties": {"inputs": _OBJECT}},
    ),
    Endpoint(
        "POST",
        _REC + "/{id}/actions/{action}",
        "Perform a record's action (shortlist, cancel, ...)",
        record_action,
        body={"type": "object", "properties": {"body": _OBJECT}},
        query={"parent": "'<resource>/<id>' for nested resources"},
    ),
    Endpoint("POST", _CONN + "/faults", "Add a fault rule", add_fault, body=_OBJECT),
    Endpoint("GET", _CONN + "/faults", "List fault rules", list_faults),
    Endpoint(
        "DELETE",
        _CONN + "/faults",
        "Clear fault rules",
        clear_faults,
        query={"rule_id": "only this rule"},
    ),
    Endpoint(
        "GET",
        _CONN + "/requests",
        "Journal: requests the twin received",
        list_requests,
        query={
            "operation": "operationId or 'METHOD /path'",
            "status": "201 or 4xx",
            "method": "HTTP method",
            "text": "text in path or bodies",
            "limit": "page size",
            "cursor": "next_cursor",
        },
    ),
    Endpoint(
        "GET",
        _CONN + "/requests/count",
        "Count journal entries",
        count_requests,
        query={"operation": "operationId or 'METHOD /path'", "status": "201 or 4xx"},
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
            "properties": {"seconds": {"type": "number"}},
        },
    ),
]


class AdminApi:
    """ASGI app for the admin routes, guarded by an optional bearer token."""

    def __init__(self, control: ControlService, token: str | None, prefix: str) -> None:
        self.control = control
        self.token = token
        self.prefix = prefix
        self.router = Router([Route(e.path, self._wrap(e), methods=[e.method]) for e in ENDPOINTS])

    def _wrap(self, endpoint: Endpoint) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            if not self.authorized(request):
                return problem(
                    401,
                    "this admin API needs 'Authorization: Bearer <admin token>'",
                    "unauthorized",
                )
            try:
                body = await _body(request) if request.method in ("POST", "PATCH") else {}
                status, value = await endpoint.handler(self.control, request, body)
            except ApitwinError as exc:
                return problem(exc.status, exc.message, exc.kind, exc.field)
            return _json(status, value)

        return run

    def authorized(self, request: Request) -> bool:
        return self.authorized_scope(request.scope)

    def authorized_scope(self, scope: Any) -> bool:
        if not self.token:
            return True
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        kind, _, value = header.decode("latin-1").partition(" ")
        return kind.lower() == "bearer" and secrets.compare_digest(value.strip(), self.token)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.router(scope, receive, send)


def openapi_document(prefix: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": endpoint.handler.__name__,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": _OBJECT}}},
                "default": {
                    "description": "Problem (RFC 9457)",
                    "content": {"application/problem+json": {"schema": _OBJECT}},
                },
            },
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
            {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
            for name, text in endpoint.query.items()
            if not name.startswith("<")
        ]
        if params:
            operation["parameters"] = params
        if endpoint.body is not None:
            operation["requestBody"] = {"content": {"application/json": {"schema": endpoint.body}}}
        paths.setdefault(prefix + endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "apitwin admin API", "version": __version__},
        "components": {"securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}}},
        "security": [{"admin": []}],
        "paths": paths,
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
