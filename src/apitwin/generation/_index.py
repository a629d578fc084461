"""What generation derives from one bundled schema, computed once and reused on every call.

A :class:`SchemaIndex` belongs to one root schema and keeps it alive, so the ``id()`` of every
subschema stays unique for as long as the caches below are keyed by it.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema_rs

from apitwin.generation._errors import GenerationError
from apitwin.generation._merge import combine

_DEFS_PREFIX = "#/$defs/"
MISSING: Any = object()


class SchemaIndex:
    """Caches for one root schema: merged keywords, validators, examples and variants."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        defs = root.get("$defs")
        self.defs: dict[str, Any] = defs if isinstance(defs, dict) else {}
        self._merged: dict[int, dict[str, Any]] = {}
        self._without: dict[tuple[int, tuple[str, ...]], dict[str, Any]] = {}
        self._joined: dict[tuple[int, ...], dict[str, Any]] = {}
        self._validators: dict[int, Any] = {}
        self._examples: dict[tuple[int, str], Any] = {}
        self.plans: dict[tuple[int, str], Any] = {}  # object layouts, filled by the builder
        self._keep: list[Any] = []  # synthetic schemas whose ids are cache keys

    def resolve(self, ref: str) -> Any:
        if not ref.startswith(_DEFS_PREFIX):
            raise GenerationError(f"unsupported $ref {ref!r}: only '#/$defs/<key>' is resolved")
        key = ref[len(_DEFS_PREFIX) :].replace("~1", "/").replace("~0", "~")
        if key not in self.defs:
            raise GenerationError(f"$ref {ref!r} points at no entry of $defs")
        return self.defs[key]

    def merged(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The schema with its `$ref` and `allOf` folded into one dict of keywords."""
        hit = self._merged.get(id(schema))
        if hit is None:
            atoms: list[dict[str, Any]] = []
            self._atoms(schema, (), atoms)
            hit = combine(atoms)
            required = hit["required"] if isinstance(hit.get("required"), list) else []
            dependent = hit.get("dependentSchemas")
            if isinstance(dependent, dict) and set(dependent).intersection(required):
                # Required names always trigger their dependent schemas: fold those in too.
                for name in (n for n in dependent if n in required):
                    self._atoms(dependent[name], (), atoms)
                hit = combine(atoms)
            self._merged[id(schema)] = hit
        return hit

    def _atoms(self, schema: Any, seen: tuple[int, ...], out: list[dict[str, Any]]) -> None:
        if schema is False:
            out.append({"_unsat": "the schema is `false`, which no value matches"})
        if not isinstance(schema, dict) or id(schema) in seen:
            return  # `true`, or a `$ref`/`allOf` cycle whose constraints are already included
        seen = (*seen, id(schema))
        out.append({k: v for k, v in schema.items() if k not in ("$ref", "allOf", "$defs")})
        ref = schema.get("$ref")
        if isinstance(ref, str):
            self._atoms(self.resolve(ref), seen, out)
        parts = schema.get("allOf")
        for part in parts if isinstance(parts, list) else ():
            self._atoms(part, seen, out)

    def refined(self, merged: dict[str, Any], drop: tuple[str, ...], extra: list[Any]) -> Any:
        """`merged` without the keywords in `drop`, and also every schema in `extra`."""
        key = (id(merged), drop)
        base = self._without.get(key)
        if base is None:
            base = {k: v for k, v in merged.items() if k not in drop}
            self._without[key] = base
            self._keep.append(merged)
        return self.joined(base, *extra)

    def joined(self, *parts: Any) -> dict[str, Any]:
        """One schema requiring all of `parts` (cached, so its id is a stable cache key)."""
        key = tuple(id(p) for p in parts)
        hit = self._joined.get(key)
        if hit is None:
            hit = {"allOf": list(parts)}
            self._joined[key] = hit
            self._keep.extend(parts)
        return hit

    def is_valid(self, schema: Any, value: Any) -> bool:
        validator = self._validators.get(id(schema), MISSING)
        if validator is MISSING:
            validator = self._compile(schema)
            self._validators[id(schema)] = validator
            self._keep.append(schema)
        if validator is None:
            return True  # a schema the validator cannot compile is not checked
        try:
            return bool(validator.is_valid(value))
        except (ValueError, TypeError, OverflowError):
            return False  # not JSON data (e.g. a YAML date in an example)

    def explain(self, schema: Any, value: Any) -> str:
        """Why `value` does not validate against `schema` (for error messages)."""
        validator = self._validators.get(id(schema))
        try:
            error = next(iter(validator.iter_errors(value)), None) if validator else None
        except (ValueError, TypeError, OverflowError) as exc:
            return str(exc)
        return f"{error.message} at {list(error.instance_path)}" if error else "unknown"

    def _compile(self, schema: Any) -> Any:
        document = schema
        local = isinstance(schema, dict) and schema is not self.root
        if local and self.defs and _mentions_ref(schema):
            document = {**schema, "$defs": self.defs}
        try:
            return jsonschema_rs.validator_for(document, validate_formats=True)
        except Exception:  # e.g. a regex the validator's engine rejects: skip checks
            return None

    def example(self, schema: dict[str, Any], direction: str) -> Any:
        """The spec's own example for `schema`, if it validates; else MISSING (cached)."""
        key = (id(schema), direction)
        if key not in self._examples:
            self._examples[key] = self._find_example(schema, direction)
        hit = self._examples[key]
        return copy.deepcopy(hit) if hit is not MISSING else MISSING

    def _find_example(self, schema: dict[str, Any], direction: str) -> Any:
        for candidate in self._example_candidates(schema):
            value = self.strip(schema, copy.deepcopy(candidate), direction, 0)
            if self.is_valid(schema, value):
                return value
        return MISSING

    def _example_candidates(self, schema: dict[str, Any]) -> list[Any]:
        atoms: list[dict[str, Any]] = []
        self._atoms(schema, (), atoms)
        found: list[Any] = []
        for atom in atoms:
            if "example" in atom:
                found.append(atom["example"])
            examples = atom.get("examples")
            if isinstance(examples, list) and examples:
                found.append(examples[0])
        return found

    def strip(self, schema: Any, value: Any, direction: str, depth: int) -> Any:
        """Drop properties that do not belong in `direction` from an example value."""
        if not isinstance(schema, dict) or depth > 8:
            return value
        merged = self.merged(schema)
        if isinstance(value, dict) and isinstance(merged.get("properties"), dict):
            props, required = merged["properties"], merged.get("required", [])
            for name in list(value):
                if name in props and name not in required and self.skipped(props[name], direction):
                    del value[name]
                elif name in props:
                    value[name] = self.strip(props[name], value[name], direction, depth + 1)
        elif isinstance(value, list) and isinstance(merged.get("items"), dict):
            return [self.strip(merged["items"], v, direction, depth + 1) for v in value]
        return value

    def skipped(self, schema: Any, direction: str) -> bool:
        """True when a property is readOnly in a request or writeOnly in a response."""
        if not isinstance(schema, dict):
            return False
        merged = self.merged(schema)
        return bool(merged.get("writeOnly" if direction == "response" else "readOnly"))


def _mentions_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_mentions_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_mentions_ref(v) for v in schema)
    return False
