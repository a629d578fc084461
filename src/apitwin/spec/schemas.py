"""Convert spec schemas to JSON Schema 2020-12 and bundle them per use.

Every `$ref` target is converted once (per direction), stored under a short key, and referenced as
``#/$defs/<key>``. A bundled schema carries only the definitions it can reach, so one operation's
validator never compiles the whole spec, and recursive schemas stay finite.

Version differences live here: OpenAPI 3.0 ``nullable``, Swagger 2.0 ``x-nullable`` and ``file``,
boolean ``exclusiveMinimum``/``exclusiveMaximum``, and ``readOnly``/``writeOnly`` being required
only in the direction where they apply.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urldefrag

from apitwin.spec.model import Direction
from apitwin.spec.refs import DocumentRegistry, Located

_SINGLE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
    "contentSchema",
)
_MAPS = ("properties", "patternProperties", "dependentSchemas")
_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_DROPPED = {
    "nullable",
    "x-nullable",
    "$schema",
    "$id",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
    "definitions",
    "$defs",
}
_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_KEY_CLEAN = re.compile(r"[^A-Za-z0-9_.-]+")


class SchemaCompiler:
    """Converts schemas of one spec, sharing converted `$ref` targets between all uses."""

    def __init__(self, registry: DocumentRegistry, dialect: str) -> None:
        self._registry = registry
        self._legacy = dialect in ("2.0", "3.0")  # else 3.1 (2020-12 already)
        self._keys: dict[str, str] = {}
        self._used_keys: set[str] = set()
        self._defs: dict[Direction, dict[str, Any]] = {"request": {}, "response": {}}
        self._deps: dict[Direction, dict[str, set[str]]] = {"request": {}, "response": {}}

    @property
    def registry(self) -> DocumentRegistry:
        return self._registry

    def bundle(self, address: str, raw: Any, direction: Direction) -> dict[str, Any]:
        deps: set[str] = set()
        root = self._convert(raw, urldefrag(address)[0], direction, deps)
        if not isinstance(root, dict):
            root = {} if root is True else {"not": {}}
        reachable = self._closure(deps, direction)
        if reachable:
            defs = self._defs[direction]
            root = {**root, "$defs": {key: defs[key] for key in sorted(reachable)}}
        return root

    def _closure(self, start: set[str], direction: Direction) -> set[str]:
        seen: set[str] = set()
        stack = list(start)
        deps = self._deps[direction]
        while stack:
            key = stack.pop()
            if key not in seen:
                seen.add(key)
                stack.extend(deps.get(key, ()))
        return seen

    def _key_for(self, address: str) -> str:
        key = self._keys.get(address)
        if key is None:
            fragment = urldefrag(address)[1].rstrip("/")
            base = fragment.rsplit("/", 1)[-1] if fragment else address.rsplit("/", 1)[-1]
            base = _KEY_CLEAN.sub("_", base.replace("~1", "_").replace("~0", "_")) or "schema"
            key = base
            n = 2
            while key in self._used_keys:
                key = f"{base}_{n}"
                n += 1
            self._used_keys.add(key)
            self._keys[address] = key
        return key

    def _ref(self, ref: str, base_uri: str, direction: Direction, deps: set[str]) -> str:
        uri, pointer = self._registry.target(base_uri, ref)
        address = f"{uri}#{pointer}"
        key = self._key_for(address)
        deps.add(key)
        defs = self._defs[direction]
        if key not in defs:
            defs[key] = {}  # placeholder: recursion stops here
            target = self._registry.lookup(uri, pointer)
            own: set[str] = set()
            defs[key] = self._convert(target.value, uri, direction, own)
            self._deps[direction][key] = own
        return f"#/$defs/{key}"

    def _convert(self, raw: Any, base_uri: str, direction: Direction, deps: set[str]) -> Any:
        if isinstance(raw, bool):
            return raw
        if not isinstance(raw, dict):
            return {}
        ref = raw.get("$ref")
        if isinstance(ref, str):
            target = {"$ref": self._ref(ref, base_uri, direction, deps)}
            if self._legacy:
                if raw.get("nullable") or raw.get("x-nullable"):
                    return {"anyOf": [target, {"type": "null"}]}
                return target
            siblings = {k: v for k, v in raw.items() if k != "$ref"}
            if not siblings:
                return target
            rest = self._convert(siblings, base_uri, direction, deps)
            return {**rest, **target}
        out: dict[str, Any] = {}
        for key, value in raw.items():
            if key in _DROPPED or key == "$ref":
                continue
            if key in _SINGLE and isinstance(value, (dict, bool)):
                out[key] = self._convert(value, base_uri, direction, deps)
            elif key == "items" and isinstance(value, list):
                out["prefixItems"] = [self._convert(v, base_uri, direction, deps) for v in value]
            elif key in _MAPS and isinstance(value, dict):
                out[key] = {
                    k: self._convert(v, base_uri, direction, deps) for k, v in value.items()
                }
            elif key in _LISTS and isinstance(value, list):
                out[key] = [self._convert(v, base_uri, direction, deps) for v in value]
            elif key == "discriminator" and isinstance(value, dict):
                out[key] = self._discriminator(value, base_uri, direction, deps)
            else:
                out[key] = value
        self._fix_keywords(raw, out)
        self._fix_required(raw, out, base_uri, direction)
        if self._legacy or "nullable" in raw:
            return self._nullable(raw, out)
        return out

    def _discriminator(
        self, value: dict[str, Any], base_uri: str, direction: Direction, deps: set[str]
    ) -> dict[str, Any]:
        mapping = value.get("mapping")
        if not isinstance(mapping, dict):
            return value
        converted: dict[str, str] = {}
        for name, target in mapping.items():
            if isinstance(target, str):
                ref = (
                    target if ("#" in target or "/" in target) else f"#/components/schemas/{target}"
                )
                try:
                    converted[name] = self._ref(ref, base_uri, direction, deps)
                except Exception:
                    continue
        return {**value, "mapping": converted}

    def _fix_keywords(self, raw: dict[str, Any], out: dict[str, Any]) -> None:
        if self._legacy:
            for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
                flag = raw.get(bound)
                if isinstance(flag, bool):
                    del out[bound]
                    if flag and limit in out:
                        out[bound] = out.pop(limit)
            if raw.get("type") == "file":
                out["type"] = "string"
                out["format"] = "binary"
        fmt = raw.get("format")
        if fmt in _INT_BOUNDS and raw.get("type") == "integer":
            low, high = _INT_BOUNDS[fmt]
            out.setdefault("minimum", low)
            out.setdefault("maximum", high)

    def _fix_required(
        self, raw: dict[str, Any], out: dict[str, Any], base_uri: str, direction: Direction
    ) -> None:
        required = raw.get("required")
        props = raw.get("properties")
        if not isinstance(required, list) or not isinstance(props, dict):
            return
        flag = "readOnly" if direction == "request" else "writeOnly"
        kept = [
            name
            for name in required
            if not (name in props and self._has_flag(props[name], base_uri, flag))
        ]
        if len(kept) != len(required):
            if kept:
                out["required"] = kept
            else:
                out.pop("required", None)

    def _has_flag(self, prop: Any, base_uri: str, flag: str) -> bool:
        if not isinstance(prop, dict):
            return False
        if prop.get(flag) is True:
            return True
        ref = prop.get("$ref")
        if isinstance(ref, str):
            try:
                target: Located = self._registry.follow(Located(prop, base_uri, ""))
            except Exception:
                return False
            return isinstance(target.value, dict) and target.value.get(flag) is True
        return False

    def _nullable(self, raw: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        if not (raw.get("nullable") is True or raw.get("x-nullable") is True):
            return out
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
            return out
        if isinstance(kind, list):
            if "null" not in kind:
                out["type"] = [*kind, "null"]
            return out
        return {"anyOf": [out, {"type": "null"}]}
