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
    root = schema.json
    node = root
    for _ in range(8):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            break
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    props = node.get("properties") if isinstance(node, dict) else None
    return (props if isinstance(props, dict) else {}), root


def _shape(pairs: list[tuple[str, str]], schema: Schema | None) -> dict[str, Any]:
    props, root = _properties(schema)
    result: dict[str, Any] = {}
    for key, value in pairs:
        prop = props.get(key, {})
        is_array = isinstance(prop, dict) and (
            prop.get("type") == "array" or "array" in (prop.get("type") or ())
        )
        if is_array:
            items = prop.get("items", {}) if isinstance(prop.get("items"), dict) else {}
            result.setdefault(key, []).append(coerce(value, items, root))
        else:
            result[key] = coerce(value, prop, root) if isinstance(prop, dict) else value
    return result


def decode_form(body: bytes, schema: Schema | None) -> dict[str, Any]:
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return _shape(pairs, schema)


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
