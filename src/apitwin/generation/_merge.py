"""Combine the parts of an `allOf` (and `$ref` targets) into one flat keyword dict.

Generation then reads each constraint in one place. Keywords that cannot be merged exactly are
kept under ``_also`` (schemas the value must also satisfy, checked after building), and a merge
that can never be satisfied records why under ``_unsat``.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, TypeGuard

_LOWER = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains")
_UPPER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains")
_FLAGS = ("readOnly", "writeOnly", "uniqueItems", "deprecated")
_BOTH = ("items", "propertyNames", "contains", "unevaluatedItems", "unevaluatedProperties")
_SEPARATE = ("oneOf", "anyOf", "pattern", "format")
_MAPS = ("properties", "patternProperties", "dependentSchemas")
_CONDITIONAL = ("if", "then", "else")


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def same(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1`, but `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return (type(a) is type(b) and a == b) or (is_number(a) and is_number(b) and a == b)


def type_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for t in value if isinstance(t, str)]
    return []


def combine(atoms: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    closures: list[tuple[dict[str, Any], dict[str, Any], Any]] = []
    for atom in atoms:
        _add_atom(out, atom)
        extra = atom.get("additionalProperties", True)
        if extra is not True:
            own = atom.get("properties")
            patterns = atom.get("patternProperties")
            closures.append(
                (
                    own if isinstance(own, dict) else {},
                    patterns if isinstance(patterns, dict) else {},
                    extra,
                )
            )
    _apply_closures(out, closures)
    _apply_pattern_properties(out)
    return out


def _add_atom(out: dict[str, Any], atom: dict[str, Any]) -> None:
    for key, value in atom.items():
        if key in _CONDITIONAL or key == "additionalProperties":
            continue
        if key not in out:
            out[key] = _fresh(key, value)
        else:
            _join(out, key, value)
    if "if" in atom:
        group = {k: atom[k] for k in _CONDITIONAL if k in atom}
        if "if" in out:
            out.setdefault("_also", []).append(group)
        else:
            out.update(group)


def _fresh(key: str, value: Any) -> Any:
    # Copies, because joins below mutate these containers in place.
    if key == "type":
        return type_list(value)
    if isinstance(value, dict) and (key in _MAPS or key == "dependentRequired"):
        return dict(value)
    if isinstance(value, list) and key in ("required", "_also", "_forbidden", "enum"):
        return list(value)
    return value


def _join(out: dict[str, Any], key: str, value: Any) -> None:
    current = out[key]
    if key in _LOWER or key in _UPPER:
        if is_number(value) and is_number(current):
            out[key] = max(current, value) if key in _LOWER else min(current, value)
    elif key in _FLAGS:
        out[key] = bool(current) or bool(value)
    elif key in ("required", "_forbidden") and isinstance(value, list):
        out[key] = list(dict.fromkeys([*current, *value]))
    elif key == "_also":
        out[key] = [*current, *value]
    elif key in _MAPS and isinstance(value, dict):
        for name, sub in value.items():
            current[name] = {"allOf": [current[name], sub]} if name in current else sub
    else:
        _join_value(out, key, current, value)


def _join_value(out: dict[str, Any], key: str, current: Any, value: Any) -> None:
    if key == "type":
        _join_types(out, current, type_list(value))
    elif key == "enum" and isinstance(value, list):
        out[key] = [x for x in current if any(same(x, y) for y in value)]
        if not out[key]:
            out.setdefault("_unsat", "the `enum` lists of an `allOf` share no value")
    elif key == "const" and not same(current, value):
        out.setdefault("_unsat", "the `allOf` parts require different `const` values")
    elif key == "multipleOf":
        out[key] = _lcm(current, value)
    elif key == "dependentRequired" and isinstance(value, dict):
        for name, names in value.items():
            current[name] = list(dict.fromkeys([*current.get(name, []), *names]))
    elif key in _BOTH:
        out[key] = {"allOf": [current, value]}
    elif key == "not":
        out[key] = {"anyOf": [current, value]}
    elif key == "prefixItems" and isinstance(value, list):
        out[key] = _join_prefix(current, value)
    elif key in _SEPARATE and not same(current, value):
        out.setdefault("_also", []).append({key: value})
    # Any other keyword (annotations, discriminator, examples): the outermost one wins.


def _join_types(out: dict[str, Any], current: list[str], other: list[str]) -> None:
    kept: list[str] = []
    for kind in current:
        if kind in other:
            kept.append(kind)
        elif {kind, "integer", "number"} == {"integer", "number"} and (
            "integer" in other or "number" in other
        ):
            kept.append("integer")
    out["type"] = list(dict.fromkeys(kept))
    if not kept:
        out.setdefault("_unsat", f"no type is allowed by every `allOf` part ({current} vs {other})")


def _join_prefix(current: list[Any], other: list[Any]) -> list[Any]:
    joined: list[Any] = []
    for i in range(max(len(current), len(other))):
        parts = [p[i] for p in (current, other) if i < len(p)]
        joined.append(parts[0] if len(parts) == 1 else {"allOf": parts})
    return joined


def _lcm(a: Any, b: Any) -> Any:
    if not (is_number(a) and is_number(b)) or a <= 0 or b <= 0:
        return a
    fa, fb = Fraction(str(a)), Fraction(str(b))
    result = Fraction(
        math.lcm(fa.numerator, fb.numerator), math.gcd(fa.denominator, fb.denominator)
    )
    return int(result) if result.denominator == 1 else float(result)


def _apply_closures(out: dict[str, Any], closures: list[tuple[dict[str, Any], Any, Any]]) -> None:
    """`additionalProperties` only sees the properties of its own `allOf` part."""
    if not closures:
        return
    props = out.get("properties")
    if isinstance(props, dict):
        for name in list(props):
            for own, patterns, extra in closures:
                if name in own or matches_any(patterns, name):
                    continue
                if extra is False:
                    del props[name]
                    out.setdefault("_forbidden", []).append(name)
                    break
                props[name] = {"allOf": [props[name], extra]}
    extras = [extra for _, _, extra in closures]
    if any(extra is False for extra in extras):
        out["additionalProperties"] = False
    else:
        out["additionalProperties"] = extras[0] if len(extras) == 1 else {"allOf": extras}
    clash = [n for n in out.get("required", []) if n in out.get("_forbidden", [])]
    if clash:
        out.setdefault("_unsat", f"required properties {clash} are forbidden by an `allOf` part")


def _apply_pattern_properties(out: dict[str, Any]) -> None:
    """A named property must also satisfy every `patternProperties` entry its name matches."""
    props, patterns = out.get("properties"), out.get("patternProperties")
    if not (isinstance(props, dict) and isinstance(patterns, dict) and patterns):
        return
    for name in list(props):
        extra = [sub for pattern, sub in patterns.items() if matches_any({pattern: 0}, name)]
        if extra:
            props[name] = {"allOf": [props[name], *extra]}


def matches_any(patterns: Any, name: str) -> bool:
    for pattern in patterns:
        try:
            if re.search(pattern, name):
                return True
        except (re.error, TypeError):
            continue
    return False
