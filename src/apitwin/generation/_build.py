"""Build one value for one schema: branches and conditionals, then objects, arrays and leaves."""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from apitwin.generation import _values as values
from apitwin.generation._errors import GenerationError
from apitwin.generation._index import MISSING, SchemaIndex
from apitwin.generation._leaves import Leaves
from apitwin.generation._merge import is_number, matches_any, type_list

_SOFT_DEPTH = 4  # deeper than this, optional properties and array items are left out
_OPTIONAL_SHARE = {2: 0.8, 3: 0.6, 4: 0.4}  # how many optional properties appear at a depth
_HARD_DEPTH = 24  # a required recursion this deep never ends
_TRIES = 6
_BUDGET = 20_000  # values per run: bounds the search when recursion can never end
_CHECKED = frozenset({"not", "_also", "if"})
_OBJECT_KEYS = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
    }
)
_ARRAY_KEYS = frozenset(("items", "prefixItems", "minItems", "maxItems", "contains", "uniqueItems"))
_STRING_KEYS = frozenset(("minLength", "maxLength", "pattern"))
_NUMBER_KEYS = frozenset(
    ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
)


class Builder:
    """One generation run: a schema index, a random source and a direction."""

    def __init__(
        self,
        index: SchemaIndex,
        rng: random.Random,
        direction: str,
        *,
        use_examples: bool = True,
        lean: bool = False,
    ) -> None:
        self.index = index
        self.rng = rng
        self.direction = direction
        self.use_examples = use_examples
        self.lean = lean  # only required parts: a fallback for values that matched too much
        self.leaves = Leaves(rng)
        self.calls = 0

    def value(
        self,
        schema: Any,
        depth: int,
        name: str,
        pinned: Mapping[str, Any] | None = None,
        *,
        examples: bool = True,
    ) -> Any:
        if schema is False:
            raise GenerationError("the schema is `false`, which no value matches")
        if not isinstance(schema, dict):
            return self.leaves.simple(name)
        self.calls += 1
        if depth > _HARD_DEPTH:
            raise GenerationError(f"the schema nests required values deeper than {_HARD_DEPTH}")
        if self.exhausted:
            raise GenerationError(f"no valid value found within {_BUDGET} generated parts")
        if examples and self.use_examples and not pinned:
            found = self.index.example(schema, self.direction)
            if found is not MISSING:
                return found
        merged = self.index.merged(schema)
        if "_unsat" in merged:
            raise GenerationError(merged["_unsat"])
        if _CHECKED.intersection(merged):
            return self.checked(schema, merged, depth, name, pinned)
        return self.build(schema, merged, depth, name, pinned)

    @property
    def exhausted(self) -> bool:
        return self.calls > _BUDGET

    def checked(
        self, schema: Any, merged: dict[str, Any], depth: int, name: str, pinned: Any
    ) -> Any:
        """Keywords built best effort (`not`, `if`, unmergeable parts) are verified here."""
        error: GenerationError | None = None
        for attempt in range(_TRIES):
            make = partial(self.build, schema, merged, depth, name, pinned)
            try:
                value = self.attempt(attempt >= 2, make)
            except GenerationError as exc:
                error = exc
                continue
            if self.index.is_valid(schema, value):
                return value
        raise error or GenerationError(
            f"no value found that satisfies `not`/`if`/combined keywords of {sorted(merged)}"
        )

    def attempt(self, lean: bool, make: Callable[[], Any]) -> Any:
        """Run `make`, leaving out optional parts if `lean`."""
        saved, self.lean = self.lean, self.lean or lean
        try:
            return make()
        finally:
            self.lean = saved

    def build(self, schema: Any, merged: dict[str, Any], depth: int, name: str, pinned: Any) -> Any:
        if "if" in merged:
            return self.conditional(merged, depth, name, pinned)
        if "const" in merged:
            return copy.deepcopy(merged["const"])
        if isinstance(merged.get("enum"), list):
            return self.enum(merged)
        for key in ("oneOf", "anyOf"):
            if isinstance(merged.get(key), list):
                return self.branch(merged, key, depth, name, pinned)
        return self.typed(merged, depth, name, pinned or self.discriminated(schema, merged))

    def conditional(self, merged: dict[str, Any], depth: int, name: str, pinned: Any) -> Any:
        when = [merged["if"], merged["then"]] if "then" in merged else [merged["if"]]
        otherwise = [merged["else"]] if "else" in merged else []
        options = [when, otherwise] if self.rng.random() < 0.5 else [otherwise, when]
        error: GenerationError | None = None
        for extra in options:
            variant = self.index.refined(merged, ("if", "then", "else"), extra)
            try:
                return self.value(variant, depth, name, pinned)
            except GenerationError as exc:
                error = exc
        raise error or GenerationError("neither `then` nor `else` could be satisfied")

    def enum(self, merged: dict[str, Any]) -> Any:
        kinds = type_list(merged.get("type"))
        fitting = [v for v in merged["enum"] if not kinds or _has_type(v, kinds)]
        preferred = [v for v in fitting if v is not None] or fitting
        if not preferred:
            raise GenerationError(f"no value of `enum` {merged['enum']!r} has an allowed type")
        return copy.deepcopy(self.rng.choice(preferred))

    def branch(self, merged: dict[str, Any], key: str, depth: int, name: str, pinned: Any) -> Any:
        """Pick a branch; for `oneOf`, keep only values that match no other branch."""
        branches: list[Any] = merged[key]
        error: GenerationError | None = None
        for i in self.branch_order(branches, depth):
            variant = self.index.refined(merged, (key, "discriminator"), [branches[i]])
            pins = {**self.pin(merged, branches[i]), **(pinned or {})}
            for attempt in range(2 if key == "oneOf" else 1):
                # Fewer optional parts make a value less likely to match other branches too.
                make = partial(self.value, variant, depth, name, pins or None)
                try:
                    value = self.attempt(attempt == 1, make)
                except GenerationError as exc:
                    error = exc
                    break
                if key == "anyOf" or self.only_match(branches, i, value):
                    return value
        raise error or GenerationError(f"no `{key}` branch yields a value matching only itself")

    def branch_order(self, branches: list[Any], depth: int) -> list[int]:
        start = self.rng.randrange(len(branches)) if branches else 0
        order = [(start + i) % len(branches) for i in range(len(branches))]
        # Prefer real data, but end recursion with `null` where a branch allows it.
        return sorted(order, key=lambda i: _is_null(branches[i]) != (depth > _SOFT_DEPTH))

    def only_match(self, branches: list[Any], chosen: int, value: Any) -> bool:
        others = (b for i, b in enumerate(branches) if i != chosen)
        return not any(self.index.is_valid(b, value) for b in others)

    def pin(self, merged: dict[str, Any], branch: Any) -> dict[str, Any]:
        """The discriminator value naming `branch`, when the branch accepts it."""
        disc = merged.get("discriminator")
        if not (isinstance(disc, dict) and isinstance(branch, dict)):
            return {}
        prop, ref = disc.get("propertyName"), branch.get("$ref")
        if not (isinstance(prop, str) and isinstance(ref, str)):
            return {}
        mapping = _mapping(disc.get("mapping"))
        label = next((k for k, v in mapping.items() if v == ref), ref.rsplit("/", 1)[-1])
        props = self.index.merged(branch).get("properties")
        target = props.get(prop, True) if isinstance(props, dict) else True
        return {prop: label} if self.index.is_valid(target, label) else {}

    def discriminated(self, schema: Any, merged: dict[str, Any]) -> dict[str, Any] | None:
        """A schema reached by `$ref` names itself in an inherited discriminator property."""
        if "discriminator" not in merged or not isinstance(schema, dict) or "$ref" not in schema:
            return None
        return self.pin(merged, schema) or None

    def typed(self, merged: dict[str, Any], depth: int, name: str, pinned: Any) -> Any:
        error: GenerationError | None = None
        for kind in _kinds(merged, self.rng):
            try:
                return self.of_type(kind, merged, depth, name, pinned)
            except GenerationError as exc:
                error = exc
        raise error or GenerationError("the schema allows no type (`type` is empty)")

    def of_type(self, kind: str, merged: dict[str, Any], depth: int, name: str, pinned: Any) -> Any:
        if kind == "object":
            return self.obj(merged, depth, pinned)
        if kind == "array":
            return self.array(merged, depth, name)
        if kind == "string":
            return self.leaves.string(merged, name)
        if kind in ("integer", "number"):
            return self.leaves.number(merged, name, integer=kind == "integer")
        if kind == "boolean":
            return self.rng.random() < 0.5
        if kind == "null":
            return None
        return self.leaves.simple(name)

    # Objects

    def obj(self, merged: dict[str, Any], depth: int, pinned: Any) -> dict[str, Any]:
        props = _mapping(merged.get("properties"))
        out: dict[str, Any] = {}
        for key in self.choose(merged, depth, pinned or {}):
            if pinned and key in pinned:
                out[key] = copy.deepcopy(pinned[key])
            elif (sub := self.schema_for(merged, key)) is False:
                raise GenerationError(f"property {key!r} is required but not allowed")
            else:
                out[key] = self.value(sub, depth + 1, key)
        self.fill(out, merged, props, depth)
        return out

    def choose(self, merged: dict[str, Any], depth: int, pinned: Mapping[str, Any]) -> list[str]:
        """Required (and pinned) names, then a deterministic share of the optional ones."""
        required, optional, limit = self.plan(merged)
        chosen = [*required, *(k for k in pinned if k not in required)]
        if limit is not None and len(chosen) > limit:
            raise GenerationError(
                f"{len(chosen)} properties are required, maxProperties is {limit}"
            )
        for key, extra in optional:
            if key not in chosen and self.wants_optional(depth):
                more = [k for k in extra if k not in chosen]
                if limit is None or len(chosen) + len(more) <= limit:
                    chosen.extend(more)
        if not chosen and optional and depth <= _SOFT_DEPTH and not self.lean:
            # An object with nothing in it reads as a bug; show at least one property.
            extra = self.rng.choice(optional)[1]
            chosen.extend(extra if limit is None or len(extra) <= limit else [])
        return chosen

    def plan(self, merged: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[str]]], Any]:
        """Per object schema and direction: required names, optional names, maxProperties."""
        key = (id(merged), self.direction)
        hit = self.index.plans.get(key)
        if hit is None:
            deps = _mapping(merged.get("dependentRequired"))
            wanted = [r for r in _list(merged.get("required")) if isinstance(r, str)]
            required = _closure(wanted, deps, [])
            forbidden = _list(merged.get("_forbidden"))
            dependent = _mapping(merged.get("dependentSchemas"))
            optional = [
                (name, _closure([name], deps, required))
                for name, sub in _mapping(merged.get("properties")).items()
                if name not in required
                and name not in forbidden
                and name not in dependent  # would pull in a whole dependent schema
                and not self.index.skipped(sub, self.direction)
            ]
            hit = (required, optional, values.limit(merged.get("maxProperties")))
            self.index.plans[key] = hit
        return hit

    def wants_optional(self, depth: int) -> bool:
        if self.lean:
            return False
        if depth <= 1:
            return True
        return depth <= _SOFT_DEPTH and self.rng.random() < _OPTIONAL_SHARE[depth]

    def schema_for(self, merged: dict[str, Any], key: str) -> Any:
        props = _mapping(merged.get("properties"))
        if key in props:
            return props[key]
        for pattern, sub in _mapping(merged.get("patternProperties")).items():
            if matches_any((pattern,), key):
                return sub
        return merged.get("additionalProperties", True)

    def fill(
        self, out: dict[str, Any], merged: dict[str, Any], props: dict[str, Any], depth: int
    ) -> None:
        """Reach minProperties; give free-form maps a few entries."""
        wanted = values.count(merged.get("minProperties"), 0)
        limit = values.limit(merged.get("maxProperties"))
        if limit is not None and wanted > limit:
            raise GenerationError(f"minProperties {wanted} is more than maxProperties {limit}")
        extra = merged.get("additionalProperties", True)
        if not props and isinstance(extra, dict) and depth <= 2 and not self.lean:
            wanted = max(wanted, self.rng.randint(1, 2))
        wanted = wanted if limit is None else min(wanted, limit)
        forbidden = _list(merged.get("_forbidden"))
        for key, sub in props.items():
            if len(out) < wanted and key not in out and key not in forbidden:
                out[key] = self.value(sub, depth + 1, key)
        for _ in range(4 * wanted + 4):
            if len(out) >= wanted:
                return
            new = self.new_name(merged, out)
            if new is not None:
                out[new] = self.value(self.schema_for(merged, new), depth + 1, new)
        if len(out) < values.count(merged.get("minProperties"), 0):
            raise GenerationError("cannot find enough property names to reach minProperties")

    def new_name(self, merged: dict[str, Any], out: dict[str, Any]) -> str | None:
        patterns = list(_mapping(merged.get("patternProperties")))
        if patterns and (merged.get("additionalProperties") is False or self.rng.random() < 0.5):
            key = self.leaves.patterned(self.rng.choice(patterns), 0, None, "")
        elif merged.get("additionalProperties") is False:
            return None
        else:
            key = self.rng.choice(values.NOUNS)
            if matches_any(patterns, key):
                return None
        names = merged.get("propertyNames", True)
        if isinstance(names, dict) and not self.index.is_valid(names, key):
            key = self.leaves.string(self.index.merged(names), "")
        if key in out or key in _mapping(merged.get("properties")):
            return None
        return key if self.index.is_valid(names, key) else None

    # Arrays

    def array(self, merged: dict[str, Any], depth: int, name: str) -> list[Any]:
        prefix = _list(merged.get("prefixItems"))
        items = merged.get("items", True)
        contains = merged.get("contains")
        need = values.count(merged.get("minContains"), 1) if contains is not None else 0
        size = self.array_size(merged, depth, len(prefix) + need, items is False)
        unique = merged.get("uniqueItems") is True
        seen: set[Any] = set()
        out: list[Any] = []
        for i in range(size):
            if i < len(prefix):
                sub = prefix[i]
            elif i < len(prefix) + need:
                sub = self.index.joined(items, contains)
            else:
                sub = items
            item = self.element(sub, depth, values.singular(name), unique, seen, first=not out)
            if item is MISSING:
                if len(out) >= values.count(merged.get("minItems"), 0):
                    break
                raise GenerationError(f"cannot generate {size} distinct items for uniqueItems")
            out.append(item)
        return out

    def array_size(self, merged: dict[str, Any], depth: int, wanted: int, closed: bool) -> int:
        low = values.count(merged.get("minItems"), 0)
        high = values.limit(merged.get("maxItems"))
        if closed:
            high = min(high, wanted) if high is not None else wanted
        usual = self.rng.randint(1, 3) if depth <= _SOFT_DEPTH and not self.lean else 0
        size = max(usual, low, wanted)
        size = size if high is None else min(size, high)
        if size < low:
            raise GenerationError(f"minItems {low} is more than the array allows ({high})")
        return size

    def element(
        self, sub: Any, depth: int, name: str, unique: bool, seen: set[Any], *, first: bool
    ) -> Any:
        # Only the first item may be the spec's example, so that lists do not repeat it.
        for attempt in range(_TRIES if unique else 1):
            item = self.value(sub, depth + 1, name, examples=first and attempt == 0)
            if not unique:
                return item
            key = _freeze(item)
            if key not in seen:
                seen.add(key)
                return item
        return MISSING


def _kinds(merged: dict[str, Any], rng: random.Random) -> list[str]:
    """The types to try: non-null ones first, from a random start so retries vary."""
    if "type" not in merged:
        return [_infer(merged)]
    listed = type_list(merged["type"])
    real = [k for k in listed if k != "null"]
    start = rng.randrange(len(real)) if len(real) > 1 else 0
    return real[start:] + real[:start] + [k for k in listed if k == "null"]


def _infer(merged: dict[str, Any]) -> str:
    if _OBJECT_KEYS.intersection(merged):
        return "object"
    if _ARRAY_KEYS.intersection(merged):
        return "array"
    if _STRING_KEYS.intersection(merged) or str(merged.get("format")) in values.FORMATS:
        return "string"
    if _NUMBER_KEYS.intersection(merged):
        return "integer" if merged.get("format") in ("int32", "int64") else "number"
    return "any"


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: is_number(v) and float(v).is_integer(),
    "number": is_number,
    "string": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def _has_type(value: Any, kinds: list[str]) -> bool:
    return any(_TYPE_CHECKS.get(kind, lambda _: True)(value) for kind in kinds)


def _is_null(schema: Any) -> bool:
    return isinstance(schema, dict) and type_list(schema.get("type")) == ["null"]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _closure(start: list[str], deps: dict[str, Any], have: list[str]) -> list[str]:
    """`start` plus everything `dependentRequired` pulls in, minus what is already in `have`."""
    out: list[str] = []
    pending = list(start)
    while pending:
        key = pending.pop(0)
        if key in out or key in have:
            continue
        out.append(key)
        pending.extend(k for k in _list(deps.get(key)) if isinstance(k, str))
    return out


def _freeze(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (`1` and `1.0`, but not `true`)."""
    if isinstance(value, dict):
        return ("o", tuple(sorted((k, _freeze(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("a", tuple(_freeze(v) for v in value))
    if isinstance(value, bool) or value is None:
        return ("b", value)
    return ("n", value) if is_number(value) else ("s", value)
