"""Validate an inbound request against its operation; every violation is reported, none raised.

Parameters are decoded per style/explode (``params``), bodies per media type (JSON, form,
multipart), and then checked by a compiled JSON Schema validator cached on each schema.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonschema_rs
import orjson

from apitwin import params as P
from apitwin.bodies import decode_form, decode_multipart, decode_xml
from apitwin.http import InboundRequest
from apitwin.spec.model import Body, MediaType, Operation, Parameter, Schema


@dataclass(frozen=True, slots=True)
class Violation:
    location: str  # path, query, header, cookie, body
    name: str  # parameter name, or "" for the body
    pointer: str  # JSON pointer inside the value
    message: str
    keyword: str = ""  # the schema keyword that failed, when there is one

    def as_dict(self) -> dict[str, str]:
        data = {"in": self.location, "pointer": self.pointer, "message": self.message}
        if self.name:
            data["name"] = self.name
        if self.keyword:
            data["expected"] = self.keyword
        return data


@dataclass(slots=True)
class ValidRequest:
    """The request's decoded values (as far as they could be decoded)."""

    path: dict[str, Any] = field(default_factory=dict)
    query: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, Any] = field(default_factory=dict)
    cookies: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    media_type: str | None = None


@dataclass(slots=True)
class Outcome:
    request: ValidRequest
    violations: list[Violation]
    status: int = 200  # 400 for violations, 415 for an undeclared content type


def _is_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


# OpenAPI formats that JSON Schema does not define but real specs rely on.
FORMATS = {"byte": _is_base64, "base64": _is_base64}


def validator(schema: Schema) -> Any:
    found = schema.cache.get("validator")
    if found is None:
        found = jsonschema_rs.Draft202012Validator(
            schema.json, validate_formats=True, ignore_unknown_formats=True, formats=FORMATS
        )
        schema.cache["validator"] = found
    return found


def check(schema: Schema | None, value: Any, location: str, name: str = "") -> list[Violation]:
    if schema is None:
        return []
    found = []
    for error in validator(schema).iter_errors(value):
        pointer = "".join(f"/{_escape(str(p))}" for p in error.instance_path)
        keyword = str(error.schema_path[-1]) if error.schema_path else ""
        if keyword == "required":
            # Point at the missing property itself, which is what a caller needs to fix.
            pointer += f"/{_escape(str(getattr(error.kind, 'property', '')))}"
        found.append(Violation(location, name, pointer, error.message, keyword))
    return found


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


_OUTCOMES_KEPT = 1024  # per operation


def validate_request(
    op: Operation, raw_path_params: Mapping[str, str], request: InboundRequest
) -> Outcome:
    """The request's decoded values and violations. Shared between requests with the same
    parameters for an operation without a body (the usual read): read it, never change it."""
    if op.body is not None:
        return _validate(op, raw_path_params, request)
    key = _parameters_key(op, raw_path_params, request)
    kept: dict[Any, Outcome] | None = op.memo.get("outcomes")
    if kept is None:
        kept = op.memo["outcomes"] = {}
    outcome = kept.get(key)
    if outcome is None:
        outcome = _validate(op, raw_path_params, request)
        if len(kept) >= _OUTCOMES_KEPT:
            del kept[next(iter(kept))]
        kept[key] = outcome
    return outcome


def _parameters_key(
    op: Operation, raw_path_params: Mapping[str, str], request: InboundRequest
) -> tuple[Any, ...]:
    """Everything the parameters of ``op`` are read from."""
    key: list[Any] = [tuple(raw_path_params.items()), request.query]
    for param in op.parameters:
        if param.location == "header":
            key.append(request.headers.get(param.name.lower()))
        elif param.location == "cookie":
            key.append(request.cookies.get(param.name))
    return tuple(key)


def _validate(
    op: Operation, raw_path_params: Mapping[str, str], request: InboundRequest
) -> Outcome:
    outcome = Outcome(ValidRequest(), [])
    for param in op.parameters:
        _validate_parameter(param, op.parameters, raw_path_params, request, outcome)
    if op.body is not None:
        _validate_body(op.body, request, outcome)
    elif request.body and request.content_type:
        # Operations without a body ignore one, as real servers do; nothing to validate.
        pass
    if outcome.violations and outcome.status == 200:
        outcome.status = 400
    return outcome


def _validate_parameter(
    param: Parameter,
    op_params: tuple[Parameter, ...],
    raw_path: Mapping[str, str],
    request: InboundRequest,
    outcome: Outcome,
) -> None:
    if param.location == "path":
        value = P.deserialize_path(param, raw_path.get(param.name, ""))
        target = outcome.request.path
    elif param.location == "query":
        reserved = [p.name for p in op_params if p.location == "query" and p is not param]
        value = P.deserialize_query(param, request.raw_query_pairs, reserved=reserved)
        target = outcome.request.query
    elif param.location == "header":
        value = P.deserialize_header(param, request.headers.get(param.name.lower()))
        target = outcome.request.headers
    else:
        value = P.deserialize_cookie(param, request.cookies.get(param.name))
        target = outcome.request.cookies
    if value is P.MISSING:
        default = param.schema.json.get("default", P.MISSING) if param.schema else P.MISSING
        if default is not P.MISSING and not param.required:
            target[param.name] = default  # what the server assumes when the caller omits it
            return
        if param.required:
            outcome.violations.append(
                Violation(
                    param.location,
                    param.name,
                    "",
                    f"required {param.location} parameter '{param.name}' is missing",
                    "required",
                )
            )
        return
    if isinstance(value, P.ParamProblem):
        outcome.violations.append(Violation(param.location, param.name, "", value.message))
        return
    target[param.name] = value
    outcome.violations.extend(check(param.schema, value, param.location, param.name))


def find_media(media: dict[str, MediaType] | Any, content_type: str) -> MediaType | None:
    if content_type in media:
        return media[content_type]
    for name, candidate in media.items():
        base = name.split(";", 1)[0].strip().lower()
        if base == content_type:
            return candidate
    major = content_type.split("/", 1)[0]
    for name, candidate in media.items():
        base = name.split(";", 1)[0].strip().lower()
        if base == "*/*" or base == f"{major}/*":
            return candidate
    return None


def _validate_body(body: Body, request: InboundRequest, outcome: Outcome) -> None:
    if not request.body:
        if body.required and not _empty_allowed(body, request):
            outcome.violations.append(
                Violation("body", "", "", "request body is required", "required")
            )
        return
    if not body.media:
        return
    content_type = request.content_type or "application/octet-stream"
    media = find_media(body.media, content_type)
    if media is None:
        declared = ", ".join(body.media)
        outcome.violations.append(
            Violation(
                "header",
                "content-type",
                "",
                f"content type '{content_type}' is not accepted; expected one of: {declared}",
                "content-type",
            )
        )
        outcome.status = 415
        return
    outcome.request.media_type = media.name
    value = _decode_body(media, request, outcome)
    if value is P.MISSING:
        return
    outcome.request.body = value
    outcome.violations.extend(check(media.schema, value, "body"))


def _is_text(schema: Schema) -> bool:
    return schema.json.get("type") == "string"


def _empty_allowed(body: Body, request: InboundRequest) -> bool:
    """An empty non-JSON body is a value (""), valid when its schema accepts an empty string."""
    media = find_media(body.media, request.content_type) if request.content_type else None
    if media is None or media.is_json:
        return False
    return media.schema is None or validator(media.schema).is_valid("")


def _decode_body(media: MediaType, request: InboundRequest, outcome: Outcome) -> Any:
    kind = request.content_type
    if media.is_json or kind.endswith("+json") or kind == "application/json":
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            outcome.violations.append(Violation("body", "", "", f"body is not valid JSON: {exc}"))
            return P.MISSING
    if kind == "application/x-www-form-urlencoded":
        return decode_form(request.body, media.schema)
    if kind.startswith("multipart/"):
        decoded = decode_multipart(
            request.body, request.headers.get("content-type", ""), media.schema
        )
        if isinstance(decoded, str):
            outcome.violations.append(Violation("body", "", "", decoded))
            return P.MISSING
        return decoded
    if kind.endswith("/xml") or kind.endswith("+xml"):
        decoded = decode_xml(request.body, media.schema)
        if isinstance(decoded, str) and media.schema is not None and not _is_text(media.schema):
            outcome.violations.append(Violation("body", "", "", decoded))
            return P.MISSING
        return decoded
    if media.schema is not None and media.schema.json.get("format") not in (None, "binary"):
        # A textual encoding of binary data (base64, ...) can be checked like any string.
        return request.body.decode("utf-8", "replace")
    if kind.startswith("text/") and media.schema is not None:
        return request.body.decode("utf-8", "replace")
    return P.MISSING  # binary or unknown media: accepted as sent
