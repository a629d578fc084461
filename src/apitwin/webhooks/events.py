"""The event catalogue: which events a twin sends, what their payloads hold, where callbacks go.

Events come from OpenAPI 3.1 ``webhooks`` (named by their key), 3.0 ``callbacks`` (named
``<operationId>.<callbackName>``, keeping the runtime expression of the target URL) and the
config's ``events:`` section. Each is linked to the resource and verb it reports on, by name
(``project.created``) or by its payload embedding the resource's record schema.

Payload schemas are read in the producer's direction ("response"): the twin writes the payload, so
``readOnly`` fields (ids, timestamps) belong in it.
"""

from __future__ import annotations

import asyncio
import copy
import random
import re
import string
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

import jsonschema_rs
import orjson

from apitwin.clock import VirtualClock
from apitwin.errors import ConfigError
from apitwin.generation import GenerationError, Generator
from apitwin.spec.model import Operation, Schema, Spec
from apitwin.spec.refs import DocumentRegistry
from apitwin.spec.resources import ResourceMap
from apitwin.spec.schemas import SchemaCompiler
from apitwin.state.store import merge_patch
from apitwin.validation import FORMATS, validator

__all__ = [
    "EventSource",
    "EventType",
    "RequestContext",
    "build_payload",
    "callback_url",
    "catalogue",
    "evaluate",
    "events_for",
    "new_event_id",
]

EventSource = Literal["webhook", "callback", "config"]

_DEFS: Final = "#/$defs/"
_MAX_DEPTH: Final = 4
_MAX_REPAIRS: Final = 64
_ID_CHARS: Final = string.ascii_letters + string.digits
_CONFIG_KEYS: Final = ("schema", "resource", "verb")
_VERBS: Final = {
    "new": "created",
    "create": "created",
    "add": "created",
    "added": "created",
    "update": "updated",
    "change": "updated",
    "changed": "updated",
    "modified": "updated",
    "delete": "deleted",
    "remove": "deleted",
    "removed": "deleted",
    "destroyed": "deleted",
}
_ROLE_VERBS: Final = {
    "create": "created",
    "update": "updated",
    "replace": "updated",
    "delete": "deleted",
}
_ID_FIELDS: Final = ("id", "event_id", "eventId")
_TYPE_FIELDS: Final = ("type", "event", "event_type", "eventType", "topic")
_TIME_FIELDS: Final = (
    "created",
    "created_at",
    "createdAt",
    "timestamp",
    "occurred_at",
    "occurredAt",
    "event_time",
    "eventTime",
    "sent_at",
    "sentAt",
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    schema: Schema | None  # the payload's schema (producer direction); None: free-form
    source: EventSource
    resource: str | None = None
    verb: str | None = None
    operation: Operation | None = None  # the webhook or callback operation
    expression: str | None = None  # callbacks: the target URL's runtime expression
    record_path: tuple[str, ...] | None = None  # where the record sits in the payload
    method: str = "post"


# -- the catalogue ----------------------------------------------------------------------------


def catalogue(
    spec: Spec, resources: ResourceMap | None = None, configured: Mapping[str, Any] | None = None
) -> dict[str, EventType]:
    """Every event ``spec`` (and the config's ``events:`` mapping) declares, by name."""
    found: dict[str, EventType] = {}
    for _ in cataloguing(found, spec, resources, configured):
        pass
    return found


def cataloguing(
    found: dict[str, EventType],
    spec: Spec,
    resources: ResourceMap | None = None,
    configured: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """``catalogue`` in steps: fills ``found``, pausing after each webhook and operation."""
    index = _ResourceIndex(resources)
    yield from index.building()
    for webhook in spec.webhooks:
        if webhook.name not in found or webhook.operation.method == "post":
            found[webhook.name] = _from_webhook(webhook.name, webhook.operation, index)
        yield
    for op in spec.operations:
        for event in _from_callbacks(op, index, resources):
            name, n = event.name, 2
            while event.name in found:
                event = replace(event, name=f"{name}.{n}")
                n += 1
            found[event.name] = event
        if op.callbacks:
            yield
    for name, entry in (configured or {}).items():
        found[str(name)] = _from_config(str(name), entry, found.get(str(name)), spec, index)


class Catalogue(Mapping[str, EventType]):
    """A twin's events, built on first use: a big spec's take about a second (GitHub's 270
    webhooks), which start-up need not wait for. ``warm`` builds them ahead a step at a time,
    letting requests run in between; a use before it is done finishes the build at once."""

    def __init__(
        self,
        spec: Spec,
        resources: ResourceMap | None = None,
        configured: Mapping[str, Any] | None = None,
    ) -> None:
        self._found: dict[str, EventType] = {}
        self._steps: Iterator[None] | None = cataloguing(self._found, spec, resources, configured)
        self._lock = threading.Lock()
        self._error: Exception | None = None

    async def warm(self, *, after: float = 0.0) -> None:
        """Build the rest a step at a time, starting ``after`` seconds from now."""
        await asyncio.sleep(after)
        while self._advance(whole=False):
            await asyncio.sleep(0)

    def _all(self) -> dict[str, EventType]:
        if self._steps is not None:
            self._advance(whole=True)
        return self._found

    def _advance(self, *, whole: bool) -> bool:
        """One step of the build (or all that is left); False once it is complete. An error
        stays: every later use raises it rather than serve a partial catalogue."""
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._steps is None:
                return False
            try:
                for _ in self._steps:
                    if not whole:
                        return True
            except Exception as exc:
                self._error = exc
                raise
            self._steps = None
            return False

    def __getitem__(self, name: str) -> EventType:
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def events_for(events: Mapping[str, EventType], resource: str, verb: str) -> list[EventType]:
    """The events a record change (resource, verb) causes."""
    return [e for e in events.values() if e.resource == resource and e.verb == verb]


def _from_webhook(name: str, op: Operation, index: _ResourceIndex) -> EventType:
    schema = _producer(_body_schema(op))
    resource, verb = index.link_name(name)
    event = EventType(name, schema, "webhook", resource, verb, op, method=op.method)
    return index.place(event)


def _from_callbacks(
    op: Operation, index: _ResourceIndex, resources: ResourceMap | None
) -> Iterator[EventType]:
    role = resources.for_operation(op) if resources is not None else None
    for callback in op.callbacks:
        for target in callback.operations:
            name = f"{op.operation_id}.{callback.name}"
            resource, verb = index.link_name(callback.name)
            if role is not None:
                resource = role[0].name
                verb = _ROLE_VERBS.get(role[1].role, role[1].action or None) or verb
            schema = _producer(_body_schema(target))
            event = EventType(
                name, schema, "callback", resource, verb, target, callback.expression, None
            )
            yield index.place(replace(event, method=target.method))


def _from_config(
    name: str, entry: Any, base: EventType | None, spec: Spec, index: _ResourceIndex
) -> EventType:
    where = f"events.{name}"
    entry = {} if entry is None else entry
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a mapping", field=where)
    unknown = sorted(set(entry) - set(_CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(_CONFIG_KEYS)}")
    event = base or EventType(name, None, "config", *index.link_name(name))
    if "schema" in entry:
        raw = entry["schema"]
        if not isinstance(raw, (dict, bool)):
            raise ConfigError(f"{where}.schema must be a JSON schema", field=f"{where}.schema")
        uri = f"{spec.source}#/x-apitwin-events/{name.replace('~', '~0').replace('/', '~1')}"
        event = replace(event, schema=Schema(_compiler_of(spec), uri, raw, "response"))
    if "resource" in entry:
        event = replace(event, resource=index.check(entry["resource"], f"{where}.resource"))
    if "verb" in entry:
        event = replace(event, verb=None if entry["verb"] is None else str(entry["verb"]))
    return index.place(replace(event, record_path=None))


def _body_schema(op: Operation) -> Schema | None:
    if op.body is None:
        return None
    for media in op.body.media.values():
        if media.schema is not None and media.is_json:
            return media.schema
    return None


def _producer(schema: Schema | None) -> Schema | None:
    if schema is None or schema.direction == "response":
        return schema
    return Schema(schema.compiler, schema.uri, schema.raw, "response")


def _compiler_of(spec: Spec) -> SchemaCompiler:
    """The spec's own compiler (so config schemas can `$ref` its components), else a new one."""
    ops = [*spec.operations, *(w.operation for w in spec.webhooks)]
    for op in ops:
        for schema in _schemas_of(op):
            return schema.compiler
    path = Path(unquote(urlsplit(spec.source).path))
    return SchemaCompiler(DocumentRegistry(path), "3.1")


def _schemas_of(op: Operation) -> Iterator[Schema]:
    for param in op.parameters:
        if param.schema is not None:
            yield param.schema
    bodies = [op.body.media] if op.body else []
    for media in (*bodies, *(r.media for r in op.responses.values())):
        yield from (m.schema for m in media.values() if m.schema is not None)


# -- linking events to resources --------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _verb(word: str) -> str:
    word = word.strip().lower()
    return _VERBS.get(word, word)


def _verb_among(words: Sequence[str]) -> str | None:
    for word in words:
        if word in _VERBS:
            return _VERBS[word]
    return next((w for w in words if w.endswith("ed")), None)


class _ResourceIndex:
    """Resource names and record schemas, to link events by name or by payload."""

    def __init__(self, resources: ResourceMap | None) -> None:
        self.names: dict[str, str] = {}
        self.marks: dict[str, tuple[str | None, str | None]] = {}  # name -> ($defs key, title)
        self.by_key: dict[str, list[str]] = {}
        self.by_title: dict[str, list[str]] = {}
        self.order: dict[str, int] = {}
        self._resources = list((resources.resources if resources else {}).values())
        for res in self._resources:
            for alias in (res.singular, res.name, res.name.rsplit(".", 1)[-1]):
                self.names.setdefault(_norm(alias), res.name)

    def building(self) -> Iterator[None]:
        """Marks the record schemas, pausing every few (bundling each takes a while: all of
        GitHub's 500 take a tenth of a second)."""
        for count, res in enumerate(self._resources, 1):
            if res.schema is not None:
                self.marks[res.name] = _record_mark(res.schema)
            if count % 20 == 0:
                yield
        # Which resources a payload node can be, by its $ref key or its title: one lookup per
        # node instead of a comparison per resource (GitHub's spec: 270 webhooks, 1,000s of
        # nodes each, 100s of resources). Lists keep the marks' order: the first declared wins.
        for name, (key, title) in self.marks.items():
            if key is not None:
                self.by_key.setdefault(key, []).append(name)
            if title is not None:
                self.by_title.setdefault(title, []).append(name)
        self.order = {name: index for index, name in enumerate(self.marks)}

    def find(self, text: str) -> str | None:
        return self.names.get(_norm(text)) if text else None

    def check(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        name = str(value)
        if self.names and name not in self.marks and name not in self.names.values():
            known = ", ".join(sorted(set(self.names.values())))
            raise ConfigError(f"{where}: no resource is named {name!r} (known: {known})")
        return name

    def link_name(self, name: str) -> tuple[str | None, str | None]:
        """(resource, verb) from an event name: ``project.created``, ``newPet``, ``pet_sold``."""
        if "." in name:
            head, last = name.rsplit(".", 1)
            found = self.find(head) or self.find(head.rsplit(".", 1)[-1])
            if found:
                return found, _verb(last)
        words = _words(name)
        for size in range(len(words), 0, -1):
            for start in range(len(words) - size + 1):
                found = self.find("".join(words[start : start + size]))
                if found:
                    return found, _verb_among(words[:start] + words[start + size :])
        return None, _verb(name.rsplit(".", 1)[1]) if "." in name else _verb_among(words)

    def place(self, event: EventType) -> EventType:
        """``event`` with its record path (and resource, when only the payload names it)."""
        if event.schema is None or not self.marks:
            return event
        root = event.schema.json
        only = event.resource if event.resource in self.marks else None
        for path, node in _paths(root):
            name = self._record_at(root, node, only)
            if name is not None:
                return replace(event, resource=name, record_path=path)
        return event

    def _record_at(self, root: dict[str, Any], node: Any, only: str | None) -> str | None:
        """The (first declared) resource whose record ``node`` is, if any."""
        if not isinstance(node, dict):
            return None
        ref = node.get("$ref")
        by_key = self.by_key.get(ref[len(_DEFS) :], ()) if isinstance(ref, str) else ()
        if isinstance(ref, str) and not ref.startswith(_DEFS):
            by_key = ()
        title = _deref(root, node).get("title")
        by_title = self.by_title.get(title, ()) if isinstance(title, str) else ()
        found = [n for n in (*by_key, *by_title) if only is None or n == only]
        return min(found, key=self.order.__getitem__) if found else None


def _record_mark(schema: Schema) -> tuple[str | None, str | None]:
    root = schema.json
    ref = root.get("$ref")
    key = ref[len(_DEFS) :] if isinstance(ref, str) and ref.startswith(_DEFS) else None
    title = _deref(root, root).get("title")
    return key, title if isinstance(title, str) and title else None


# -- walking bundled schemas ------------------------------------------------------------------


def _deref(root: dict[str, Any], node: Any) -> dict[str, Any]:
    for _ in range(16):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith(_DEFS):
            break
        node = root.get("$defs", {}).get(ref[len(_DEFS) :], {})
    return node if isinstance(node, dict) else {}


def _props(root: dict[str, Any], node: Any, depth: int = 0) -> dict[str, Any]:
    node = _deref(root, node)
    found = dict(node.get("properties") or {})
    for part in node.get("allOf") or () if depth < _MAX_DEPTH else ():
        found.update(_props(root, part, depth + 1))
    return found


def _variants(root: dict[str, Any], node: Any) -> list[Any]:
    """``node`` and the non-null branches of a nullable wrapper around it."""
    plain = _deref(root, node)
    branches = [b for k in ("anyOf", "oneOf") for b in plain.get(k) or ()]
    return [node, *(b for b in branches if _deref(root, b).get("type") != "null")]


def _paths(root: dict[str, Any]) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(property path, schema) pairs, shallowest first."""
    queue: deque[tuple[tuple[str, ...], Any]] = deque([((), root)])
    while queue:
        path, node = queue.popleft()
        for variant in _variants(root, node):
            yield path, variant
            if len(path) < _MAX_DEPTH:
                queue.extend(((*path, k), v) for k, v in _props(root, variant).items())


# -- payloads ---------------------------------------------------------------------------------


def build_payload(
    event: EventType,
    record: Mapping[str, Any] | None,
    *,
    generator: Generator,
    rng: random.Random,
    clock: VirtualClock,
    overrides: Mapping[str, Any] | None = None,
) -> Any:
    """A payload for ``event`` about ``record`` (as stored), valid against the event's schema.

    Generated from the schema, with the record placed where the schema has room for it and the
    envelope (id, type, timestamp) filled; ``overrides`` are merged in last (JSON merge patch).
    Parts that do not fit the schema fall back to generated values, so the result validates.
    """
    if event.schema is None:
        payload = _free_envelope(event, record, rng, clock)
        return merge_patch(payload, overrides) if overrides else payload
    root = event.schema.json
    base = generator.generate(root, direction="response", rng=rng)
    payload = _copy(base)
    path = _placement(event, record)
    if record is not None and path is not None:
        payload = _set(payload, path, _copy(dict(record)))
    if path != () and isinstance(payload, dict):
        _fill_envelope(payload, event, generator, rng, clock)
    if overrides:
        payload = merge_patch(payload, overrides)
    return _repair(payload, base, validator(event.schema))


def _free_envelope(
    event: EventType, record: Mapping[str, Any] | None, rng: random.Random, clock: VirtualClock
) -> dict[str, Any]:
    return {
        "id": new_event_id(rng),
        "type": event.name,
        "created_at": clock.iso(),
        "data": _copy(dict(record)) if record is not None else {},
    }


def new_event_id(rng: random.Random) -> str:
    return "evt_" + random_id(rng.getrandbits(ID_BITS))


_MAX_SAFE_INTEGER: Final = 2**53 - 1  # the largest integer every JSON reader keeps exactly
ID_BITS: Final = 143  # 62**24 is just under 2**143


def random_id(bits: int) -> str:
    """24 base-62 digits of ``bits`` (one draw of randomness, not 24): letters and digits only,
    as Standard Webhooks' signed "{id}.{timestamp}.{body}" needs no "." in an id."""
    digits = []
    for _ in range(24):
        bits, digit = divmod(bits, 62)
        digits.append(_ID_CHARS[digit])
    return "".join(digits)


def _placement(event: EventType, record: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """Where the record goes: the linked path, else the shallowest schema it validates against."""
    if event.record_path is not None or record is None or event.schema is None:
        return event.record_path
    root = event.schema.json
    cache: dict[tuple[str, ...], Any] = event.schema.cache.setdefault("record-paths", {})
    for path, node in _paths(root):
        if _deref(root, node).get("type") not in ("object", None):
            continue
        check = cache.get(path)
        if check is None:
            check = cache[path] = _compile({**node, "$defs": root.get("$defs", {})})
        if check.is_valid(dict(record)):
            return path
    return None


def _compile(schema: dict[str, Any]) -> Any:
    return jsonschema_rs.Draft202012Validator(
        schema, validate_formats=True, ignore_unknown_formats=True, formats=FORMATS
    )


def _fill_envelope(
    payload: dict[str, Any],
    event: EventType,
    generator: Generator,
    rng: random.Random,
    clock: VirtualClock,
) -> None:
    assert event.schema is not None
    root = event.schema.json
    props = _props(root, root)
    for name in _ID_FIELDS:
        if name in props:
            payload[name] = _event_id(event.schema, name, props[name], generator, rng)
    for name in _TYPE_FIELDS:
        if name in props:
            payload[name] = event.name  # reverted by the repair when the schema says otherwise
    for name in _TIME_FIELDS:
        if name in props:
            payload[name] = _time_value(_deref(root, props[name]), name, clock)


def _event_id(
    schema: Schema, name: str, node: Any, generator: Generator, rng: random.Random
) -> Any:
    """``evt_…`` if the id schema takes it, else a fresh value of its pattern (never an example:
    every event needs its own id)."""
    cached = schema.cache.setdefault("envelope-ids", {})
    if name not in cached:
        standalone = {**node, "$defs": schema.json.get("$defs", {})}
        cached[name] = (standalone, _compile(standalone))
    standalone, check = cached[name]
    candidate = new_event_id(rng)
    if check.is_valid(candidate):
        return candidate
    number = rng.randrange(1, _MAX_SAFE_INTEGER)  # an id typed as a number: as unique
    if check.is_valid(number):
        return number
    try:
        return generator.generate(standalone, direction="response", rng=rng, use_examples=False)
    except GenerationError:
        return candidate  # the repair puts the generated envelope's id back


def _time_value(schema: dict[str, Any], name: str, clock: VirtualClock) -> Any:
    types = schema.get("type")
    kinds = set(types) if isinstance(types, list) else {types}
    if kinds & {"integer", "number"}:
        now = clock.now()
        return int(now * 1000) if name.lower().endswith("ms") else int(now)
    if schema.get("format") == "date":
        return clock.date()
    return clock.iso()


def _repair(payload: Any, base: Any, check: Any) -> Any:
    """``payload`` with every invalid part replaced by the generated ``base``'s (valid) value."""
    if check.is_valid(payload):
        return payload  # the usual case: nothing to look for
    seen: set[tuple[Any, ...]] = set()
    for _ in range(_MAX_REPAIRS):
        error = next(iter(check.iter_errors(payload)), None)
        if error is None:
            return payload
        path = tuple(error.instance_path)
        kind = type(error.kind).__name__
        if kind in ("AdditionalProperties", "UnevaluatedProperties") and (path, kind) not in seen:
            seen.add((path, kind))
            payload = _without(payload, path, getattr(error.kind, "unexpected", ()))
            continue
        if kind == "Required" and (path, kind) not in seen:
            seen.add((path, kind))
            wanted = (*path, str(getattr(error.kind, "property", "")))
            if _get(base, wanted) is not _MISSING:
                payload = _set(payload, wanted, _copy(_get(base, wanted)))
                continue
        while path and path in seen:
            path = path[:-1]
        if not path:
            return _copy(base)
        seen.add(path)
        value = _get(base, path)
        payload = _unset(payload, path) if value is _MISSING else _set(payload, path, value)
    return _copy(base)


_MISSING: Any = object()


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (a few times quicker than copy.deepcopy); deepcopy for what
    JSON cannot hold (an integer key of a YAML example, a very large integer)."""
    try:
        return orjson.loads(orjson.dumps(value))
    except TypeError:
        return copy.deepcopy(value)


def _get(value: Any, path: Sequence[Any]) -> Any:
    for step in path:
        found = isinstance(value, dict) and step in value
        found = found or (isinstance(value, list) and isinstance(step, int) and step < len(value))
        if not found:
            return _MISSING
        value = value[step]
    return value


def _set(value: Any, path: Sequence[Any], new: Any) -> Any:
    if not path:
        return _copy(new)
    head, rest = path[0], path[1:]
    if isinstance(value, list) and isinstance(head, int) and 0 <= head < len(value):
        return [_set(v, rest, new) if i == head else v for i, v in enumerate(value)]
    result = dict(value) if isinstance(value, dict) else {}
    result[head] = _set(result.get(head), rest, new)
    return result


def _unset(value: Any, path: Sequence[Any]) -> Any:
    parent = _get(value, path[:-1])
    last = path[-1]
    if isinstance(parent, dict):
        return _set(value, path[:-1], {k: v for k, v in parent.items() if k != last})
    if isinstance(parent, list) and isinstance(last, int):
        return _set(value, path[:-1], [v for i, v in enumerate(parent) if i != last])
    return value


def _without(value: Any, path: Sequence[Any], names: Sequence[str]) -> Any:
    target = _get(value, path)
    if not isinstance(target, dict):
        return value
    return _set(value, path, {k: v for k, v in target.items() if k not in set(names)})


# -- runtime expressions (OpenAPI callbacks) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The API exchange a callback's runtime expression is evaluated against."""

    method: str
    url: str
    path: Mapping[str, str] = field(default_factory=dict)
    query: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: Any = None  # parsed JSON
    status: int | None = None
    response_headers: Mapping[str, str] = field(default_factory=dict)
    response_body: Any = None


_EMBEDDED = re.compile(r"\{(\$[^{}]*)\}")


def callback_url(expression: str, context: RequestContext) -> str | None:
    """The URL a callback's key names, or None when a referenced value is missing."""
    text = expression.strip()
    try:
        if text.startswith("$"):
            return _text(evaluate(text, context)) or None
        return _EMBEDDED.sub(lambda m: _text(evaluate(m.group(1), context)), text) or None
    except LookupError:
        return None


def evaluate(expression: str, context: RequestContext) -> Any:
    """One runtime expression (``$request.body#/url``), type preserved; LookupError if absent."""
    if expression == "$url":
        return context.url
    if expression == "$method":
        return context.method.upper()
    if expression == "$statusCode":
        if context.status is None:
            raise LookupError("no response status")
        return context.status
    side, _, source = expression.partition(".")
    if side == "$request":
        return _source(source, context, request=True)
    if side == "$response":
        return _source(source, context, request=False)
    raise LookupError(f"not a runtime expression: {expression!r}")


def _source(source: str, ctx: RequestContext, *, request: bool) -> Any:
    kind, _, name = source.partition(".")
    if kind == "header":
        headers = ctx.headers if request else ctx.response_headers
        lowered = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
        return lowered[name.lower()]
    if request and kind == "query":
        for key, value in ctx.query:
            if key == name:  # query names are case-sensitive
                return value
        raise LookupError(f"no query parameter {name!r}")
    if request and kind == "path":
        return ctx.path[name]
    if source == "body" or source.startswith("body#"):
        body = ctx.body if request else ctx.response_body
        return _pointer(body, source.partition("#")[2])
    raise LookupError(f"unknown runtime expression source {source!r}")


def _pointer(document: Any, pointer: str) -> Any:
    if document is None:
        raise LookupError("no body")
    if not pointer:
        return document
    if not pointer.startswith("/"):
        raise LookupError(f"not a JSON pointer: {pointer!r}")
    value = document
    for token in pointer[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        elif isinstance(value, dict) and token in value:
            value = value[token]
        else:
            raise LookupError(f"{pointer!r} is not in the body")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
