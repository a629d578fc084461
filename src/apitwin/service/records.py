"""Records: the state of a connection, as a real platform keeps it.

Both sides write here: the system under test through the API (the pipeline's state stage), the
partner side through the control service. Records are stored as the API returns them: on create,
server-set fields (id, timestamps, defaults, the parent's id) are filled and required fields the
request could not carry are generated, so every later read is a complete, schema-valid record.
"""

from __future__ import annotations

import base64
import random
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from apitwin.clock import VirtualClock
from apitwin.errors import ApitwinError, InvalidInputError, NotFoundError
from apitwin.generation import Generator
from apitwin.schemanav import SubValidators, allows_null, deref, keyword, properties
from apitwin.spec.resources import Resource, ResourceMap
from apitwin.state.store import (
    Delete,
    Item,
    Key,
    Merge,
    Op,
    Put,
    Query,
    Require,
    Scope,
    Store,
    StoreError,
    merge_patch,
)

MAX_PAGE = 1000
_ABSENT = object()
_STATUS_FIELDS = ("status", "state")


class ConflictError(ApitwinError):
    kind = "conflict"
    status = 409


class InvalidRecordError(ApitwinError):
    kind = "invalid"
    status = 422


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Item]
    next_cursor: str | None
    has_more: bool
    total: int | None  # None when not asked for (counting costs a scan)


@dataclass(slots=True)
class Change:
    """A record change, for the events it causes (filled in by the webhook layer)."""

    resource: str
    verb: str  # created, updated, deleted, or an action's past tense ("cancelled")
    record: dict[str, Any]
    connection: str


@dataclass(slots=True)
class Records:
    twin: str
    store: Store
    resources: ResourceMap
    generator: Generator
    clock: VirtualClock
    seed: int = 0
    # Extra ops (e.g. webhook outbox rows) to commit in the same batch as a change.
    emit: Any = None
    _counters: dict[tuple[str, str], int] = field(default_factory=dict)
    _checkers: dict[int, SubValidators] = field(default_factory=dict)
    # Per resource, from its schemas (which never change): computed once, not per create.
    _derived: dict[tuple[int, str], tuple[Resource, Any]] = field(default_factory=dict)

    # -- lookups -------------------------------------------------------------------------------

    def resource(self, name: str) -> Resource:
        found = self.resources.resources.get(name)
        if found is None:
            known = ", ".join(sorted(self.resources.resources)) or "none"
            raise NotFoundError(f"no resource {name!r}; known: {known}", field="resource")
        return found

    def scope(self, conn: str, resource: Resource) -> Scope:
        return Scope(self.twin, conn, f"record:{resource.name}")

    def parent_key(self, conn: str, resource: Resource, parent_id: str | None) -> str:
        if resource.parent is None or parent_id is None:
            return ""
        return f"{resource.parent}/{parent_id}"

    async def get(self, conn: str, resource: Resource, record_id: str) -> Item | None:
        return await self.store.get(self.scope(conn, resource).key(record_id))

    async def require(
        self, conn: str, resource: Resource, record_id: str, parent_id: str | None = None
    ) -> Item:
        """The record, which must exist (and, given ``parent_id``, belong to that parent)."""
        item = await self.get(conn, resource, record_id)
        wrong_parent = (
            parent_id is not None
            and resource.parent is not None
            and (item is not None and item.parent != self.parent_key(conn, resource, parent_id))
        )
        if item is None or wrong_parent:
            where = f" under {resource.parent} {parent_id!r}" if wrong_parent else ""
            raise NotFoundError(
                f"no {resource.singular} {record_id!r}{where}", field=resource.id_field
            )
        return item

    async def require_parent(self, conn: str, resource: Resource, parent_id: str | None) -> None:
        """A nested resource's parent must exist (when the twin can know: it has operations)."""
        if parent_id is None or resource.parent is None or not self._parent_known(resource):
            return
        parent = self.resource(resource.parent)
        if await self.get(conn, parent, parent_id) is None:
            raise NotFoundError(f"no {parent.singular} {parent_id!r}", field=parent.id_field)

    # -- list ----------------------------------------------------------------------------------

    async def page(
        self,
        conn: str,
        resource: Resource,
        *,
        parent_id: str | None = None,
        filters: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        count: bool = True,
    ) -> Page:
        limit = max(1, min(limit or resource.pagination.default_limit, MAX_PAGE))
        parent = self.parent_key(conn, resource, parent_id) if parent_id else None
        # A list value (an array query parameter) matches records whose field is any of them.
        given = dict(filters or {})
        equals = {k: v for k, v in given.items() if not isinstance(v, (list, tuple))}
        any_of = {k: tuple(v) for k, v in given.items() if isinstance(v, (list, tuple))}
        scope = self.scope(conn, resource)
        after = decode_cursor(cursor) if cursor else 0
        query = Query(scope, parent, equals, after, offset, limit + 1, any_of=any_of)
        found = await self.store.query(query)
        base = Query(scope, parent=parent, equals=equals, any_of=any_of)
        total = await self.store.count(base) if count else None
        items = found[:limit]
        has_more = len(found) > limit
        next_cursor = encode_cursor(items[-1].seq) if has_more and items else None
        return Page(items, next_cursor, has_more, total)

    # -- writes --------------------------------------------------------------------------------

    async def create(
        self,
        conn: str,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        parent_id: str | None = None,
        complete: bool = False,
        upsert: bool = False,
    ) -> Item:
        """Store a new record; ``complete`` also generates optional fields (control-plane use).

        A caller-chosen id that exists is a conflict, unless ``upsert`` (then it is replaced).
        """
        fields = dict(body)
        if fields.get(resource.id_field) in (None, ""):
            fields[resource.id_field] = await self.next_id(conn, resource)
        record = self.build(resource, fields, parent_id, complete)
        record_id = str(record[resource.id_field])
        ops: list[Op] = []
        if resource.parent and parent_id is not None and self._parent_known(resource):
            parent = self.resource(resource.parent)
            ops.append(Require(self.scope(conn, parent).key(parent_id)))
        key = self.scope(conn, resource).key(record_id)
        expect = None if upsert else "absent"
        parent_key = self.parent_key(conn, resource, parent_id)
        ops.append(Put(key, record, parent_key, expect=expect, now=self.clock.now()))
        return await self._commit(ops, Change(resource.name, "created", record, conn), key)

    async def replace(
        self,
        conn: str,
        resource: Resource,
        record_id: str,
        body: Mapping[str, Any],
        *,
        expect: int | None = None,
    ) -> Item:
        """``expect``: the version the caller read (If-Match); a change since is a conflict."""
        current = await self.require(conn, resource, record_id)
        kept = {k: v for k, v in current.data.items() if k in resource.server_fields}
        record = self.fill_required(resource, {**dict(body), **kept, **self.touched(resource)})
        key = self.scope(conn, resource).key(record_id)
        version = current.version if expect is None else expect
        op = Put(key, record, current.parent, expect=version, now=self.clock.now())
        return await self._commit([op], Change(resource.name, "updated", record, conn), key)

    async def update(
        self,
        conn: str,
        resource: Resource,
        record_id: str,
        patch: Mapping[str, Any],
        verb: str = "updated",
        *,
        expect: int | None = None,
    ) -> Item:
        current = await self.require(conn, resource, record_id)
        protected = {resource.id_field, resource.parent_field or resource.id_field}
        clean = {k: v for k, v in patch.items() if k not in protected}
        clean.update(self.touched(resource))
        nulls = tuple(k for k, v in clean.items() if v is None and self._nullable(resource, k))
        record = {**merge_patch(current.data, clean), **dict.fromkeys(nulls)}
        key = self.scope(conn, resource).key(record_id)
        # The store applies the merge atomically: concurrent changes to different fields all
        # land. A null clears a nullable field rather than removing it.
        op = Merge(key, clean, expect=expect, now=self.clock.now(), set_null=nulls)
        return await self._commit([op], Change(resource.name, verb, record, conn), key)

    async def delete(
        self, conn: str, resource: Resource, record_id: str, *, expect: int | None = None
    ) -> dict[str, Any]:
        current = await self.require(conn, resource, record_id)
        key = self.scope(conn, resource).key(record_id)
        ops: list[Op] = [Delete(key)]
        if expect is not None:
            # A delete carries no version check of its own: an empty merge in the same batch
            # does (the batch is atomic, so the merge never outlives the delete).
            ops.insert(0, Merge(key, {}, expect=expect, now=self.clock.now()))
        await self._commit(ops, Change(resource.name, "deleted", current.data, conn), None)
        return current.data

    async def action(
        self,
        conn: str,
        resource: Resource,
        record_id: str,
        action: str,
        body: Mapping[str, Any] | None,
    ) -> Item:
        """A non-CRUD action (`cancel`, `shortlist`): moves the status and keeps the details."""
        current = await self.require(conn, resource, record_id)
        patch = self.action_patch(resource, current.data, action, dict(body or {}))
        return await self.update(conn, resource, record_id, patch, verb=past_tense(action))

    async def _commit(self, ops: list[Op], change: Change, key: Key | None) -> Item:
        events: list[Op] = []
        if self.emit is not None:
            events = await self.emit(change)
        try:
            results = await self.store.write([*ops, *events])
        except StoreError as exc:
            raise _translate(exc) from None
        if events:
            self.emit.outbox.committed(results[len(ops) :])
        ops = [*ops, *events]
        if key is None:
            return Item(Key(self.twin, change.connection, "", ""), change.record)
        index = next(i for i, op in enumerate(ops) if getattr(op, "key", None) == key)
        item = results[index]
        assert item is not None
        return item

    def _parent_known(self, resource: Resource) -> bool:
        parent = self.resources.resources.get(resource.parent or "")
        return parent is not None and bool(parent.operations)

    # -- building records ----------------------------------------------------------------------

    def build(
        self, resource: Resource, body: dict[str, Any], parent_id: str | None, complete: bool
    ) -> dict[str, Any]:
        # The partner side (fixtures, control plane) may set server fields; the API caller may not.
        record = (
            dict(body)
            if complete
            else {k: v for k, v in body.items() if k not in self._read_only(resource)}
        )
        if record.get(resource.id_field) in (None, ""):
            record[resource.id_field] = self.new_id(resource)
        if resource.parent_field and parent_id is not None:
            record[resource.parent_field] = self._parent_value(resource, parent_id)
        now = self.clock.now()
        for name in resource.timestamp_fields:
            record.setdefault(name, self._time_value(resource, name, now))
        for name, value in self._defaults(resource).items():
            record.setdefault(name, value)
        return self.fill_required(resource, record, complete)

    def _derive(self, resource: Resource, what: str, compute: Callable[[Resource], T]) -> T:
        key = (id(resource), what)
        cached = self._derived.get(key)
        if cached is None or cached[0] is not resource:
            cached = self._derived[key] = (resource, compute(resource))
        return cast("T", cached[1])

    def _defaults(self, resource: Resource) -> dict[str, Any]:
        return self._derive(resource, "defaults", self._find_defaults)

    def _find_defaults(self, resource: Resource) -> dict[str, Any]:
        """Declared defaults: the create body's first (what the caller omitted), then the record's;
        server-set fields that may be null start as null."""
        found: dict[str, Any] = {}
        for schema in (resource.create_schema, resource.schema):
            if schema is None:
                continue
            root = schema.json
            for name, prop in properties(root, root).items():
                value = keyword(root, prop, "default", _ABSENT)
                if value is not _ABSENT:
                    found.setdefault(name, value)
        for name in self._read_only(resource):
            if self._nullable(resource, name):
                found.setdefault(name, None)
        return found

    def fill_required(
        self, resource: Resource, record: dict[str, Any], complete: bool = False
    ) -> dict[str, Any]:
        """Generate what the record schema requires (or, with ``complete``, all of it)."""
        if resource.schema is None:
            return record
        root = resource.schema.json
        checker = self._checker(root)
        if checker.is_valid((), record) and not complete:
            return record
        rng = random.Random(f"{self.seed}:{resource.name}:{record.get(resource.id_field)}")
        generated = self.generator.generate(root, rng=rng)
        if not isinstance(generated, dict):
            return record
        required = set(deref(root, root).get("required", ())) if isinstance(root, dict) else set()
        extra = generated if complete else {k: v for k, v in generated.items() if k in required}
        merged = {**extra, **record}
        if checker.is_valid((), merged):
            return merged
        # Keep what validates of the given fields; generated values fill the rest.
        for name in list(record):
            candidate = {**merged, name: generated.get(name)} if name in generated else merged
            if not checker.is_valid((), merged) and checker.is_valid((), candidate):
                merged = candidate
        return merged

    async def next_id(self, conn: str, resource: Resource) -> Any:
        """A fresh id in the id's own format; integer ids continue after the highest stored."""
        if not _is_integer(resource.id_schema or {}):
            return self.new_id(resource)
        counter = (conn, resource.name)
        if counter not in self._counters:
            newest = await self.store.query(
                Query(self.scope(conn, resource), limit=100, descending=True)
            )
            ids = [int(i.key.id) for i in newest if i.key.id.lstrip("-").isdigit()]
            low = (resource.id_schema or {}).get("minimum")
            # int64 formats bring a huge negative minimum; ids start at 1 unless told otherwise.
            start = int(low) if isinstance(low, (int, float)) and low > 1 else 1
            self._counters[counter] = max([start - 1, *ids])
        for _ in range(1000):
            self._counters[counter] += 1
            candidate = self._counters[counter]
            if await self.get(conn, resource, str(candidate)) is None:
                return candidate
        return self.new_id(resource)

    def new_id(self, resource: Resource) -> Any:
        schema = resource.id_schema or {}
        if schema.get("format") == "uuid":
            return str(uuid.uuid4())
        if "pattern" in schema or "enum" in schema or "format" in schema:
            rng = random.Random(uuid.uuid4().int)
            return self.generator.generate(schema, rng=rng, use_examples=False)
        prefix = re.sub(r"[^a-z]", "", resource.singular.lower())[:4] or "id"
        return f"{prefix}_{base64.b32encode(uuid.uuid4().bytes).decode().lower().rstrip('=')[:16]}"

    def action_patch(
        self, resource: Resource, record: dict[str, Any], action: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        props = self._props(resource)
        patch: dict[str, Any] = {}
        for name in _STATUS_FIELDS:
            status = _status_for(action, props.get(name), self._root(resource))
            if status is not None:
                patch[name] = status
                break
        for key, value in body.items():
            target = _field_for(key, props)
            if target is not None:
                patch[target] = value
        return patch

    def touched(self, resource: Resource) -> dict[str, Any]:
        """The record's `updated` timestamps, set to now."""
        now = self.clock.now()
        return {
            name: self._time_value(resource, name, now)
            for name, kind in resource.timestamp_fields.items()
            if kind == "updated"
        }

    def _time_value(self, resource: Resource, name: str, now: float) -> Any:
        prop = deref(self._root(resource), self._props(resource).get(name, {}))
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind == "integer" or (isinstance(kind, list) and "integer" in kind):
            return int(now)
        if isinstance(prop, dict) and prop.get("format") == "date":
            return self.clock.date(now)
        return self.clock.iso(now)

    def _parent_value(self, resource: Resource, parent_id: str) -> Any:
        prop = deref(self._root(resource), self._props(resource).get(resource.parent_field or ""))
        kind = prop.get("type") if isinstance(prop, dict) else None
        if kind == "integer" and parent_id.lstrip("-").isdigit():
            return int(parent_id)
        return parent_id

    def _nullable(self, resource: Resource, name: str) -> bool:
        return allows_null(self._root(resource), self._props(resource).get(name))

    def _read_only(self, resource: Resource) -> frozenset[str]:
        return self._derive(resource, "read_only", self._find_read_only)

    def _find_read_only(self, resource: Resource) -> frozenset[str]:
        root = self._root(resource)
        return frozenset(
            name for name, prop in self._props(resource).items() if keyword(root, prop, "readOnly")
        )

    def _props(self, resource: Resource) -> dict[str, Any]:
        root = self._root(resource)
        return properties(root, root) if root else {}

    def _root(self, resource: Resource) -> dict[str, Any]:
        return resource.schema.json if resource.schema is not None else {}

    def _checker(self, root: dict[str, Any]) -> SubValidators:
        found = self._checkers.get(id(root))
        if found is None or found.root is not root:
            found = self._checkers[id(root)] = SubValidators(root)
        return found


def _is_integer(schema: Mapping[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "integer" or (isinstance(kind, list) and "integer" in kind)


def past_tense(action: str) -> str:
    word = action.lower().replace("-", "_")
    irregular = {"withdraw": "withdrawn", "send": "sent", "pay": "paid", "begin": "begun"}
    if word in irregular:
        return irregular[word]
    if word.endswith("e"):
        return word + "d"
    if word.endswith("cel"):
        return word + "led"
    if re.search(r"[^aeiou][aeiou][bdgmnpt]$", word) and len(word) <= 4:
        return word + word[-1] + "ed"
    return word + "ed"


def _status_for(action: str, prop: Any, root: dict[str, Any]) -> str | None:
    node = deref(root, prop) if prop is not None else None
    values = node.get("enum") if isinstance(node, dict) else None
    if not isinstance(values, list):
        return None
    wanted = {
        past_tense(action),
        action,
        action + "ed",
        action + "d",
        action.rstrip("e") + "ing",
        past_tense(action).replace("ll", "l"),
    }
    for value in values:
        if isinstance(value, str) and value.lower() in wanted:
            return value
    return None


def _field_for(key: str, props: Mapping[str, Any]) -> str | None:
    if key in props:
        return key
    suffixes = (f"_{key}", key[:1].upper() + key[1:])
    matches = [name for name in props if name.endswith(suffixes)]
    return matches[0] if len(matches) == 1 else None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def is_cursor(cursor: str) -> bool:
    try:
        decode_cursor(cursor)
    except InvalidInputError:
        return False
    return True


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if text.startswith("s") and text[1:].isdigit():
            return int(text[1:])
    except (ValueError, UnicodeDecodeError):
        pass
    raise InvalidInputError(f"cursor {cursor!r} is not one this twin issued", field="cursor")


def _translate(exc: StoreError) -> ApitwinError:
    if exc.reason == "missing":
        kind = exc.key.kind.removeprefix("record:")
        return NotFoundError(f"no {kind} {exc.key.id!r}")
    if exc.reason == "exists":
        return ConflictError(f"a record with id {exc.key.id!r} already exists")
    return ConflictError(f"the record {exc.key.id!r} changed meanwhile; read it again and retry")


def ids_of(items: Sequence[Item]) -> list[str]:
    return [item.key.id for item in items]
