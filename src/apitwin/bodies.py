"""Decode form-urlencoded and multipart bodies into JSON values shaped by the body schema."""

from __future__ import annotations

import io
from typing import Any
from urllib.parse import parse_qsl
from xml.etree import ElementTree

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
    node = _deref(schema, root)
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
    return _deref(schema.json, schema.json)


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


def decode_xml(body: bytes, schema: Schema | None) -> Any:
    """An XML body as the JSON value its schema describes (OpenAPI `xml` names and wrapping).

    Returns a str naming the problem when the body is not well-formed XML.
    """
    try:
        element = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        return f"body is not well-formed XML: {exc}"
    if schema is None:
        return _xml_loose(element)
    root = schema.json
    return _xml_value(element, root, root)


def _xml_loose(element: ElementTree.Element) -> Any:
    children = list(element)
    if not children:
        return element.text or ""
    result: dict[str, Any] = {}
    for child in children:
        value = _xml_loose(child)
        if child.tag in result:
            previous = result[child.tag]
            result[child.tag] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
        else:
            result[child.tag] = value
    return result


def _xml_value(element: ElementTree.Element, schema: Any, root: dict[str, Any]) -> Any:
    node = _deref(schema, root)
    if not isinstance(node, dict):
        return element.text or ""
    if _is_array(node):
        items = node.get("items", {})
        return [_xml_value(child, items, root) for child in element]
    if _wants_object(node, root) or "allOf" in node:
        if not len(element) and (element.text or "").strip():
            return element.text  # text where an object belongs: the validator names it
        return _xml_object(element, node, root)
    return coerce(element.text or "", node, root)


def _xml_object(element: ElementTree.Element, node: dict[str, Any], root: dict[str, Any]) -> Any:
    result: dict[str, Any] = {}
    for name, prop in _all_properties(node, root).items():
        prop_node = _deref(prop, root)
        tag = _xml_name(prop_node, name)
        if isinstance(prop_node, dict) and _xml_attribute(prop_node):
            if tag in element.attrib:
                result[name] = coerce(element.attrib[tag], prop_node, root)
            continue
        found = element.findall(tag)
        if isinstance(prop_node, dict) and _is_array(prop_node) and not _xml_wrapped(prop_node):
            items = _deref(prop_node.get("items", {}), root)
            tag = _xml_name(items, name)
            found = element.findall(tag)
            result[name] = [_xml_value(child, items, root) for child in found]
        elif found:
            result[name] = _xml_value(found[0], prop, root)
    return result


def _deref(node: Any, root: dict[str, Any]) -> Any:
    for _ in range(8):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            break
        node = root.get("$defs", {}).get(ref[len("#/$defs/") :], {})
    return node


def _all_properties(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    found = dict(node.get("properties") or {})
    for part in node.get("allOf") or ():
        inner = _deref(part, root)
        if isinstance(inner, dict):
            found.update(_all_properties(inner, root))
    return found


def _xml_info(node: Any) -> dict[str, Any]:
    info = node.get("xml") if isinstance(node, dict) else None
    return info if isinstance(info, dict) else {}


def _xml_name(node: Any, default: str) -> str:
    return str(_xml_info(node).get("name") or default)


def _xml_wrapped(node: Any) -> bool:
    return bool(_xml_info(node).get("wrapped"))


def _xml_attribute(node: Any) -> bool:
    return bool(_xml_info(node).get("attribute"))
