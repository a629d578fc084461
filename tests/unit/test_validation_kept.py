"""Validation outcomes kept per operation for requests without a body: the same parameters get
the same outcome; anything a parameter is read from (path, query, header, cookie) tells them
apart, and a request with a body is always validated afresh."""

from __future__ import annotations

from typing import Any, cast

from apitwin.http import InboundRequest
from apitwin.spec.model import Body, MediaType, Operation, Parameter, Schema
from apitwin.validation import _OUTCOMES_KEPT, validate_request


class _Compiler:
    def bundle(self, uri: str, raw: Any, direction: str) -> Any:
        return raw


def schema(json: Any) -> Schema:
    return Schema(cast(Any, _Compiler()), "test.yaml#/x", json, "request")


def param(name: str, location: Any, json: Any, required: bool = False) -> Parameter:
    return Parameter(
        name=name,
        location=location,
        required=required or location == "path",
        schema=schema(json),
        style={"path": "simple", "query": "form", "header": "simple", "cookie": "form"}[location],
        explode=location in ("query", "cookie"),
    )


PARAMS = (
    param("id", "path", {"type": "integer"}),
    param("limit", "query", {"type": "integer", "maximum": 10}),
    param("X-Trace", "header", {"type": "string", "maxLength": 3}),
    param("session", "cookie", {"type": "string", "minLength": 2}),
)


def operation(body: Body | None = None) -> Operation:
    return Operation("get", "/pets/{id}", "showPet", "", (), PARAMS, body, {}, None)


def request(query: str = "", headers: dict[str, str] | None = None, body: bytes = b"") -> Any:
    return InboundRequest("GET", "/pets/1", query, headers or {}, body)


def test_the_same_parameters_get_the_kept_outcome() -> None:
    op = operation()
    first = validate_request(op, {"id": "1"}, request("limit=5"))
    assert not first.violations and first.request.query == {"limit": 5}
    assert validate_request(op, {"id": "1"}, request("limit=5")) is first


def test_each_source_of_a_parameter_tells_outcomes_apart() -> None:
    op = operation()
    assert not validate_request(op, {"id": "1"}, request()).violations
    assert validate_request(op, {"id": "x"}, request()).violations[0].location == "path"
    assert validate_request(op, {"id": "1"}, request("limit=50")).violations[0].name == "limit"
    long_trace = request(headers={"x-trace": "abcd"})
    assert validate_request(op, {"id": "1"}, long_trace).violations[0].name == "X-Trace"
    short_cookie = request(headers={"cookie": "session=a"})
    assert validate_request(op, {"id": "1"}, short_cookie).violations[0].name == "session"
    assert not validate_request(op, {"id": "1"}, request()).violations


def test_a_request_with_a_body_is_validated_afresh() -> None:
    json = MediaType("application/json", schema({"type": "object"}))
    body = Body(True, {"application/json": json})
    op = operation(body)
    sent = request(headers={"content-type": "application/json"}, body=b"{}")
    first = validate_request(op, {"id": "1"}, sent)
    assert validate_request(op, {"id": "1"}, sent) is not first
    assert "outcomes" not in op.memo


def test_kept_outcomes_are_bounded_per_operation() -> None:
    op = operation()
    for n in range(_OUTCOMES_KEPT + 5):
        outcome = validate_request(op, {"id": str(n)}, request())
        assert outcome.request.path == {"id": n}
    assert len(op.memo["outcomes"]) == _OUTCOMES_KEPT
