"""Turn raw HTTP parameter text into typed JSON values, ready for a JSON Schema validator.

Follows the OpenAPI 3.x ``style``/``explode`` rules (the "Style Examples" table); Swagger 2.0
``collectionFormat`` arrives here already mapped to a style by the loader. Everything here is a
pure function of its arguments: no I/O, nothing raised for bad input.

What the functions take:

* ``deserialize_path``: the raw path segment, still percent-encoded. Delimiters are found before
  decoding, so ``a%2Cb,c`` is ``["a,b", "c"]``. When the text has no literal delimiter at all, the
  decoded text is split instead, because many clients percent-encode a whole joined list
  (``1%2C2%2C3``).
* ``deserialize_query``: raw query pairs, still percent-encoded (``split_query`` makes them from a
  query string; a raw query string is accepted too). Keys and values are decoded here, ``+`` as a
  space. Same delimiter rule as paths; space- and pipe-delimited values are split after decoding,
  since the spec's own examples encode those delimiters (``%20``, ``%7C``).
* ``deserialize_header``: the header value as received (headers are not percent-encoded).
* ``deserialize_cookie``: the value of the cookie named like the parameter, percent-decoded here.

Results are JSON values, ``MISSING`` when the parameter is absent, or a ``ParamProblem`` when the
text cannot even be split into the expected shape. Text that splits fine but has the wrong type
(``"abc"`` for an integer) stays a string, so the validator reports it with its location.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal
from urllib.parse import unquote, unquote_plus

import orjson

from apitwin.schemanav import json_type
from apitwin.spec.model import Parameter, is_json_media

__all__ = [
    "MISSING",
    "ParamProblem",
    "coerce",
    "deserialize_cookie",
    "deserialize_header",
    "deserialize_path",
    "deserialize_query",
    "split_query",
]


@dataclass(frozen=True, slots=True)
class ParamProblem:
    """Why a parameter's text could not be deserialized (the caller adds name and location)."""

    message: str


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"  # copies and pickles stay the one sentinel, so `is MISSING` holds


MISSING: Final = _Missing()
"""The parameter is absent from the request (compare with ``is``)."""

Shape = Literal["primitive", "array", "object"]
Decoder = Callable[[str], str]
QueryInput = str | Mapping[str, list[str]] | list[tuple[str, str]]

_MAX_DEPTH = 32  # bounds $ref/allOf chains, so recursive schemas cannot loop
_INT = re.compile(r"-?[0-9]+")
_NUM = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_BRACKETS = re.compile(r"(?:\[[^\[\]]*\])+")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
# Cheapest and most telling first; `_rank` picks among the types that parse.
_ORDER = ("boolean", "integer", "number", "object", "string", "null", "array")
_UNMATCHED = 99
_NONE: frozenset[int] = frozenset()
_OBJECT_WORDS = frozenset(
    (
        "properties",
        "additionalProperties",
        "patternProperties",
        "required",
        "minProperties",
        "maxProperties",
        "propertyNames",
        "dependentRequired",
    )
)
_DELIMITERS = {"spaceDelimited": " ", "pipeDelimited": "|"}


def _same(text: str) -> str:
    return text


def _form_decode(text: str) -> str:
    # Query text: '+' is a space (HTML forms, URLSearchParams); skip the work for plain keys.
    return unquote_plus(text) if "%" in text or "+" in text else text


def _strip(text: str) -> str:
    return text.strip()


# ---------------------------------------------------------------- path, query, header, cookie


def deserialize_path(param: Parameter, raw: str) -> Any:
    """Deserialize one path parameter from its raw (percent-encoded) segment text.

    Styles: simple (default), label (``.a.b``) and matrix (``;id=5``). Returns the typed value or
    a ``ParamProblem``.
    """
    if param.media_type is not None:
        return _content(param, unquote(raw))
    shape = _param_shape(param)
    style = param.style
    value: Any
    if style == "matrix":
        value = _matrix(param, raw, shape)
    elif style == "label":
        if not raw.startswith("."):
            return ParamProblem(f"expected label style '.value', got {raw!r}")
        body = raw[1:]
        if param.explode:
            # '.' is never percent-encoded by clients, so an encoded dot is data, not a delimiter.
            value = _delimited(body, ".", shape, True, unquote, fallback=False)
        elif "," not in body and "." in body:
            # OpenAPI 3.0.0-3.1.0 examples join non-exploded labels with '.', later ones with ','.
            value = _delimited(body, ".", shape, False, unquote, fallback=False)
        else:
            value = _delimited(body, ",", shape, False, unquote)
    else:
        value = _delimited(raw, ",", shape, param.explode, unquote)
    return _typed(param, value)


def split_query(query: str) -> list[tuple[str, str]]:
    """Split a raw query string into (key, value) pairs without percent-decoding anything."""
    if query.startswith("?"):
        query = query[1:]
    pairs: list[tuple[str, str]] = []
    for chunk in query.split("&"):
        if chunk:
            key, _, value = chunk.partition("=")
            pairs.append((key, value))
    return pairs


def deserialize_query(
    param: Parameter, query: QueryInput, *, reserved: Collection[str] = ()
) -> Any:
    """Deserialize one query parameter from the request's raw (still percent-encoded) query.

    ``query`` is a raw query string, or pairs/lists of values as ``split_query`` makes them.
    Styles: form (either explode), spaceDelimited, pipeDelimited and deepObject. An exploded
    object takes its schema's property names as query keys; a free-form one (no properties) takes
    every key except the ``reserved`` ones, which the caller sets to its other parameters' names.
    Returns ``MISSING`` when absent (or empty, for an optional ``allowEmptyValue`` parameter).
    """
    pairs = _query_pairs(query)
    name = param.name
    if param.media_type is not None:
        found = [v for k, v in pairs if k == name]
        return _content(param, _form_decode(found[0])) if found else MISSING
    shape = _param_shape(param)
    style = param.style
    if style == "deepObject":
        return _typed(param, _deep_object(name, pairs))
    if shape == "object" and param.explode:
        return _typed(param, _exploded_object(param, pairs, reserved))
    values = [v for k, v in pairs if k == name]
    if not values:
        return MISSING
    if values == [""] and param.allow_empty_value and not param.required:
        # allowEmptyValue: an empty value stands for "parameter unused".
        return MISSING
    value: Any
    if shape == "primitive":
        value = _form_decode(values[0])  # a repeated primitive: the first one counts
    elif shape == "array" and param.explode:
        value = [] if values == [""] else [_form_decode(v) for v in values]
    else:
        sep = _DELIMITERS.get(style, ",")
        parts: list[Any] = []
        for raw in values if shape == "array" else values[:1]:
            if sep == " ":
                # '+', '%20' and ' ' are all the same space once decoded.
                part = _delimited(_form_decode(raw), " ", shape, False, _same)
            else:
                part = _delimited(raw, sep, shape, False, _form_decode)
            if isinstance(part, ParamProblem) or shape == "object":
                return _typed(param, part)
            parts.extend(part)  # non-exploded arrays given twice: lenient, keep every item
        value = parts
    return _typed(param, value)


def deserialize_header(param: Parameter, raw: str | None) -> Any:
    """Deserialize one header parameter (simple style) from its value; ``None`` means absent."""
    if raw is None:
        return MISSING
    if param.media_type is not None:
        return _content(param, raw)
    shape = _param_shape(param)
    # Lists in headers may carry optional whitespace after commas ("a, b").
    return _typed(param, _delimited(raw, ",", shape, param.explode, _strip))


def deserialize_cookie(param: Parameter, raw: str | None) -> Any:
    """Deserialize one cookie parameter (form style) from the cookie's value; ``None``: absent.

    A cookie value cannot repeat its name, so arrays are comma-separated whatever ``explode``
    says, and an exploded object is read as ``R=100&G=200`` (or ``R=100,G=200``).
    """
    if raw is None:
        return MISSING
    if param.media_type is not None:
        return _content(param, unquote(raw))
    shape = _param_shape(param)
    if shape == "object" and param.explode:
        sep = "&" if "&" in raw else ","
        return _typed(param, _delimited(raw, sep, shape, True, unquote))
    return _typed(param, _delimited(raw, ",", shape, False, unquote))


# ---------------------------------------------------------------- splitting by style


def _typed(param: Parameter, value: Any) -> Any:
    if isinstance(value, ParamProblem) or value is MISSING or param.schema is None:
        return value
    schema = param.schema.json
    if isinstance(value, str):
        if "scalar" not in param.memo:
            param.memo["scalar"] = _scalar_reader(schema)
        read: Callable[[str], Any] | None = param.memo["scalar"]
        if read is not None:
            return read(value)
    return _coerce(value, schema, schema, 0, True, _NONE)[1]


def _scalar_reader(schema: Any) -> Callable[[str], Any] | None:
    """For a schema of one scalar type and nothing to combine (most parameters), what
    ``_coerce`` makes of a text, without its search: worked out once per parameter."""
    if not isinstance(schema, dict) or not _COMBINING.isdisjoint(schema):
        return None
    kind = schema.get("type")
    return _SCALAR_READERS.get(kind) if isinstance(kind, str) else None


def _read_integer(text: str) -> Any:
    return _as_type("integer", text, [], {}, 0, False)[1]


def _read_number(text: str) -> Any:
    # As _coerce tries them: an integer reading first, then a number.
    if _INT.fullmatch(text):
        return _read_integer(text)
    return _as_type("number", text, [], {}, 0, False)[1]


def _read_boolean(text: str) -> Any:
    return text == "true" if text in ("true", "false") else text


_COMBINING: Final = frozenset(("$ref", "allOf", "anyOf", "oneOf", "not", "$dynamicRef"))
_SCALAR_READERS: Final[dict[str, Callable[[str], Any]]] = {
    "string": _same,
    "integer": _read_integer,
    "number": _read_number,
    "boolean": _read_boolean,
}


def _content(param: Parameter, text: str) -> Any:
    if param.media_type is not None and is_json_media(param.media_type):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return ParamProblem(f"not valid JSON: {exc}")
    return _typed(param, text)


def _param_shape(param: Parameter) -> Shape:
    shape: Shape | None = param.memo.get("shape")
    if shape is None:
        schema = param.schema.json if param.schema is not None else None
        shape = "primitive" if schema is None else _shape(schema, schema, 0, _NONE)
        param.memo["shape"] = shape
    return shape


def _split(raw: str, sep: str, decode: Decoder, fallback: bool) -> tuple[list[str], Decoder]:
    """Split on literal delimiters first; returns the parts and the decoding still owed them."""
    if not raw:
        return [], decode
    if sep in raw or not fallback:
        return raw.split(sep), decode
    # No literal delimiter: the client may have percent-encoded the delimiters too.
    return decode(raw).split(sep), _same


def _pair(part: str, decode: Decoder) -> tuple[str, str]:
    if "=" not in part:
        part, decode = decode(part), _same
    key, _, value = part.partition("=")
    return decode(key), decode(value)


def _delimited(
    raw: str, sep: str, shape: Shape, explode: bool, decode: Decoder, *, fallback: bool = True
) -> Any:
    """A whole value in one string, items joined by ``sep`` (simple, form, label, delimited)."""
    if shape == "primitive":
        return decode(raw)
    parts, decode = _split(raw, sep, decode, fallback)
    if shape == "array":
        return [decode(p) for p in parts]
    if explode:
        return dict(_pair(p, decode) for p in parts)
    items = [decode(p) for p in parts]
    if len(items) % 2:
        return ParamProblem(f"expected key{sep}value pairs, got {len(items)} items")
    return dict(zip(items[::2], items[1::2], strict=True))


def _matrix(param: Parameter, raw: str, shape: Shape) -> Any:
    name = param.name
    if not raw.startswith(";"):
        return ParamProblem(f"expected matrix style ';{name}=value', got {raw!r}")
    segments = raw[1:].split(";")
    if shape == "object" and param.explode:
        return dict(_pair(s, unquote) for s in segments if s)
    values: list[str] = []
    for segment in segments:
        key, _, value = segment.partition("=")
        if unquote(key) != name:
            return ParamProblem(f"expected matrix style ';{name}=value', got {raw!r}")
        values.append(value)
    if shape == "array":
        if param.explode:
            return [] if values == [""] else [unquote(v) for v in values]
        return [item for v in values for item in _delimited(v, ",", shape, False, unquote)]
    return _delimited(values[0], ",", shape, False, unquote)


def _query_pairs(query: QueryInput) -> list[tuple[str, str]]:
    if isinstance(query, str):
        items = split_query(query)
    elif isinstance(query, Mapping):
        items = [
            (key, value)
            for key, values in query.items()
            # A plain str would otherwise be iterated character by character.
            for value in ([values] if isinstance(values, str) else values)
        ]
    else:
        items = query
    # Keys are decoded up front: deepObject keys often arrive as color%5BR%5D.
    return [(_form_decode(key), value) for key, value in items]


def _deep_object(name: str, pairs: list[tuple[str, str]]) -> Any:
    """``color[R]=100&color[G]=200``; nested brackets nest, ``[]`` and repeats make lists."""
    tree: dict[str, Any] = {}
    found = False
    prefix = name + "["
    for key, raw in pairs:
        if not key.startswith(prefix) or not _BRACKETS.fullmatch(key, len(name)):
            continue
        found = True
        path = _BRACKET.findall(key, len(name))
        value = _form_decode(raw)
        node = tree
        for i, segment in enumerate(path[:-1]):
            if path[i + 1] == "" and i + 2 == len(path):  # name[a][]=v appends to a list
                current = node.get(segment)
                node[segment] = [*current, value] if isinstance(current, list) else [value]
                break
            child = node.setdefault(segment, {})
            if not isinstance(child, dict):
                break  # name[a]=1&name[a][b]=2: keep the first
            node = child
        else:
            last = path[-1]
            current = node.get(last)
            if current is None:
                node[last] = value
            elif isinstance(current, list):
                current.append(value)
            elif isinstance(current, str):
                node[last] = [current, value]
    return tree if found else MISSING


def _exploded_object(
    param: Parameter, pairs: list[tuple[str, str]], reserved: Collection[str]
) -> Any:
    """``R=100&G=200``: each property is its own query key."""
    schema = param.schema.json if param.schema is not None else {}
    names, patterns, free_form = _object_keys(schema, schema)
    collected: dict[str, list[str]] = {}
    for key, raw in pairs:
        if (
            key in names
            or any(p.search(key) for p in patterns)
            or (free_form and key not in reserved and key != param.name)
        ):
            collected.setdefault(key, []).append(_form_decode(raw))
    if not collected:
        return MISSING
    return {key: vs[0] if len(vs) == 1 else vs for key, vs in collected.items()}


def _object_keys(schema: Any, root: dict[str, Any]) -> tuple[set[str], list[re.Pattern[str]], bool]:
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    closed = False
    schemas = [schema]
    seen: set[int] = set()
    while schemas:
        current = schemas.pop()
        if id(current) in seen or len(seen) > 256:
            continue
        seen.add(id(current))
        parts = _parts(current, root, 0)
        for part in parts:
            props = part.get("properties")
            if isinstance(props, dict):
                names.update(props)
            pattern_props = part.get("patternProperties")
            if isinstance(pattern_props, dict):
                patterns.extend(p for p in map(_regex, pattern_props) if p is not None)
            if part.get("additionalProperties") is False:
                closed = True
        schemas.extend(_alternatives(parts))
    return names, patterns, not names and not patterns and not closed


# ---------------------------------------------------------------- coercion by schema


def coerce(value: Any, schema: dict[str, Any] | None, root: dict[str, Any] | None = None) -> Any:
    """Convert parameter text to the JSON type ``schema`` asks for; never raises.

    ``value`` is a string, or a list/dict of strings as a style split it (anything else is
    returned as is). ``root`` holds the ``$defs`` that ``#/$defs/...`` refs point into (default:
    ``schema`` itself). Text that does not parse as the wanted type stays a string, so the
    validator reports it. Type lists, ``anyOf``/``oneOf`` (first branch whose type parses) and
    ``allOf`` are followed; a schema without a type is guessed from its keywords.
    """
    if not isinstance(schema, dict):
        return value
    return _coerce(value, schema, schema if root is None else root, 0, True, _NONE)[1]


def _coerce(
    value: Any,
    schema: Any,
    root: dict[str, Any],
    depth: int,
    split: bool,
    visiting: frozenset[int],
) -> tuple[bool, Any]:
    """Returns (whether the schema's type was matched, the value).

    ``split``: text may be split on commas into an array. ``visiting``: schemas already being
    tried for this same text, so self-referencing anyOf/oneOf cannot recurse without end.
    """
    if depth > _MAX_DEPTH or not isinstance(schema, dict):
        return False, value
    parts = _parts(schema, root, depth)
    if isinstance(value, dict):
        return True, _coerce_object(value, parts, root, depth)
    if isinstance(value, list):
        return True, _coerce_array(value, parts, root, depth)
    if not isinstance(value, str):
        return True, value
    types = _types(parts)
    results: Iterable[tuple[bool, Any]]
    if types is None:
        alternatives = _alternatives(parts)
        if not alternatives:
            return True, value  # unconstrained: text is as good as anything
        ids = {id(part) for part in parts}
        if not visiting.isdisjoint(ids):
            return False, value
        inner = visiting | ids
        results = (_coerce(value, branch, root, depth + 1, split, inner) for branch in alternatives)
    else:
        results = (
            _as_type(kind, value, parts, root, depth, split) for kind in _ORDER if kind in types
        )
    best: Any = None
    best_rank = _UNMATCHED
    for matched, result in results:
        if matched:
            rank = _rank(value, result)
            if rank == 0:
                return True, result
            if rank < best_rank:
                best, best_rank = result, rank
    return (True, best) if best_rank < _UNMATCHED else (False, value)


def _rank(text: str, result: Any) -> int:
    """How good a reading of ``text`` ``result`` is; 0 is best and ends the search."""
    if isinstance(result, str):
        return 1  # text is always a string, so a type that parses is the better guess
    if result is None:
        return 2  # an explicit string beats null ("" is more likely empty than null)
    if isinstance(result, (list, dict)) and not text.startswith(("[", "{")):
        return 3  # comma-split text: the weakest guess (JSON text ranks 0)
    return 0


def _as_type(
    kind: str,
    text: str,
    parts: list[dict[str, Any]],
    root: dict[str, Any],
    depth: int,
    split: bool,
) -> tuple[bool, Any]:
    if kind == "string":
        return True, text
    if kind == "boolean":
        if text in ("true", "false"):
            return True, text == "true"
    elif kind == "integer" or (kind == "number" and _INT.fullmatch(text)):
        if _INT.fullmatch(text):
            try:
                return True, int(text)
            except ValueError:  # beyond Python's int-parsing digit limit
                pass
    elif kind == "number":
        if _NUM.fullmatch(text):
            number = float(text)
            if math.isfinite(number):
                return True, number
    elif kind == "null":
        if text in ("", "null"):
            return True, None
    elif kind == "array":
        if text.startswith("["):
            parsed = _json(text)
            if isinstance(parsed, list):
                return True, parsed
        if split:
            return True, _coerce_array(text.split(",") if text else [], parts, root, depth)
    elif kind == "object" and text.startswith("{"):
        parsed = _json(text)
        if isinstance(parsed, dict):
            return True, parsed
    return False, text


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _coerce_array(
    items: list[Any], parts: list[dict[str, Any]], root: dict[str, Any], depth: int
) -> list[Any]:
    if not items:
        return items
    rest = _find(parts, root, depth, _keyword, "items", _NONE)
    prefix: list[Any] = next(
        (p["prefixItems"] for p in parts if isinstance(p.get("prefixItems"), list)), []
    )
    out: list[Any] = []
    for index, item in enumerate(items):
        sub = prefix[index] if index < len(prefix) else rest
        # Items were split out of one value already: splitting them again is never meant.
        out.append(item if sub is None else _coerce(item, sub, root, depth + 1, False, _NONE)[1])
    return out


def _keyword(part: dict[str, Any], key: str) -> Any:
    return part.get(key)


def _coerce_object(
    obj: dict[str, Any], parts: list[dict[str, Any]], root: dict[str, Any], depth: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, item in obj.items():
        sub = _find(parts, root, depth, _property, key, _NONE)
        if sub is None:
            sub = _find(parts, root, depth, _pattern_property, key, _NONE)
        if sub is None:
            sub = _find(parts, root, depth, _keyword, "additionalProperties", _NONE)
        out[key] = item if sub is None else _coerce(item, sub, root, depth + 1, True, _NONE)[1]
    return out


def _property(part: dict[str, Any], key: str) -> Any:
    props = part.get("properties")
    return props.get(key) if isinstance(props, dict) else None


def _pattern_property(part: dict[str, Any], key: str) -> Any:
    patterns = part.get("patternProperties")
    if isinstance(patterns, dict):
        for pattern, sub in patterns.items():
            compiled = _regex(pattern)
            if compiled is not None and compiled.search(key):
                return sub
    return None


def _find(
    parts: list[dict[str, Any]],
    root: dict[str, Any],
    depth: int,
    pick: Callable[[dict[str, Any], Any], Any],
    arg: Any,
    visiting: frozenset[int],
) -> dict[str, Any] | None:
    """The subschema ``pick`` finds in every part (all must hold), else in the first alternative
    that has one (anyOf/oneOf branches, e.g. the properties of polymorphic objects)."""
    found = [sub for sub in (pick(part, arg) for part in parts) if isinstance(sub, dict)]
    if found:
        return found[0] if len(found) == 1 else {"allOf": found}
    ids = {id(part) for part in parts}
    if depth >= _MAX_DEPTH or not visiting.isdisjoint(ids):
        return None
    inner = visiting | ids
    for branch in _alternatives(parts):
        sub = _find(_parts(branch, root, depth + 1), root, depth + 1, pick, arg, inner)
        if sub is not None:
            return sub
    return None


# ---------------------------------------------------------------- reading schemas


def _parts(schema: Any, root: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """The schema plus everything it must also satisfy: its `$ref` target and allOf members."""
    if isinstance(schema, dict) and "$ref" not in schema and "allOf" not in schema:
        return [schema]  # the common case, kept cheap: this runs per value per request
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(schema, depth)]
    while stack:
        current, level = stack.pop()
        if not isinstance(current, dict) or level > _MAX_DEPTH or id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        nested: list[Any] = []
        ref = current.get("$ref")
        if isinstance(ref, str):
            nested.append(_resolve(ref, root))
        all_of = current.get("allOf")
        if isinstance(all_of, list):
            nested.extend(all_of)
        stack.extend((sub, level + 1) for sub in reversed(nested))
    return out


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    """A local JSON pointer (bundled schemas only have ``#/$defs/<key>`` refs)."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None
    node: Any = root
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            node = node.get(token)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _alternatives(parts: list[dict[str, Any]]) -> list[Any]:
    out: list[Any] = []
    for part in parts:
        for key in ("anyOf", "oneOf"):
            branches = part.get(key)
            if isinstance(branches, list):
                out.extend(branches)
    return out


def _types(parts: list[dict[str, Any]]) -> frozenset[str] | None:
    """The JSON types the parts allow, or None when no part constrains the type."""
    declared: frozenset[str] | None = None
    for part in parts:
        kind = part.get("type")
        if isinstance(kind, str):
            kinds = frozenset((kind,))
        elif isinstance(kind, list):
            kinds = frozenset(k for k in kind if isinstance(k, str))
        else:
            continue
        if "number" in kinds:
            kinds |= {"integer"}  # integers are numbers, so allOf(number, integer) is integer
        # allOf members must all hold; an empty intersection is a broken schema, keep a guess.
        declared = kinds if declared is None else (declared & kinds) or declared
    if declared is not None:
        return declared
    inferred: set[str] = set()
    for part in parts:
        if not _OBJECT_WORDS.isdisjoint(part):
            inferred.add("object")
        if "items" in part or "prefixItems" in part:
            inferred.add("array")
        values = part.get("enum")
        if isinstance(values, list):
            inferred.update(json_type(v) for v in values)
        if "const" in part:
            inferred.add(json_type(part["const"]))
    return frozenset(inferred) if inferred else None


def _shape(schema: Any, root: dict[str, Any], depth: int, visiting: frozenset[int]) -> Shape:
    """How the parameter is serialized: as one value, a list or key/value pairs."""
    parts = _parts(schema, root, depth)
    types = _types(parts)
    if types is not None:
        return "array" if "array" in types else "object" if "object" in types else "primitive"
    ids = {id(part) for part in parts}
    if depth >= _MAX_DEPTH or not visiting.isdisjoint(ids):
        return "primitive"
    inner = visiting | ids
    shapes = {_shape(branch, root, depth + 1, inner) for branch in _alternatives(parts)}
    return "array" if "array" in shapes else "object" if "object" in shapes else "primitive"


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None
