"""Build response bodies and headers: from examples, generated data, or the spec's error shape."""

from __future__ import annotations

import base64
import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import orjson

from apitwin.generation import Generator
from apitwin.http import MockResponse
from apitwin.negotiation import response_for_status
from apitwin.schemanav import at, standalone
from apitwin.spec.model import Header, MediaType, Operation, Response, Schema, is_json_media
from apitwin.validation import Violation, validator

PROBLEM_JSON = "application/problem+json"
_MESSAGE_FIELDS = ("message", "detail", "error_description", "description", "error", "title", "msg")
_LIST_FIELDS = ("errors", "details", "violations", "problems", "fieldErrors", "field_errors")


class StableRandom(random.Random):
    """A ``random.Random`` seeded from ``parts`` on its first draw, with the same sequence.

    Most responses (stored records) draw nothing, and seeding costs more than the rest of
    building such a response. Every method of ``random.Random`` draws through ``random`` or
    ``getrandbits``, so overriding both seeds it in time.
    """

    def __new__(cls, parts: tuple[object, ...]) -> StableRandom:
        # A cheap placeholder state (the C constructor seeds from its argument), replaced later.
        return random.Random.__new__(cls, 0)  # type: ignore[call-arg]

    def __init__(self, parts: tuple[object, ...]) -> None:  # not seeded yet, on purpose
        self._parts: tuple[object, ...] | None = parts
        self.gauss_next = None

    def _seed_now(self, parts: tuple[object, ...]) -> None:
        self._parts = None
        random.Random.seed(self, zlib.crc32(repr(parts).encode()))

    def random(self) -> float:
        if self._parts is not None:
            self._seed_now(self._parts)
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        if self._parts is not None:
            self._seed_now(self._parts)
        return super().getrandbits(k)

    def seed(self, *args: Any, **kwargs: Any) -> None:
        self._parts = None
        super().seed(*args, **kwargs)

    def getstate(self) -> tuple[Any, ...]:
        if self._parts is not None:
            self._seed_now(self._parts)
        return super().getstate()

    def setstate(self, state: tuple[Any, ...]) -> None:
        self._parts = None
        super().setstate(state)


def stable_rng(*parts: object) -> random.Random:
    """A generator seeded from the request's identity, so the same request gets the same data."""
    return StableRandom(parts)


def example_is_valid(media: MediaType, value: Any) -> bool:
    if media.schema is None:
        return True
    key = f"example-valid:{id(value)}"
    if key not in media.schema.cache:
        media.schema.cache[key] = validator(media.schema).is_valid(value)
    return bool(media.schema.cache[key])


def body_value(
    media: MediaType, example_value: Any, has_example: bool, gen: Generator, rng: random.Random
) -> Any:
    if has_example and (not media.is_json or example_is_valid(media, example_value)):
        return example_value
    if media.schema is None:
        return {} if media.is_json else ""
    return gen.generate(media.schema.json, direction="response", rng=rng)


def encode(media_name: str, value: Any) -> tuple[bytes, str]:
    """Serialise ``value`` for the media type; returns (body, content type)."""
    base = media_name.split(";", 1)[0].strip().lower()
    if "*" in base:
        base = "application/json"
    if is_json_media(base):
        return orjson.dumps(value), media_name if "*" not in media_name else base
    if isinstance(value, bytes):
        return value, media_name
    if base.endswith("xml"):
        return (value if isinstance(value, str) else to_xml(value)).encode(), media_name
    if isinstance(value, str):
        if base.startswith(("image/", "application/octet")) and _looks_base64(value):
            return base64.b64decode(value), media_name
        return value.encode(), media_name
    return orjson.dumps(value), media_name


def _looks_base64(value: str) -> bool:
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        return False
    return True


def to_xml(value: Any, name: str = "root") -> str:
    if isinstance(value, dict):
        inner = "".join(to_xml(v, str(k)) for k, v in value.items())
    elif isinstance(value, list):
        inner = "".join(to_xml(v, "item") for v in value)
    elif value is None:
        return f"<{name}/>"
    else:
        inner = xml_escape(str(value).lower() if isinstance(value, bool) else str(value))
    return f"<{name}>{inner}</{name}>"


def header_values(
    headers: dict[str, Header] | Any, gen: Generator, rng: random.Random
) -> list[tuple[str, str]]:
    result = []
    for header in headers.values():
        if header.examples:
            value = header.examples[0].value
        elif header.schema is not None:
            value = gen.generate(header.schema.json, direction="response", rng=rng)
        else:
            value = "x"
        result.append((header.name, _header_text(value)))
    return result


def _header_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_header_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k},{_header_text(v)}" for k, v in value.items())
    return "" if value is None else str(value)


def problem(
    status: int,
    detail: str,
    violations: list[Violation] | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> MockResponse:
    """RFC 9457 problem+json, for errors the spec gives no shape for."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error",
        "status": status,
        "detail": detail,
    }
    if violations:
        body["errors"] = [v.as_dict() for v in violations]
    return MockResponse(
        status,
        [("content-type", PROBLEM_JSON), *(headers or [])],
        orjson.dumps(body),
        violations=[v.as_dict() for v in violations or ()],
        note=detail,
    )


def error_response(
    op: Operation | None,
    status: int,
    detail: str,
    violations: list[Violation],
    gen: Generator,
    headers: list[tuple[str, str]] | None = None,
) -> MockResponse:
    """The operation's own error shape for ``status`` when declared, else problem+json."""
    response = response_for_status(op, status) if op is not None else None
    if op is not None and response is not None and response.media and _json_media(response) is None:
        return _text_error(op, response, status, detail, violations, gen, headers)
    media = _json_media(response)
    if op is None or response is None or media is None or media.schema is None:
        return problem(status, detail, violations, headers)
    rng = stable_rng(op.operation_id, status, detail)
    value = gen.generate(media.schema.json, direction="response", rng=rng)
    filled = fill_error(value, media.schema, status, detail, violations, gen, rng)
    content = media.name if "*" not in media.name else "application/json"
    given = {name.lower() for name, _ in headers or ()}
    # Headers the caller sets (Retry-After of a rate limit, ...) replace generated ones.
    extra = [h for h in header_values(response.headers, gen, rng) if h[0].lower() not in given]
    return MockResponse(
        status,
        [("content-type", content), *extra, *(headers or [])],
        orjson.dumps(filled),
        operation_id=op.operation_id,
        violations=[v.as_dict() for v in violations],
        note=detail,
    )


def _text_error(
    op: Operation,
    response: Response,
    status: int,
    detail: str,
    violations: list[Violation],
    gen: Generator,
    headers: list[tuple[str, str]] | None,
) -> MockResponse:
    """An error in the response's own non-JSON media (text, HTML, XML): the detail if it fits."""
    media = next(iter(response.media.values()))
    rng = stable_rng(op.operation_id, status, detail)
    if media.schema is None or validator(media.schema).is_valid(detail):
        value: Any = detail
    elif media.examples:
        value = media.examples[0].value
    else:
        value = gen.generate(media.schema.json, direction="response", rng=rng)
    body, content_type = encode(media.name, value)
    return MockResponse(
        status,
        [("content-type", content_type), *(headers or [])],
        body,
        operation_id=op.operation_id,
        violations=[v.as_dict() for v in violations],
        note=detail,
    )


def _json_media(response: Response | None) -> MediaType | None:
    if response is None:
        return None
    for media in response.media.values():
        if media.is_json:
            return media
    return None


_CODE_WORDS = {
    400: ("invalid_request", "bad_request", "validation_error"),
    401: ("unauthorized", "unauthenticated", "invalid_token"),
    403: ("forbidden", "permission_denied", "access_denied"),
    404: ("not_found", "resource_not_found"),
    405: ("method_not_allowed",),
    406: ("not_acceptable",),
    409: ("conflict", "already_exists"),
    412: ("precondition_failed", "conflict"),
    413: ("payload_too_large", "request_too_large"),
    415: ("unsupported_media_type",),
    422: ("validation_failed", "validation_error", "invalid_request", "unprocessable_entity"),
    429: ("rate_limited", "too_many_requests", "rate_limit_exceeded"),
    500: ("internal", "internal_error", "server_error"),
    503: ("unavailable", "service_unavailable"),
    507: ("insufficient_storage", "storage_full"),
}


@dataclass(slots=True)
class _Filling:
    """What goes into an error body, and how to make list items the schema allows."""

    status: int
    detail: str
    violations: list[Violation]
    code: str | None
    item: Callable[[tuple[str, ...]], Any]


def fill_error(
    value: Any,
    schema: Schema,
    status: int,
    detail: str,
    violations: list[Violation],
    gen: Generator,
    rng: random.Random,
) -> Any:
    """Put the message, code and violations where the schema has room; keep it schema-valid."""
    checker = validator(schema)
    root = schema.json

    def item(path: tuple[str, ...]) -> Any:
        sub = at(root, (*path, "[]"))
        return gen.generate(standalone(root, sub), rng=rng) if isinstance(sub, dict) else None

    words = _CODE_WORDS.get(status) or _CODE_WORDS.get(status // 100 * 100) or ("error",)
    codes: list[str | None] = [*words, *(w.upper() for w in words), str(status), None]
    for found in (violations, []):
        for code in codes:
            candidate = _fill(value, _Filling(status, detail, found, code, item), ())
            if checker.is_valid(candidate):
                return candidate
    return value


def _fill(value: Any, filling: _Filling, path: tuple[str, ...]) -> Any:
    if not isinstance(value, dict) or len(path) > 2:
        return value
    status, detail, violations, code = (
        filling.status,
        filling.detail,
        filling.violations,
        filling.code,
    )
    out = dict(value)
    for name in _MESSAGE_FIELDS:
        if isinstance(out.get(name), str):
            out[name] = detail
            break
    for name in ("code", "status", "statusCode", "status_code", "error_code"):
        current = out.get(name)
        if isinstance(current, int) and not isinstance(current, bool):
            out[name] = status
        elif isinstance(current, str) and code is not None:
            out[name] = code
    for name in _LIST_FIELDS:
        items = out.get(name, [])
        if isinstance(items, list) and violations:
            template = items[0] if items else filling.item((*path, name))
            if isinstance(template, dict):
                out[name] = [_violation_item(template, v) for v in violations]
    for key, inner in value.items():
        if isinstance(inner, dict):
            out[key] = _fill(inner, filling, (*path, key))
    return out


def _violation_item(template: dict[str, Any], violation: Violation) -> dict[str, Any]:
    item = dict(template)
    texts = {
        "issue": violation.message,
        "reason": violation.message,
        "message": violation.message,
        "detail": violation.message,
        "field": violation.name or violation.pointer,
        "pointer": violation.pointer,
        "location": violation.location,
        "in": violation.location,
        "name": violation.name,
        "path": violation.pointer,
    }
    for key, text in texts.items():
        if isinstance(item.get(key), str):
            item[key] = text
    return item
