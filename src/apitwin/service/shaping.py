"""Shape stored records into the response schema of the operation that returns them.

A record fits as is when it validates; otherwise it is placed where the schema has room for it (an
envelope such as ``{data: {...}}``), or laid over a generated value. The result always validates.
"""

from __future__ import annotations

import random
from typing import Any

from apitwin.generation import Generator
from apitwin.schemanav import SubValidators, at, properties, standalone
from apitwin.spec.model import Schema
from apitwin.spec.resources import Envelope

_WRAP_DEPTH = 2


def checker(schema: Schema) -> SubValidators:
    found = schema.cache.get("sub-validators")
    if found is None:
        found = schema.cache["sub-validators"] = SubValidators(schema.json)
    return found


def shape(record: Any, schema: Schema | None, gen: Generator, rng: random.Random) -> Any:
    if schema is None:
        return record
    check = checker(schema)
    if check.is_valid((), record):
        return record
    root = schema.json
    for path in _object_paths(root, (), 0):
        if check.is_valid(path, record):
            base = gen.generate(root, rng=rng)
            placed = _set(base, path, record)
            if check.is_valid((), placed):
                return placed
    return overlay(record, root, (), check, gen, rng)


def overlay(
    record: Any,
    root: dict[str, Any],
    path: tuple[str, ...],
    check: SubValidators,
    gen: Generator,
    rng: random.Random,
) -> Any:
    """A generated value at ``path`` with as many of the record's fields as stay valid."""
    node = at(root, path) if path else root
    base = gen.generate(standalone(root, node) if path else root, rng=rng)
    if not isinstance(base, dict) or not isinstance(record, dict):
        return base
    known = properties(root, node)
    merged = {**base, **{k: v for k, v in record.items() if k in known}}
    if check.is_valid(path, merged):
        return merged
    for name, value in record.items():
        if name in known and check.is_valid(path, {**base, name: value}):
            base = {**base, name: value}
    return base


def shape_list(
    records: list[dict[str, Any]],
    schema: Schema | None,
    envelope: Envelope,
    page: dict[str, Any],
    gen: Generator,
    rng: random.Random,
) -> Any:
    """The list response: items shaped to the item schema, wrapped in the spec's envelope."""
    if schema is None:
        return records if envelope.list_field is None else {envelope.list_field: records, **page}
    check = checker(schema)
    root = schema.json
    item_path = ("[]",) if envelope.list_field is None else (envelope.list_field, "[]")
    items = [
        r if check.is_valid(item_path, r) else overlay(r, root, item_path, check, gen, rng)
        for r in records
    ]
    if envelope.list_field is None:
        # The inferred shape may be wrong for an unusual spec; never answer off-schema.
        return items if check.is_valid((), items) else gen.generate(root, rng=rng)
    base = gen.generate(root, rng=rng)
    if not isinstance(base, dict):
        return base
    body = {**base, envelope.list_field: items}
    fields = {
        envelope.next_cursor_field: page.get("next_cursor"),
        envelope.has_more_field: page.get("has_more"),
        envelope.total_field: page.get("total"),
    }
    for name, value in fields.items():
        if name and check.is_valid((name,), value):
            body[name] = value
        elif name and value is None:
            body.pop(name, None)
            if not check.is_valid((), body):
                body[name] = base.get(name)
    return body if check.is_valid((), body) else base


def _object_paths(root: dict[str, Any], path: tuple[str, ...], depth: int) -> list[tuple[str, ...]]:
    if depth >= _WRAP_DEPTH:
        return []
    found = []
    node = at(root, path) if path else root
    for name in properties(root, node):
        child = (*path, name)
        found.append(child)
        found.extend(_object_paths(root, child, depth + 1))
    return found


def _set(base: Any, path: tuple[str, ...], value: Any) -> Any:
    if not path:
        return value
    current = dict(base) if isinstance(base, dict) else {}
    current[path[0]] = _set(current.get(path[0]), path[1:], value)
    return current
