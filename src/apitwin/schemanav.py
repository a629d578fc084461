"""Walking bundled schemas: follow `#/$defs/...` refs, collect properties, address sub-schemas."""

from __future__ import annotations

from typing import Any

import jsonschema_rs

_MAX_HOPS = 16


def json_type(value: Any) -> str:
    """The JSON Schema type of a parsed JSON/YAML value (other scalars, e.g. YAML dates, are
    written as strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def deref(root: dict[str, Any], node: Any) -> Any:
    for _ in range(_MAX_HOPS):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return node
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    return node


def properties(root: dict[str, Any], node: Any) -> dict[str, Any]:
    """Declared properties of an object schema, including those merged in through allOf."""
    node = deref(root, node)
    if not isinstance(node, dict):
        return {}
    found = dict(node.get("properties") or {})
    for part in node.get("allOf") or ():
        found.update(properties(root, part))
    return found


def at(root: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The schema of the value at ``path`` (property names; "[]" steps into array items)."""
    node: Any = root
    for key in path:
        if key == "[]":
            node = deref(root, node)
            node = node.get("items") if isinstance(node, dict) else None
        else:
            node = properties(root, node).get(key)
        if node is None:
            return None
    return deref(root, node)


def standalone(root: dict[str, Any], node: Any) -> dict[str, Any]:
    """``node`` as a schema of its own, carrying the root's definitions."""
    if not isinstance(node, dict):
        return {} if node is True or node is None else {"not": {}}
    defs = root.get("$defs")
    return {**node, "$defs": defs} if defs else dict(node)


class SubValidators:
    """Compiled validators for sub-schemas of one bundled schema, compiled once per path."""

    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self._cache: dict[tuple[str, ...], Any] = {}

    def is_valid(self, path: tuple[str, ...], value: Any) -> bool:
        found = self._cache.get(path)
        if found is None:
            node = at(self.root, path) if path else self.root
            schema = standalone(self.root, node) if path else self.root
            found = jsonschema_rs.Draft202012Validator(
                schema, validate_formats=True, ignore_unknown_formats=True
            )
            self._cache[path] = found
        return bool(found.is_valid(value))


def keyword(root: dict[str, Any], node: Any, key: str, default: Any = None) -> Any:
    """A keyword of a schema, looked up on the node first (3.1 allows siblings of `$ref`)."""
    for _ in range(_MAX_HOPS):
        if not isinstance(node, dict):
            return default
        if key in node:
            return node[key]
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            return default
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    return default


def allows_null(root: dict[str, Any], node: Any) -> bool:
    kind = keyword(root, node, "type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    target = deref(root, node)
    branches = (
        (target.get("anyOf") or target.get("oneOf") or []) if isinstance(target, dict) else []
    )
    return any(allows_null(root, branch) for branch in branches if branch is not target)
