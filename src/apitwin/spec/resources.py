"""Resources inferred from paths, methods and schemas: what the twin keeps state for.

``infer_resources(spec, overrides)`` maps every operation to a role on a resource (list, create,
read, replace, update, delete, an action, or none), with the id field, server-set fields, list
envelope and pagination style each resource uses. ``apitwin.yaml`` can correct any of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from apitwin.spec.model import MediaType, Operation, Parameter, Schema, Spec
from apitwin.spec.refs import Located, RefError, escape

if TYPE_CHECKING:
    from apitwin.spec.refs import DocumentRegistry
    from apitwin.spec.schemas import SchemaCompiler

Role = Literal["list", "create", "read", "replace", "update", "delete", "action"]
PaginationStyle = Literal["cursor", "page", "offset", "none"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """Shape of a list response: a bare array (``list_field`` None) or an object around it."""

    list_field: str | None = None  # "data", "items", ...
    next_cursor_field: str | None = None  # "next_cursor", "nextPageToken", ...
    has_more_field: str | None = None
    total_field: str | None = None
    schema: Schema | None = None  # the list response schema, to fill other required fields


@dataclass(frozen=True, slots=True)
class Pagination:
    style: PaginationStyle = "none"
    cursor_param: str | None = None  # cursor / after / starting_after / page_token
    limit_param: str | None = None  # limit / per_page / page_size
    page_param: str | None = None  # page
    offset_param: str | None = None  # offset
    default_limit: int = 20
    max_limit: int = 100


@dataclass(frozen=True, slots=True)
class OperationRole:
    resource: str
    role: Role
    action: str = ""  # for role "action": the action's name, e.g. "cancel"


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # "projects", "experts" (qualified "users.repos" only on a name clash)
    singular: str  # "project", "expert"
    kind: Literal["collection", "singleton"]
    collection_path: str | None  # "/projects/{projectId}/experts"
    item_path: str | None  # "/projects/{projectId}/experts/{expertId}" (singleton: its path)
    parent: str | None = None  # name of the parent resource
    parent_param: str | None = None  # path parameter naming the parent ("projectId")
    parent_field: str | None = None  # record field naming the parent ("project_id")
    id_param: str | None = None  # path parameter naming the item ("expertId")
    id_field: str = "id"
    id_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    schema: Schema | None = None  # the record as the API returns it
    create_schema: Schema | None = None  # the create request body, when there is one
    server_fields: tuple[str, ...] = ()  # readOnly, id, timestamps, fields with defaults
    timestamp_fields: Mapping[str, str] = field(default_factory=dict)  # field -> created|updated
    envelope: Envelope = field(default_factory=Envelope)
    pagination: Pagination = field(default_factory=Pagination)
    filters: Mapping[str, str] = field(default_factory=dict)  # query param -> record field
    operations: Mapping[str, str] = field(default_factory=dict)  # role or "action:<name>" -> opId


@dataclass(frozen=True, slots=True)
class ResourceMap:
    resources: Mapping[str, Resource]
    roles: Mapping[str, OperationRole]  # operationId -> role

    def for_operation(self, op: Operation) -> tuple[Resource, OperationRole] | None:
        role = self.roles.get(op.operation_id)
        if role is None:
            return None
        return self.resources[role.resource], role


def infer_resources(
    spec: Spec,
    overrides: Mapping[str, Any] | None = None,
    operations: Mapping[str, Any] | None = None,
) -> ResourceMap:
    """Resources and operation roles of ``spec``, corrected by ``apitwin.yaml``.

    ``overrides`` is the ``resources:`` mapping (by inferred resource name); ``operations`` the
    ``operations:`` mapping (operationId -> {resource, role, action}). An ``operations`` key inside
    ``overrides`` is read as more of the latter unless a resource is named "operations". Raises
    ValueError for unknown keys, resources, operations or roles.
    """
    inference = _Inference(spec)
    drafts = inference.drafts()
    by_name = {d.name: d for d in drafts}
    given, moves = _split_overrides(overrides, operations, by_name)
    renames = _renames(given, by_name)
    _reassign(moves, by_name, renames, spec)
    resources: dict[str, Resource] = {}
    for draft in drafts:
        entry = _mapping(given.get(draft.name), f"resources.{draft.name}")
        resource = inference.resource(draft, entry)
        resources[resource.name] = resource
    resources = _rename(resources, renames)
    return ResourceMap(resources, _roles(resources))


def describe_resources(rmap: ResourceMap) -> list[str]:
    """One line per resource, for ``apitwin check``."""
    return [_describe(resource) for resource in rmap.resources.values()]


# -- names ------------------------------------------------------------------------------------

_IRREGULAR = {
    "people": "person",
    "children": "child",
    "men": "man",
    "women": "woman",
    "mice": "mouse",
    "geese": "goose",
    "criteria": "criterion",
    "indices": "index",
    "matrices": "matrix",
    "vertices": "vertex",
    "analyses": "analysis",
    "aliases": "alias",
    "series": "series",
    "species": "species",
    "news": "news",
}
# Plurals of words that end in "ie" (not "y").
_IE_PLURALS = {"movies", "cookies", "zombies", "rookies", "selfies", "calories", "brownies"}
_ES_PLURALS = ("sses", "shes", "tches", "nches", "rches", "xes", "zzes")
_LAST_WORD = re.compile(r"([A-Z]?[a-z0-9]+|[A-Z0-9]+)$")
_WORD_BREAK = re.compile(r"[-_.\s]+")
_CASE_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def singular(name: str) -> str:
    """The singular of a collection name by simple English rules; unchanged if not plural."""
    match = _LAST_WORD.search(name)
    if match is None:
        return name
    word = match.group(0)
    one = _singular_word(word.lower())
    if word.isupper() and len(word) > 1:
        one = one.upper()
    elif word[0].isupper():
        one = one[:1].upper() + one[1:]
    return name[: match.start()] + one


def _singular_word(word: str) -> str:
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) < 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4 and word not in _IE_PLURALS:
        return word[:-3] + "y"
    if word.endswith(_ES_PLURALS):
        return word[:-2]
    if word.endswith("uses") and len(word) > 4 and word[-5] not in "aeiou":
        return word[:-2]  # statuses, bonuses (but causes, houses)
    return word[:-1]


def _camel(name: str) -> str:
    first, *rest = _WORD_BREAK.split(name)
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _snake(name: str) -> str:
    return _CASE_BREAK.sub("_", name).replace("-", "_").lower()


def _spellings(name: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys((name, _snake(name), _camel(name))))


# -- paths ------------------------------------------------------------------------------------

_PARAM = re.compile(r"\{([^{}]+)\}")
_VERSION = re.compile(r"v?\d+(\.\d+)*", re.IGNORECASE)
_METHODS = ("get", "put", "post", "patch", "delete")
_ITEM_ROLES: dict[str, Role] = {
    "get": "read",
    "put": "replace",
    "patch": "update",
    "delete": "delete",
}
_COLLECTION_ROLES: dict[str, Role] = {"get": "list", "post": "create"}
_ROLE_ORDER = ("list", "create", "read", "replace", "update", "delete")


def _segments(path: str) -> list[str]:
    return [segment for segment in path.split("/") if segment]


def _param(segment: str) -> str | None:
    """The parameter a segment starts with (`{id}`, `{id}.json`), or None for a literal."""
    match = _PARAM.match(segment)
    return match.group(1) if match else None


def _join(segments: list[str]) -> str:
    return "/" + "/".join(segments)


def _shape(segments: list[str]) -> str:
    # Paths differing only in parameter names are the same path.
    return _join(["{}" if _param(s) else s for s in segments])


def _literals(segments: list[str]) -> tuple[str, ...]:
    """Literal segments, without version prefixes like `v1` or `2.0`."""
    return tuple(s for s in segments if _param(s) is None and not _VERSION.fullmatch(s))


def _last_param(segments: list[str]) -> int:
    for index in range(len(segments) - 1, -1, -1):
        if _param(segments[index]):
            return index
    return -1


def _by_path(spec: Spec) -> dict[str, dict[str, Operation]]:
    paths: dict[str, dict[str, Operation]] = {}
    for op in spec.operations:
        if op.method in _METHODS:
            paths.setdefault(op.path, {}).setdefault(op.method, op)
    return paths


# -- operations' schemas ----------------------------------------------------------------------


def _response_schema(op: Operation | None) -> Schema | None:
    """The JSON schema of the success response: 200, then 201, then any other 2xx."""
    if op is None:
        return None
    statuses = sorted(op.responses, key=lambda s: (s != "200", s != "201", not s.startswith("2")))
    for status in statuses:
        if status.startswith("2"):
            schema = _json_schema(op.responses[status].media)
            if schema is not None:
                return schema
    return None


def _body_schema(op: Operation | None) -> Schema | None:
    return _json_schema(op.body.media) if op is not None and op.body is not None else None


def _json_schema(media: Mapping[str, MediaType]) -> Schema | None:
    for item in media.values():
        if item.schema is not None and item.is_json:
            return item.schema
    return None


def _compiler(schema: Schema) -> SchemaCompiler:
    # Sub-schemas (list items, id properties) are compiled by the compiler of their spec.
    return schema.compiler


# -- reading schemas as written ---------------------------------------------------------------

_MAX_DEPTH = 12


@dataclass(frozen=True, slots=True)
class _Node:
    """A schema as written, `$ref`s followed; ``uri`` and ``pointer`` say where it lives."""

    raw: dict[str, Any]
    uri: str
    pointer: str

    @property
    def address(self) -> str:
        return f"{self.uri}#{self.pointer}"


def _holds(value: Any, key: str | int) -> bool:
    if isinstance(value, dict):
        return isinstance(key, str) and key in value
    return isinstance(value, list) and isinstance(key, int) and key < len(value)


def _types(raw: Mapping[str, Any]) -> set[str]:
    declared = raw.get("type")
    names = declared if isinstance(declared, list) else [declared]
    return {t for t in names if isinstance(t, str) and t != "null"}


class _Schemas:
    """Reads raw schemas through the spec's documents.

    Bundling (``Schema.json``) converts everything a schema reaches; inference reads a few
    keywords near the top of each, so it stays fast on specs with thousands of operations.
    """

    def __init__(self) -> None:
        self._registry: DocumentRegistry | None = None
        self._targets: dict[tuple[str, str], Located | None] = {}
        self._props: dict[str, dict[str, _Node]] = {}

    def of(self, schema: Schema) -> _Node:
        if self._registry is None:
            self._registry = _compiler(schema).registry
        uri, _, pointer = schema.uri.partition("#")
        return self.deref(schema.raw, uri, pointer)

    def deref(self, raw: Any, uri: str, pointer: str) -> _Node:
        if isinstance(raw, dict) and "$ref" not in raw:
            return _Node(raw, uri, pointer)
        extra: dict[str, Any] = {}
        for _ in range(_MAX_DEPTH):
            if not isinstance(raw, dict):
                break
            ref = raw.get("$ref")
            if not isinstance(ref, str):
                return _Node({**raw, **extra} if extra else raw, uri, pointer)
            # Keywords beside `$ref` (readOnly, default, ...) apply too; the outermost win.
            extra = {**{k: v for k, v in raw.items() if k != "$ref"}, **extra}
            target = self._target(uri, ref)
            if target is None:
                break
            raw, uri, pointer = target.value, target.uri, target.pointer
        return _Node(extra, uri, pointer)

    def _target(self, uri: str, ref: str) -> Located | None:
        key = (uri, ref)
        if key not in self._targets:
            self._targets[key] = None
            if self._registry is not None:
                with contextlib.suppress(RefError):
                    self._targets[key] = self._registry.lookup(*self._registry.target(uri, ref))
        return self._targets[key]

    def child(self, node: _Node, *keys: str | int) -> _Node | None:
        value: Any = node.raw
        pointer = node.pointer
        for key in keys:
            if not _holds(value, key):
                return None
            value = value[key]
            pointer = f"{pointer}/{escape(str(key))}"
        return self.deref(value, node.uri, pointer)

    def branches(self, node: _Node, keyword: str) -> list[_Node]:
        found = node.raw.get(keyword)
        count = len(found) if isinstance(found, list) else 0
        return [b for i in range(count) if (b := self.child(node, keyword, i)) is not None]

    def unwrap(self, node: _Node, depth: int = 0) -> _Node:
        """The schema inside a nullable wrapper (`anyOf: [X, {type: null}]`), else ``node``."""
        if depth > _MAX_DEPTH or _types(node.raw) or "properties" in node.raw:
            return node
        for keyword in ("anyOf", "oneOf"):
            kept = [b for b in self.branches(node, keyword) if b.raw.get("type") != "null"]
            if len(kept) == 1:
                return self.unwrap(kept[0], depth + 1)
        return node

    def kind(self, node: _Node, depth: int = 0) -> str | None:
        """ "object", "array", "scalar", or None when the schema does not say."""
        node = self.unwrap(node)
        raw = node.raw
        types = _types(raw)
        if "array" in types or (not types and "items" in raw):
            return "array"
        if "object" in types or (
            not types and ("properties" in raw or "additionalProperties" in raw)
        ):
            return "object"
        if types:
            return "scalar"
        for keyword in ("allOf", "anyOf", "oneOf"):
            for branch in self.branches(node, keyword) if depth < _MAX_DEPTH else ():
                found = self.kind(branch, depth + 1)
                if found:
                    return found
        return None

    def items(self, node: _Node) -> _Node | None:
        return self.child(self.unwrap(node), "items")

    def properties(self, node: _Node) -> dict[str, _Node]:
        """Properties, including those of `allOf` parts and `anyOf`/`oneOf` alternatives."""
        found = self._props.get(node.address)
        if found is None:
            found = self._props[node.address] = self._collect(node, 0)
        return found

    def _collect(self, node: _Node, depth: int) -> dict[str, _Node]:
        found: dict[str, _Node] = {}
        if depth > _MAX_DEPTH:
            return found
        for branch in self.branches(node, "allOf"):
            found.update(self._collect(branch, depth + 1))
        props = node.raw.get("properties")
        base = f"{node.pointer}/properties/"
        for name, raw in props.items() if isinstance(props, dict) else ():
            found[name] = self.deref(raw, node.uri, base + escape(name))
        for keyword in ("anyOf", "oneOf"):
            for branch in self.branches(node, keyword):
                for name, child in self._collect(branch, depth + 1).items():
                    found.setdefault(name, child)
        return found

    def value_types(self, schema: Schema) -> set[str]:
        return _types(self.unwrap(self.of(schema)).raw)

    def scalar(self, node: _Node) -> bool:
        """Whether a property can be compared with a query or path value."""
        return self.kind(node) not in ("object", "array")

    def holds_records(self, array: _Node) -> bool:
        items = self.items(array)
        return items is None or self.kind(items) in ("object", None)


# -- list envelopes and pagination ------------------------------------------------------------

_LIST_FIELDS = ("data", "items", "results", "records", "entries")
_NEXT_FIELDS = (
    "next_cursor",
    "nextCursor",
    "next",
    "cursor",
    "next_page_token",
    "nextPageToken",
    "next_page",
    "nextPage",
    "after",
    "next_token",
    "nextToken",
)
_HAS_MORE_FIELDS = ("has_more", "hasMore", "has_next", "hasNext")
_TOTAL_FIELDS = (
    "total",
    "total_count",
    "totalCount",
    "count",
    "total_results",
    "totalResults",
    "total_items",
    "totalItems",
    "total_size",
    "totalSize",
)
_CURSOR_PARAMS = (
    "cursor",
    "after",
    "starting_after",
    "startingAfter",
    "page_token",
    "pageToken",
    "next",
    "next_token",
    "nextToken",
    "continuation",
    "continuation_token",
    "continuationToken",
)
_PAGE_PARAMS = ("page", "page_number", "pageNumber")
_OFFSET_PARAMS = ("offset", "skip")
_LIMIT_PARAMS = (
    "limit",
    "per_page",
    "perPage",
    "page_size",
    "pageSize",
    "size",
    "max_results",
    "maxResults",
)
# Query parameters that shape a list rather than filter it.
_NOT_FILTERS = frozenset(
    (
        *_CURSOR_PARAMS,
        *_PAGE_PARAMS,
        *_OFFSET_PARAMS,
        *_LIMIT_PARAMS,
        *("before", "ending_before", "endingBefore", "sort", "sort_by", "order", "order_by"),
        *("direction", "fields", "expand", "include"),
    )
)


def _first(names: tuple[str, ...], present: Mapping[str, Any]) -> str | None:
    return next((name for name in names if name in present), None)


def _query(op: Operation) -> dict[str, Parameter]:
    return {p.name: p for p in op.parameters if p.location == "query"}


def _pagination(op: Operation, schemas: _Schemas) -> Pagination:
    query = _query(op)
    cursor = _first(_CURSOR_PARAMS, query)
    page = _first(_PAGE_PARAMS, query)
    offset = _first(_OFFSET_PARAMS, query)
    limit = _first(_LIMIT_PARAMS, query)
    style: PaginationStyle = (
        "cursor" if cursor else "page" if page else "offset" if offset else "none"
    )
    default, maximum = _limits(query[limit].schema if limit else None, schemas)
    return Pagination(style, cursor, limit, page, offset, default, maximum)


def _limits(schema: Schema | None, schemas: _Schemas) -> tuple[int, int]:
    raw = schemas.unwrap(schemas.of(schema)).raw if schema is not None else {}
    maximum = _positive(raw.get("maximum"))
    default = _positive(raw.get("default")) or min(20, maximum or 20)
    return default, maximum or max(100, default)


def _positive(value: Any) -> int | None:
    return value if _is_int(value) and value > 0 else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _paging_hints(props: Mapping[str, Any], op: Operation) -> bool:
    fields = (*_NEXT_FIELDS, *_HAS_MORE_FIELDS, *_TOTAL_FIELDS)
    params = (*_CURSOR_PARAMS, *_PAGE_PARAMS, *_OFFSET_PARAMS)
    return _first(fields, props) is not None or _first(params, _query(op)) is not None


# -- records: ids, server-set fields, parents, filters ----------------------------------------

_CREATED = frozenset(
    {
        "createdat",
        "created",
        "creationdate",
        "createdon",
        "datecreated",
        "createddate",
        "createdtime",
        "createtime",
        "creationtime",
        "insertedat",
        "createddatetime",
    }
)
_UPDATED = frozenset(
    {
        "updatedat",
        "updated",
        "modifiedat",
        "modified",
        "lastmodified",
        "lastmodifiedat",
        "updatedon",
        "modifiedon",
        "datemodified",
        "updateddate",
        "modifieddate",
        "lastmodifieddate",
        "updatedtime",
        "updatetime",
        "lastupdated",
        "lastupdatedat",
        "updateddatetime",
    }
)
_GENERIC_PARAMS = frozenset(("id", "key", "name", "uuid"))
_NATURAL_KEYS = ("slug", "login", "name")
_ID_LIKE = re.compile(r"(^|[a-z0-9_])(id|Id|ID|uuid|Uuid)$")


def _id_field(
    props: Mapping[str, _Node], one: str, param: Parameter | None, schemas: _Schemas
) -> str:
    """The record property the item path parameter holds."""
    # `{repo}` (a string) is not the integer `id`; `{petId}` is, whatever type it declares.
    wanted: set[str] = set()
    if param is not None and param.schema is not None and not _ID_LIKE.search(param.name):
        wanted = schemas.value_types(param.schema)

    def fits(name: str) -> bool:
        node = props.get(name)
        return node is not None and schemas.scalar(node) and _compatible(wanted, node, schemas)

    found = next((n for n in _id_names(one, param.name if param else None) if fits(n)), None)
    if found is None and wanted:  # `{repo}` is a string, `id` an integer: a natural key
        found = next((n for n in _NATURAL_KEYS if fits(n)), None)
    return found or "id"


def _id_names(one: str, param: str | None) -> list[str]:
    names: list[str] = []
    if param:
        names.append(param)  # the path is keyed by this very field (`{username}`)
        if _snake(param).endswith("_number"):
            names.append("number")  # `{issue_number}`
    names += ["id", f"{_camel(one)}Id", f"{_snake(one)}_id"]
    if param:
        names += _spellings(param)
    return [*names, "uuid", "key"]


def _compatible(wanted: set[str], node: _Node, schemas: _Schemas) -> bool:
    """Whether the property may hold the path value (unknown types fit anything)."""
    found = _types(schemas.unwrap(node).raw)
    widen = ({"integer", "number"} if "integer" in wanted else set()) | wanted
    return not wanted or not found or bool(found & widen)


def _timestamp(name: str, node: _Node, schemas: _Schemas) -> str | None:
    """ "created" or "updated" for timestamp fields (dates, date-times, epoch numbers)."""
    key = name.lower().replace("_", "").replace("-", "")
    kind = "created" if key in _CREATED else "updated" if key in _UPDATED else None
    if kind is None:
        return None
    raw = schemas.unwrap(node).raw
    types = _types(raw)
    dated = raw.get("format") in ("date-time", "date") and types <= {"string"}
    return kind if dated or (types and types <= {"integer", "number"}) else None


def _server_fields(
    props: Mapping[str, _Node], id_field: str, stamps: Mapping[str, str]
) -> tuple[str, ...]:
    fields = [id_field] if id_field in props else []
    for name, node in props.items():
        if node.raw.get("readOnly") is True or name in stamps or "default" in node.raw:
            fields.append(name)
    return tuple(dict.fromkeys(fields))


def _parent_field(draft: _Draft, props: Mapping[str, _Node], schemas: _Schemas) -> str | None:
    names: list[str] = []
    param = draft.parent_param
    if param and param not in _GENERIC_PARAMS:  # `{id}` names the parent, not its field
        names += _spellings(param)
    if draft.parent is not None:
        one = singular(draft.parent.plain)
        names += [f"{_snake(one)}_id", f"{_camel(one)}Id"]
    return next((n for n in names if n in props and schemas.scalar(props[n])), None)


def _filters(op: Operation, props: Mapping[str, _Node], schemas: _Schemas) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, param in _query(op).items():
        if name in _NOT_FILTERS:
            continue
        field_name = next((n for n in _spellings(name) if n in props), None)
        if field_name is None and _is_array(param):
            # `?tags=dog&tags=cat` filters the singular `tag` field: any of the values.
            field_name = next((n for n in _spellings(singular(name)) if n in props), None)
        if field_name is not None and schemas.scalar(props[field_name]):
            found[name] = field_name
    return found


def _is_array(param: Parameter) -> bool:
    raw = param.schema.raw if param.schema is not None else None
    return isinstance(raw, dict) and raw.get("type") == "array"


class _Recursive(Exception):
    pass


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its `#/$defs/...` references replaced by their targets."""
    try:
        result = _inline_value(schema, schema.get("$defs", {}), ())
    except _Recursive:
        return schema  # a recursive schema keeps its $defs
    return result if isinstance(result, dict) else schema


def _inline_value(value: Any, defs: Mapping[str, Any], chain: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        return [_inline_value(v, defs, chain) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _inline_value(v, defs, chain) for k, v in value.items() if k != "$defs"}
    ref = value.get("$ref")
    key = ref[len("#/$defs/") :] if isinstance(ref, str) and ref.startswith("#/$defs/") else ""
    if key not in defs:
        return out
    if key in chain:
        raise _Recursive
    del out["$ref"]
    return {**_inline_value(defs[key], defs, (*chain, key)), **out}


# -- inference --------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Draft:
    """A resource being inferred; it becomes a Resource once names and overrides are settled."""

    plain: str  # last literal segment: the name unless it clashes
    chain: tuple[str, ...]  # literal segments of its path, to qualify a clashing name
    kind: Literal["collection", "singleton"]
    collection_path: str | None
    item_path: str | None
    rank: int  # where the spec first mentions it
    id_param: str | None = None
    parent: _Draft | None = None
    parent_param: str | None = None
    ops: dict[str, Operation] = field(default_factory=dict)  # role or "action:<name>" -> op
    name: str = ""


@dataclass(frozen=True, slots=True)
class _Record:
    schema: Schema | None = None
    props: Mapping[str, _Node] = field(default_factory=dict)


class _Inference:
    """Finds resources in paths and methods, then reads their records' schemas."""

    def __init__(self, spec: Spec) -> None:
        self.schemas = _Schemas()
        self.paths = _by_path(spec)
        self.shapes: dict[str, dict[str, Operation]] = {}  # methods of paths alike but for names
        for path, methods in self.paths.items():
            merged = self.shapes.setdefault(_shape(_segments(path)), {})
            merged.update({m: op for m, op in methods.items() if m not in merged})
        self.order: dict[str, int] = {}  # shape of every path prefix -> first path under it
        self.real: dict[str, list[str]] = {}  # shape -> segments as first written
        for index, path in enumerate(self.paths):
            segments = _segments(path)
            shape = ""
            for end, segment in enumerate(segments, 1):
                shape += "/{}" if _param(segment) else f"/{segment}"
                if shape not in self.order:
                    self.order[shape] = index
                    self.real[shape] = segments[:end]
        self.items: dict[str, _Draft] = {}  # item path shape -> draft
        self.collections: dict[str, _Draft] = {}  # collection path shape -> draft
        self.others: list[_Draft] = []  # singletons and collections without an item path
        self.views: list[tuple[_Draft, str, dict[str, Operation]]] = []
        self._subschemas: dict[str, Schema] = {}

    # -- structure ----------------------------------------------------------------------------

    def drafts(self) -> list[_Draft]:
        self._find_items()
        for path, methods in self.paths.items():
            segments = _segments(path)
            shape = _shape(segments)
            if shape in self.items:
                self._item_ops(self.items[shape], methods)
            elif shape in self.collections:
                self._assign_all(self.collections[shape], methods, _COLLECTION_ROLES)
            elif segments and _param(segments[-1]) is None:
                self._literal(path, segments, methods)
        self._resolve_views()
        drafts = _prune(sorted([*self.items.values(), *self.others], key=lambda d: d.rank), self)
        _name(drafts)
        return drafts

    def _find_items(self) -> None:
        ends = [s for s in self.order if s.endswith("/{}") and _literals(self.real[s][:-1])]
        deeper = {s[:-3] for s in ends if s[:-3].endswith("/{}")}
        for shape in ends:
            if shape not in deeper or not self._scope(shape):
                self._new_item(shape)
        for draft in self.items.values():
            self._link_parent(draft, _segments(draft.collection_path or ""))

    def _scope(self, shape: str) -> bool:
        """Whether `/repos/{owner}` (before `/repos/{owner}/{repo}`) is a collection scoped by
        owner; it is an item when it answers one record (`/orgs/{org}`, `/orgs/{org}/{x}`)."""
        methods = self.shapes.get(shape)
        get = methods.get("get") if methods else None
        schema = _response_schema(get)
        if get is None or schema is None:
            return not methods
        return self._listy(self.schemas.of(schema), "", get)

    def _new_item(self, shape: str) -> None:
        segments = self.real[shape]
        chain = _literals(segments[:-1])
        collection = _shape(segments[:-1])
        draft = _Draft(
            plain=chain[-1],
            chain=chain,
            kind="collection",
            collection_path=_join(segments[:-1]),
            item_path=_join(segments),
            rank=min(self.order[shape], self.order[collection]),
            id_param=_param(segments[-1]),
        )
        self.items[shape] = draft
        self.collections[collection] = draft

    def _link_parent(self, draft: _Draft, segments: list[str]) -> None:
        """The parent is the resource whose item path ends at the last parameter before ours."""
        index = _last_param(segments)
        if index < 0:
            return
        draft.parent_param = _param(segments[index])
        draft.parent = self.items.get(_shape(segments[: index + 1]))
        if draft.parent is None:  # a scope parameter: the resource keyed by that name, if one
            keyed = [d for d in self.items.values() if d.id_param == draft.parent_param]
            draft.parent = keyed[0] if len(keyed) == 1 and keyed[0] is not draft else None

    def _item_ops(self, draft: _Draft, methods: Mapping[str, Operation]) -> None:
        self._assign_all(draft, methods, _ITEM_ROLES)
        if "post" in methods and "patch" not in methods:
            draft.ops.setdefault("update", methods["post"])  # POST /things/{id} updates (Stripe)

    def _assign_all(
        self, draft: _Draft, methods: Mapping[str, Operation], roles: Mapping[str, Role]
    ) -> None:
        for method, op in methods.items():
            if method in roles:
                draft.ops.setdefault(roles[method], op)

    def _literal(self, path: str, segments: list[str], methods: dict[str, Operation]) -> None:
        """A path ending in a literal that is not a collection: action, singleton or list."""
        index = _last_param(segments)
        owner = self.items.get(_shape(segments[: index + 1])) if index >= 0 else None
        tail = _literals(segments[index + 1 :])
        if not tail:  # `GET /v1`
            return
        if owner is not None and len(tail) == 1 and set(methods) == {"post"}:
            owner.ops.setdefault(f"action:{tail[0]}", methods["post"])
        elif "get" in methods:
            self._literal_get(path, segments, methods, anchored=index >= 0)
        elif owner is not None and len(tail) == 1 and methods.keys() & {"put", "patch"}:
            self._add(path, "singleton", methods)
        elif index < 0 and len(tail) == 1 and self._creates(methods.get("post")):
            self._add(path, "collection", methods)

    def _literal_get(
        self, path: str, segments: list[str], methods: dict[str, Operation], anchored: bool
    ) -> None:
        get = methods["get"]
        schema = _response_schema(get)
        if schema is None:
            return
        node = self.schemas.of(schema)
        if self._listy(node, segments[-1], get):
            under = self.collections.get(_shape(segments[:-1]))
            if under is not None:  # `/pets/findByStatus`: maybe a view of the same records
                self.views.append((under, path, methods))
            else:
                self._add(path, "collection", methods)
        elif self.schemas.kind(node) == "object" and _plain_read(get, anchored):
            self._add(path, "singleton", methods)

    def _creates(self, post: Operation | None) -> bool:
        """A top-level POST with a JSON body that answers a record (not `/search`, not a form)."""
        if post is None or _body_schema(post) is None:
            return False
        answer = _response_schema(post)
        return answer is None or not self._listy(self.schemas.of(answer), "", post)

    def _listy(self, node: _Node, plain: str, op: Operation) -> bool:
        kind = self.schemas.kind(node)
        if kind == "array":
            return self.schemas.holds_records(node)
        props = self.schemas.properties(node)
        hinted = len(props) == 1 or _paging_hints(props, op)
        return self._list_field(props, plain, strict=True, hinted=hinted) is not None

    def _list_field(
        self, props: Mapping[str, _Node], plain: str, *, strict: bool, hinted: bool = True
    ) -> str | None:
        arrays = {n: p for n, p in props.items() if self.schemas.kind(p) == "array"}
        records = [n for n, p in arrays.items() if self.schemas.holds_records(p)]
        for name in (*_LIST_FIELDS, *_spellings(plain)):
            if name in (records if strict else arrays):
                return name
        if len(records) == 1 and hinted:
            return records[0]
        return next(iter(arrays)) if len(arrays) == 1 and not strict else None

    def _add(
        self, path: str, kind: Literal["collection", "singleton"], methods: dict[str, Operation]
    ) -> None:
        segments = _segments(path)
        chain = _literals(segments)
        draft = _Draft(
            plain=chain[-1],
            chain=chain,
            kind=kind,
            collection_path=path if kind == "collection" else None,
            item_path=path if kind == "singleton" else None,
            rank=self.order[_shape(segments)],
        )
        self._link_parent(draft, segments)
        self._assign_all(draft, methods, _COLLECTION_ROLES if kind == "collection" else _ITEM_ROLES)
        self.others.append(draft)

    def _resolve_views(self) -> None:
        for draft, path, methods in self.views:
            listed = self.listed(methods["get"], _segments(path)[-1])
            record = self.record(draft).schema
            same = listed is not None and record is not None and self._same(listed, record)
            if not same:
                self._add(path, "collection", methods)
            elif "list" not in draft.ops:
                draft.ops["list"] = methods["get"]  # else a second view of the records: no role

    def _same(self, one: Schema, other: Schema) -> bool:
        return self.schemas.of(one).address == self.schemas.of(other).address

    # -- records ------------------------------------------------------------------------------

    def record(self, draft: _Draft) -> _Record:
        schema = next((s for s in self._record_schemas(draft) if s is not None), None)
        if schema is None:
            return _Record()
        return _Record(schema, self.schemas.properties(self.schemas.of(schema)))

    def _record_schemas(self, draft: _Draft) -> Iterator[Schema | None]:
        """Where the record's schema may be found, best first (evaluated lazily)."""
        ops = draft.ops
        yield self._object(_response_schema(ops.get("read")))
        yield self._object(_response_schema(ops.get("create")))
        yield self.listed(ops.get("list"), draft.plain)
        yield self._object(_response_schema(ops.get("replace")))
        yield self._object(_response_schema(ops.get("update")))
        yield _body_schema(ops.get("create"))
        yield _body_schema(ops.get("replace"))

    def _object(self, schema: Schema | None) -> Schema | None:
        # Some specs answer a read with the list schema (a spec bug): not the record.
        if schema is None or self.schemas.kind(self.schemas.of(schema)) in ("scalar", "array"):
            return None
        return schema

    def listed(self, op: Operation | None, plain: str) -> Schema | None:
        """The schema of the records a list operation answers."""
        schema = _response_schema(op)
        if schema is None:
            return None
        node = self.schemas.of(schema)
        items = self._list_items(node, plain)
        if items is None:
            return None
        if items.address not in self._subschemas:
            sub = Schema(_compiler(schema), items.address, items.raw, "response")
            self._subschemas[items.address] = sub
        return self._subschemas[items.address]

    def _list_items(self, node: _Node, plain: str) -> _Node | None:
        if self.schemas.kind(node) == "array":
            return self.schemas.items(node)
        props = self.schemas.properties(node)
        name = self._list_field(props, plain, strict=False)
        return self.schemas.items(props[name]) if name else None

    def holds_values(self, draft: _Draft) -> bool:
        """Whether the records are plain values (`/board/{row}/{column}` answers a mark)."""
        schema = _response_schema(draft.ops.get("read"))
        return schema is not None and self.schemas.kind(self.schemas.of(schema)) == "scalar"

    # -- resources ----------------------------------------------------------------------------

    def resource(self, draft: _Draft, given: Mapping[str, Any]) -> Resource:
        record = self.record(draft)
        props = record.props
        one = draft.plain if draft.kind == "singleton" else singular(draft.plain)
        id_field = _id_field(props, one, _path_param(draft), self.schemas)
        stamps = {n: k for n, p in props.items() if (k := _timestamp(n, p, self.schemas))}
        self._body_id_writes(draft, id_field)
        lister = draft.ops.get("list")
        resource = Resource(
            name=draft.name,
            singular=one,
            kind=draft.kind,
            collection_path=draft.collection_path,
            item_path=draft.item_path,
            parent=draft.parent.name if draft.parent else None,
            parent_param=draft.parent_param,
            parent_field=_parent_field(draft, props, self.schemas),
            id_param=draft.id_param,
            id_field=id_field,
            id_schema=self._field_schema(record, id_field) or _param_schema(draft),
            schema=record.schema,
            create_schema=_body_schema(draft.ops.get("create")),
            server_fields=_server_fields(props, id_field, stamps),
            timestamp_fields=stamps,
            envelope=self._envelope(lister, draft.plain) if lister else Envelope(),
            pagination=_pagination(lister, self.schemas) if lister else Pagination(),
            filters=_filters(lister, props, self.schemas) if lister else {},
            operations=_ordered(draft.ops),
        )
        return self._corrected(resource, record, given) if given else resource

    def _body_id_writes(self, draft: _Draft, id_field: str) -> None:
        """`PUT /pet` with the pet (id included) in the body replaces that pet; PATCH updates."""
        if draft.kind != "collection" or draft.collection_path is None:
            return
        methods = self.paths.get(draft.collection_path, {})
        for method, role in (("put", "replace"), ("patch", "update")):
            body = _body_schema(methods.get(method))
            if role in draft.ops or body is None:
                continue
            node = self.schemas.of(body)
            if self.schemas.kind(node) == "object" and id_field in self.schemas.properties(node):
                draft.ops[role] = methods[method]

    def _field_schema(self, record: _Record, name: str) -> dict[str, Any] | None:
        """A record property's JSON Schema, self-contained (no `$defs`)."""
        node = record.props.get(name)
        if node is None or record.schema is None:
            return None
        return _inline(Schema(_compiler(record.schema), node.address, node.raw, "response").json)

    def _envelope(self, op: Operation, plain: str) -> Envelope:
        schema = _response_schema(op)
        if schema is None:
            return Envelope()
        node = self.schemas.of(schema)
        if self.schemas.kind(node) == "array":
            return Envelope(schema=schema)
        props = self.schemas.properties(node)
        return Envelope(
            list_field=self._list_field(props, plain, strict=False),
            next_cursor_field=_first(_NEXT_FIELDS, props),
            has_more_field=_first(_HAS_MORE_FIELDS, props),
            total_field=_first(_TOTAL_FIELDS, props),
            schema=schema,
        )

    def _corrected(self, res: Resource, record: _Record, given: Mapping[str, Any]) -> Resource:
        where = f"resources.{res.name}"
        _check_keys(where, given, _RESOURCE_KEYS)
        changes: dict[str, Any] = {}
        if "id_field" in given:
            id_field = _text(given["id_field"], f"{where}.id_field")
            changes["id_field"] = id_field
            changes["id_schema"] = self._field_schema(record, id_field) or res.id_schema
            changes["server_fields"] = tuple(dict.fromkeys((id_field, *res.server_fields)))
        if "id_format" in given:
            changes["id_schema"] = _id_format(given["id_format"], f"{where}.id_format")
        if "parent_field" in given:
            changes["parent_field"] = _optional_text(given["parent_field"], f"{where}.parent_field")
        if "envelope" in given:
            changes["envelope"] = _replaced(res.envelope, given["envelope"], f"{where}.envelope")
        if "pagination" in given:
            changes["pagination"] = _paginated(res.pagination, given["pagination"], where)
        if "filters" in given:
            changes["filters"] = _filtered(res.filters, given["filters"], f"{where}.filters")
        return dataclasses.replace(res, **changes)


def _plain_read(op: Operation, anchored: bool) -> bool:
    """Singletons are read as they are: no required query (none at all at the top level)."""
    query = _query(op).values()
    return not any(p.required for p in query) and (anchored or not query)


def _path_param(draft: _Draft) -> Parameter | None:
    for op in draft.ops.values():
        for param in op.parameters:
            if param.location == "path" and param.name == draft.id_param:
                return param
    return None


def _param_schema(draft: _Draft) -> dict[str, Any]:
    """The item path parameter's schema, for records that do not show their id."""
    param = _path_param(draft)
    if param is None or param.schema is None:
        return {"type": "string"}
    return _inline(param.schema.json)


def _ordered(ops: Mapping[str, Operation]) -> dict[str, str]:
    """Operation ids by role, CRUD roles first in their usual order, then actions."""
    rank = {role: index for index, role in enumerate(_ROLE_ORDER)}
    keys = sorted(ops, key=lambda key: rank.get(key, len(rank)))
    return {key: ops[key].operation_id for key in keys}


def _prune(drafts: list[_Draft], inference: _Inference) -> list[_Draft]:
    """Drops value-only resources, and resources without operations unless they are parents."""
    kept = [d for d in drafts if not inference.holds_values(d)]
    while True:
        parents = {d.parent for d in kept if d.parent is not None}
        still = [d for d in kept if d.ops or d in parents]
        if len(still) == len(kept):
            break
        kept = still
    alive = set(kept)
    for draft in kept:
        if draft.parent is not None and draft.parent not in alive:
            draft.parent = None
    return kept


def _name(drafts: list[_Draft]) -> None:
    """Plain names; clashing ones qualified by the literals before them ("users.repos")."""
    groups: dict[str, list[_Draft]] = {}
    for draft in drafts:
        groups.setdefault(draft.plain, []).append(draft)
    for group in groups.values():
        top = [d for d in group if len(d.chain) == 1]
        for draft in group:
            keeps = len(group) == 1 or (len(top) == 1 and draft is top[0])
            draft.name = draft.plain if keeps else _qualified(draft, group)
    taken: set[str] = set()
    for draft in drafts:
        base, n = draft.name, 2
        while draft.name in taken:
            draft.name, n = f"{base}-{n}", n + 1
        taken.add(draft.name)


def _qualified(draft: _Draft, group: list[_Draft]) -> str:
    others = [d.chain for d in group if d is not draft]
    for size in range(2, len(draft.chain) + 1):
        suffix = draft.chain[-size:]
        if all(chain[-size:] != suffix for chain in others):
            return ".".join(suffix)
    return ".".join(draft.chain)


def _roles(resources: Mapping[str, Resource]) -> dict[str, OperationRole]:
    roles: dict[str, OperationRole] = {}
    for resource in resources.values():
        for key, op_id in resource.operations.items():
            role, _, action = key.partition(":")
            roles[op_id] = OperationRole(resource.name, cast(Role, role), action)
    return roles


# -- overrides (apitwin.yaml) -----------------------------------------------------------------

_RESOURCE_KEYS = (
    "name",
    "id_field",
    "id_format",
    "envelope",
    "pagination",
    "parent_field",
    "filters",
)
_ENVELOPE_KEYS = ("list_field", "next_cursor_field", "has_more_field", "total_field")
_PAGINATION_TEXT = ("cursor_param", "limit_param", "page_param", "offset_param")
_PAGINATION_KEYS = ("style", *_PAGINATION_TEXT, "default_limit", "max_limit")
_OPERATION_KEYS = ("resource", "role", "action")
_ID_FORMATS: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "format": "uuid"},
    "integer": {"type": "integer", "minimum": 1},
    "string": {"type": "string", "minLength": 1},
}


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _check_keys(where: str, given: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in given:
        if key not in allowed:
            raise ValueError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where} must be a non-empty string")
    return value


def _optional_text(value: Any, where: str) -> str | None:
    return None if value is None else _text(value, where)


def _split_overrides(
    overrides: Mapping[str, Any] | None,
    operations: Mapping[str, Any] | None,
    drafts: Mapping[str, _Draft],
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    given = dict(_mapping(overrides, "resources"))
    moves = dict(_mapping(operations, "operations"))
    if "operations" in given and "operations" not in drafts:
        moves = {**_mapping(given.pop("operations"), "operations"), **moves}
    for name in given:
        if name not in drafts:
            known = ", ".join(sorted(drafts)[:40]) + (", ..." if len(drafts) > 40 else "")
            raise ValueError(f"resources: no inferred resource is named {name!r} (found: {known})")
    return given, moves


def _renames(given: Mapping[str, Any], drafts: Mapping[str, _Draft]) -> dict[str, str]:
    renames: dict[str, str] = {}
    for name, entry in given.items():
        where = f"resources.{name}"
        if "name" in _mapping(entry, where):
            renames[name] = _text(entry["name"], f"{where}.name")
    final = [renames.get(name, name) for name in drafts]
    for new in renames.values():
        if final.count(new) > 1:
            raise ValueError(f"resources: the name {new!r} is used by more than one resource")
    return renames


def _rename(resources: Mapping[str, Resource], renames: Mapping[str, str]) -> dict[str, Resource]:
    if not renames:
        return dict(resources)
    result: dict[str, Resource] = {}
    for res in resources.values():
        parent = renames.get(res.parent, res.parent) if res.parent else None
        result[renames.get(res.name, res.name)] = dataclasses.replace(
            res, name=renames.get(res.name, res.name), parent=parent
        )
    return result


def _reassign(
    moves: Mapping[str, Any], drafts: Mapping[str, _Draft], renames: Mapping[str, str], spec: Spec
) -> None:
    """Applies ``operations:``: operationId -> {resource, role, action} (or ``role: none``)."""
    ops = {op.operation_id: op for op in spec.operations}
    inferred = {new: old for old, new in renames.items()}
    for op_id, entry in moves.items():
        where = f"operations.{op_id}"
        entry = _mapping(entry, where)
        _check_keys(where, entry, _OPERATION_KEYS)
        op = ops.get(op_id)
        if op is None:
            raise ValueError(f"{where}: the spec has no operation with this operationId")
        key = _role_key(entry, where)
        for draft in drafts.values():
            draft.ops = {k: o for k, o in draft.ops.items() if o is not op}
        if key is not None:
            name = _text(entry.get("resource"), f"{where}.resource")
            target = drafts.get(inferred.get(name, name))
            if target is None:
                raise ValueError(f"{where}.resource: no resource is named {name!r}")
            target.ops[key] = op


def _role_key(entry: Mapping[str, Any], where: str) -> str | None:
    if "role" not in entry:
        raise ValueError(f"{where}.role is required: a role, or none to leave it unmapped")
    role, action = entry["role"], entry.get("action")
    if role in (None, "none"):
        return None
    if role not in get_args(Role):
        allowed = ", ".join((*get_args(Role), "none"))
        raise ValueError(f"{where}.role: {role!r} is not a role (allowed: {allowed})")
    if role == "action":
        return f"action:{_text(action, f'{where}.action')}"
    if action is not None:
        raise ValueError(f"{where}.action: only operations with role 'action' have one")
    return str(role)


def _id_format(value: Any, where: str) -> dict[str, Any]:
    text = _text(value, where)
    if text in _ID_FORMATS:
        return dict(_ID_FORMATS[text])
    try:
        re.compile(text)
    except re.error as exc:
        formats = ", ".join(_ID_FORMATS)
        raise ValueError(
            f"{where}: {text!r} is neither {formats} nor a valid pattern ({exc})"
        ) from None
    return {"type": "string", "pattern": text}


def _replaced(envelope: Envelope, value: Any, where: str) -> Envelope:
    given = _mapping(value, where)
    _check_keys(where, given, _ENVELOPE_KEYS)
    fields: dict[str, Any] = {k: _optional_text(v, f"{where}.{k}") for k, v in given.items()}
    return dataclasses.replace(envelope, **fields)


def _paginated(pagination: Pagination, value: Any, where: str) -> Pagination:
    where = f"{where}.pagination"
    given = _mapping(value, where)
    _check_keys(where, given, _PAGINATION_KEYS)
    changes: dict[str, Any] = {}
    for key, item in given.items():
        if key == "style" and item not in get_args(PaginationStyle):
            styles = ", ".join(get_args(PaginationStyle))
            raise ValueError(f"{where}.style: {item!r} is not a style (allowed: {styles})")
        if key in ("default_limit", "max_limit") and not (_is_int(item) and item > 0):
            raise ValueError(f"{where}.{key} must be a positive integer")
        text = key in _PAGINATION_TEXT
        changes[key] = _optional_text(item, f"{where}.{key}") if text else item
    return dataclasses.replace(pagination, **changes)


def _filtered(filters: Mapping[str, str], value: Any, where: str) -> dict[str, str]:
    """Given filters are added to the inferred ones; a null field removes one."""
    result = dict(filters)
    for param, field_name in _mapping(value, where).items():
        if field_name is None:
            result.pop(param, None)
        else:
            result[param] = _text(field_name, f"{where}.{param}")
    return result


# -- description ------------------------------------------------------------------------------


def _describe(res: Resource) -> str:
    parts = [_placement(res)]
    if res.kind == "collection":
        key = (
            f"{res.id_param} -> {res.id_field}"
            if res.id_param not in (None, res.id_field)
            else res.id_field
        )
        parts.append(f"id {key}: {_type_text(res.id_schema)}")
    if "list" in res.operations:
        parts.append(_list_text(res))
    if res.filters:
        parts.append("filters: " + ", ".join(res.filters))
    parts.append("ops: " + (", ".join(res.operations) or "none"))
    return f"{res.name} ({'; '.join(parts)})"


def _placement(res: Resource) -> str:
    text: str = res.kind
    if res.parent:
        text += f" under {res.parent}"
        text += f" via {res.parent_param}" if res.parent_param else ""
        text += f" ({res.parent_field})" if res.parent_field else ""
    elif res.parent_param:
        text += f" scoped by {res.parent_param}"
    return text


def _type_text(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "any")
    text = "|".join(map(str, kind)) if isinstance(kind, list) else str(kind)
    return f"{text}/{schema['format']}" if "format" in schema else text


def _list_text(res: Resource) -> str:
    page = res.pagination
    words = [f"list: {res.envelope.list_field or ''}[]"]
    param = {"cursor": page.cursor_param, "page": page.page_param, "offset": page.offset_param}
    if page.style in param:
        words.append(f"{page.style} {param[page.style]!r}")
    if page.limit_param:
        words.append(f"limit {page.limit_param!r}")
    return " ".join(words)
