"""The pipeline's "apply to state" stage: an operation's role on a resource, against Records."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from apitwin.errors import ApitwinError, NotFoundError, StorageFullError
from apitwin.negotiation import default_response, response_for_status
from apitwin.responses import stable_rng
from apitwin.schemanav import properties
from apitwin.service.exchange import Exchange, StateResult
from apitwin.service.records import ConflictError, Page, is_cursor
from apitwin.service.shaping import shape, shape_list
from apitwin.spec.model import Operation, Schema
from apitwin.spec.resources import Resource
from apitwin.state.store import Item, Put
from apitwin.validation import ValidRequest

if TYPE_CHECKING:
    from apitwin.service.twin import TwinService

SINGLETON_ID = "_"


async def apply(twin: TwinService, exchange: Exchange) -> StateResult | None:
    """What the operation does to the connection's records; None: answer without state."""
    assert exchange.match is not None and exchange.match.operation is not None
    op = exchange.match.operation
    found = twin.resource_map.for_operation(op)
    if found is None or exchange.outcome is None:
        return None
    resource, role = found
    try:
        return await _dispatch(twin, exchange, op, resource, role.role, role.action)
    except NotFoundError as exc:
        if not _declares(op, 404):
            return None  # the spec has no "absent": answer like a stateless mock
        return StateResult(404, detail=exc.message)
    except StorageFullError:
        raise  # the twin's own storage, not the partner's behaviour: a problem, not its errors
    except ApitwinError as exc:
        return StateResult(exc.status, detail=exc.message)


async def _dispatch(
    twin: TwinService, exchange: Exchange, op: Operation, resource: Resource, role: str, action: str
) -> StateResult | None:
    request = exchange.outcome.request  # type: ignore[union-attr]
    conn = exchange.connection
    records = twin.records
    parent_id = _path_value(request, resource.parent_param)
    item_id = _path_value(request, resource.id_param)
    status, _ = default_response(op)
    if resource.kind == "singleton":
        return await _singleton(twin, exchange, op, resource, role, parent_id)
    await records.require_parent(conn, resource, parent_id)
    if role == "list":
        cursor = _cursor(request, resource)
        if cursor is not None and not is_cursor(cursor) and not _declares(op, 400):
            cursor = None  # a cursor this twin never issued, and no 400 to say so: start over
        page = await records.page(
            conn,
            resource,
            parent_id=parent_id,
            filters=_filters(resource, request),
            cursor=cursor,
            limit=_limit(request, resource),
            offset=_offset(resource, request),
            count=resource.envelope.total_field is not None,
        )
        return StateResult(status, _list_body(twin, op, resource, page, status), True)
    if role == "create":
        if not isinstance(request.body, dict):
            return None
        # Without a declared 409, a create that reuses an id replaces the record.
        upsert = not _declares(op, 409)
        item = await records.create(
            conn, resource, request.body, parent_id=parent_id, upsert=upsert
        )
        headers = _location(twin, op, resource, status, item.data, parent_id)
        headers += _etag_header(twin, resource, item)
        return StateResult(status, _body(twin, op, status, item.data), True, headers)
    if item_id is None and role in ("replace", "update") and op.path == resource.collection_path:
        item_id = _body_id(resource, request.body)  # `PUT /pet` names the pet in its body
    if item_id is None:
        return None
    body = request.body if isinstance(request.body, dict) else _query_fields(resource, request)
    item = await records.require(conn, resource, item_id, parent_id)
    expect: int | None = None
    if role in ("replace", "update", "delete"):
        item = await _interleave(twin, exchange, resource, item)
        refused = _precondition(twin, exchange, op, resource, item)
        if refused is not None:
            return refused
        given = exchange.request.headers.get("if-match")
        expect = item.version if given and _honours_if_match(twin, op, resource) else None
    try:
        if role == "read":
            pass
        elif role == "replace" and body is not None:
            item = await records.replace(conn, resource, item_id, body, expect=expect)
        elif role == "update" and body is not None:
            item = await records.update(conn, resource, item_id, body, expect=expect)
        elif role == "delete":
            data = await records.delete(conn, resource, item_id, expect=expect)
            return StateResult(status, _body(twin, op, status, data), True)
        elif role == "action":
            item = await records.action(conn, resource, item_id, action, body)
        else:
            return None
    except ConflictError as exc:
        if expect is None:
            raise
        # Changed between the If-Match check and the write: the precondition failed after all.
        return StateResult(_precondition_status(op), detail=exc.message)
    headers = _etag_header(twin, resource, item)
    return StateResult(status, _body(twin, op, status, item.data), True, headers)


# -- optimistic concurrency (ETag / If-Match) ----------------------------------------------------


def etag(item: Item) -> str:
    """A record's entity tag: its store version, which every change moves on."""
    return f'"v{item.version}"'


def versioned(twin: TwinService, resource: Resource) -> bool:
    """Whether the spec gives the resource optimistic concurrency: an operation on it takes
    If-Match, answers an ETag header, or a write of it can answer 412."""
    known = _VERSIONED.setdefault(twin, {})
    found = known.get(resource.name)
    if found is None:
        ops = [twin.spec.operation(op_id) for op_id in resource.operations.values()]
        found = known[resource.name] = any(op is not None and _concurrency(op) for op in ops)
    return found


# Per twin and resource: the spec does not change under a running twin.
_VERSIONED: weakref.WeakKeyDictionary[TwinService, dict[str, bool]] = weakref.WeakKeyDictionary()


def _concurrency(op: Operation) -> bool:
    if any(p.location == "header" and p.name.lower() == "if-match" for p in op.parameters):
        return True
    if "412" in op.responses:
        return True
    return any(
        name.lower() == "etag" for response in op.responses.values() for name in response.headers
    )


def _etag_header(twin: TwinService, resource: Resource, item: Item) -> list[tuple[str, str]]:
    return [("etag", etag(item))] if versioned(twin, resource) else []


def _honours_if_match(twin: TwinService, op: Operation, resource: Resource) -> bool:
    return versioned(twin, resource) or any(s in op.responses for s in ("409", "412"))


def _precondition_status(op: Operation) -> int:
    """412, unless the operation declares 409 and not 412 (then its own conflict answer)."""
    declared = op.responses
    if "412" not in declared and "4XX" not in declared and "409" in declared:
        return 409
    return 412


def _precondition(
    twin: TwinService, exchange: Exchange, op: Operation, resource: Resource, item: Item
) -> StateResult | None:
    """A failed If-Match (RFC 9110 13.1.1: strong comparison; ``*`` matches any record), or a
    ``concurrent_update`` fault without one, where the write can answer a conflict."""
    given = exchange.request.headers.get("if-match")
    plan = exchange.fault
    if given is not None and _honours_if_match(twin, op, resource):
        tags = {tag.strip() for tag in given.split(",")}
        if "*" in tags or etag(item) in tags:
            return None
        detail = (
            f"the {resource.singular} {item.key.id!r} is at {etag(item)}, not {given}: "
            "it changed since it was read; read it again and retry"
        )
        return StateResult(_precondition_status(op), detail=detail)
    raced = plan is not None and plan.kind == "concurrent_update"
    if given is None and raced and "409" in op.responses:
        assert plan is not None
        detail = (
            f"the {resource.singular} {item.key.id!r} changed since it was read "
            f"(fault {plan.rule_id}); read it again and retry"
        )
        return StateResult(409, detail=detail)
    return None


async def _interleave(
    twin: TwinService, exchange: Exchange, resource: Resource, item: Item
) -> Item:
    """The ``concurrent_update`` race: someone else changes the record between the client's
    read and this write (a new version, the fields the rule names, its webhook)."""
    plan = exchange.fault
    if plan is None or plan.kind != "concurrent_update":
        return item
    changes = dict(plan.params.get("changes") or {})
    return await twin.records.update(exchange.connection, resource, item.key.id, changes)


async def _singleton(
    twin: TwinService,
    exchange: Exchange,
    op: Operation,
    resource: Resource,
    role: str,
    parent_id: str | None,
) -> StateResult | None:
    request = exchange.outcome.request  # type: ignore[union-attr]
    conn = exchange.connection
    records = twin.records
    await records.require_parent(conn, resource, parent_id)
    key = records.scope(conn, resource).key(parent_id or SINGLETON_ID)
    status, _ = default_response(op)
    current = await twin.store.get(key)
    own = {resource.parent_field: parent_id} if resource.parent_field and parent_id else {}
    if role in ("replace", "update") and isinstance(request.body, dict):
        base = current.data if current and role == "update" else {}
        fields = {**base, **request.body, **own, **records.touched(resource)}
        data = records.fill_required(resource, fields)
    elif current is not None:
        data = current.data
    else:
        data = records.fill_required(resource, {**own}, complete=True)
        data.update(own)
    if current is None or data != current.data:
        await twin.store.write([Put(key, data, now=twin.clock.now())])
    return StateResult(status, _body(twin, op, status, data), True)


def _query_fields(resource: Resource, request: ValidRequest) -> dict[str, Any] | None:
    """Writes that carry their values in the query (Swagger-era form updates)."""
    if resource.schema is None or not request.query:
        return None
    root = resource.schema.json
    known = properties(root, root)
    fields = {k: v for k, v in request.query.items() if k in known}
    return fields or None


def _path_value(request: ValidRequest, name: str | None) -> str | None:
    if not name or name not in request.path:
        return None
    return str(request.path[name])


MAX_OFFSET = 10**9


def _param(request: ValidRequest, name: str | None) -> Any:
    return request.query.get(name) if name else None


def _number(value: Any, default: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return default
    try:
        return max(0, min(int(value), MAX_OFFSET))
    except ValueError:
        return default


def _cursor(request: ValidRequest, resource: Resource) -> str | None:
    value = _param(request, resource.pagination.cursor_param)
    return value if isinstance(value, str) and value else None


def _limit(request: ValidRequest, resource: Resource) -> int | None:
    value = _param(request, resource.pagination.limit_param)
    return _number(value, 0) or None


def _offset(resource: Resource, request: ValidRequest) -> int:
    pagination = resource.pagination
    if pagination.style == "offset":
        return _number(_param(request, pagination.offset_param), 0)
    if pagination.style == "page":
        page = _number(_param(request, pagination.page_param), 1)
        limit = _number(_param(request, pagination.limit_param), 0) or pagination.default_limit
        return min(max(0, page - 1) * limit, MAX_OFFSET)
    return 0


def _body_id(resource: Resource, body: Any) -> str | None:
    value = body.get(resource.id_field) if isinstance(body, dict) else None
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else None


def _filters(resource: Resource, request: ValidRequest) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for param, field in resource.filters.items():
        value = request.query.get(param)
        if value is None or isinstance(value, dict):
            continue
        if isinstance(value, list):  # an array parameter: any of its values
            value = [v for v in value if not isinstance(v, (list, dict))]
        found[field] = value
    return found


def _json_schema(op: Operation, status: int) -> Schema | None:
    key = ("json_schema", status)
    if key not in op.memo:
        op.memo[key] = _find_json_schema(op, status)
    found: Schema | None = op.memo[key]
    return found


def _find_json_schema(op: Operation, status: int) -> Schema | None:
    response = response_for_status(op, status)
    if response is None:
        return None
    for media in response.media.values():
        if media.is_json:
            return media.schema
    return None


def _declares(op: Operation, status: int) -> bool:
    """Whether the spec lets the operation answer ``status`` (a `default` response covers all)."""
    responses = op.responses
    return str(status) in responses or f"{status // 100}XX" in responses or "default" in responses


def _body(twin: TwinService, op: Operation, status: int, record: dict[str, Any]) -> Any:
    rng = stable_rng(twin.seed, op.operation_id, status, "state")
    return shape(record, _json_schema(op, status), twin.generator, rng)


def _list_body(
    twin: TwinService, op: Operation, resource: Resource, page: Page, status: int
) -> Any:
    rng = stable_rng(twin.seed, op.operation_id, status, "list")
    info = {"next_cursor": page.next_cursor, "has_more": page.has_more, "total": page.total}
    records = [item.data for item in page.items]
    return shape_list(
        records, _json_schema(op, status), resource.envelope, info, twin.generator, rng
    )


def _location(
    twin: TwinService,
    op: Operation,
    resource: Resource,
    status: int,
    record: dict[str, Any],
    parent_id: str | None,
) -> list[tuple[str, str]]:
    response = response_for_status(op, status)
    if response is None or not any(h.lower() == "location" for h in response.headers):
        return []
    path = resource.item_path or ""
    if resource.parent_param and parent_id is not None:
        path = path.replace("{" + resource.parent_param + "}", parent_id)
    if resource.id_param:
        path = path.replace("{" + resource.id_param + "}", str(record.get(resource.id_field)))
    return [("location", twin.base_path + path)]
