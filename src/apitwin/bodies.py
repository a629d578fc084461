"""Decode form-urlencoded and multipart bodies into JSON values shaped by the body schema."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qsl

from python_multipart import parse_form
from python_multipart.exceptions import FormParserError

from apitwin.params import coerce
from apitwin.spec.model import Schema


def _properties(schema: Schema | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(property schemas, root) of an object body schema, following a top-level $ref."""
    if schema is None:
        return {}, {}
    node = _deref_root(schema)
    props = node.get("properties") if isinstance(node, dict) else None
    return (props if isinstance(props, dict) else {}), schema.json


def _shape(pairs: list[tuple[str, str]], schema: Schema | None) -> dict[str, Any]:
    props, root = _properties(schema)
    result: dict[str, Any] = {}
    for key, value in pairs:
        prop = props.get(key, {})
        if not isinstance(prop, dict):
            result[key] = value
        elif _is_array(prop):
            items = prop.get("items", {}) if isinstance(prop.get("items"), dict) else {}
            item = coerce(value, items, root)
            if not (_wants_object(items, root) and not isinstance(item, dict)):
                result.setdefault(key, []).append(item)
        else:
            item = coerce(value, prop, root)
            # Flat form fields cannot carry nested objects: such fields are left unchecked.
            if not (_wants_object(prop, root) and not isinstance(item, dict)):
                result[key] = item
    return result


def _wants_object(schema: dict[str, Any], root: dict[str, Any]) -> bool:
    node: Any = schema
    for _ in range(8):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            break
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    return isinstance(node, dict) and (node.get("type") == "object" or "properties" in node)


def decode_form(body: bytes, schema: Schema | None) -> dict[str, Any]:
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    shaped = _shape(pairs, schema)
    # A form cannot express an empty array: an absent required array field is read as [].
    props, _ = _properties(schema)
    node = _deref_root(schema)
    for name in node.get("required", ()) if isinstance(node, dict) else ():
        prop = props.get(name)
        if name not in shaped and isinstance(prop, dict) and _is_array(prop):
            shaped[name] = []
    return shaped


def _deref_root(schema: Schema | None) -> Any:
    if schema is None:
        return {}
    root = schema.json
    node: Any = root
    for _ in range(8):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            break
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    return node


def _is_array(prop: dict[str, Any]) -> bool:
    kind = prop.get("type")
    return kind == "array" or (isinstance(kind, list) and "array" in kind)


def decode_multipart(body: bytes, content_type: str, schema: Schema | None) -> dict[str, Any] | str:
    """The parts as an object (a file becomes its text); a returned str names the problem."""
    pairs: list[tuple[str, str]] = []

    def on_field(field: Any) -> None:
        pairs.append((_text(field.field_name), _text(field.value or b"")))

    def on_file(file: Any) -> None:
        file.file_object.seek(0)
        pairs.append((_text(file.field_name), _text(file.file_object.read())))

    headers = {"Content-Type": content_type.encode("latin-1", "replace")}
    try:
        parse_form(headers, io.BytesIO(body), on_field, on_file)
    except (FormParserError, ValueError) as exc:
        return f"malformed multipart body: {exc}"
    return _shape(pairs, schema)


def _text(value: bytes | None) -> str:
    return (value or b"").decode("utf-8", "replace")
