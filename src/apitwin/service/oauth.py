"""The OAuth 2 client-credentials token endpoint the twin serves at the spec's `tokenUrl`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from apitwin.http import InboundRequest
from apitwin.service.connections import Connections
from apitwin.spec.model import Spec
from apitwin.tenants import Connection


@dataclass(frozen=True, slots=True)
class TokenResult:
    status: int
    body: dict[str, Any]
    connection: Connection | None = None


def flow_scopes(spec: Spec) -> tuple[str, ...]:
    return tuple(
        dict.fromkeys(
            scope
            for scheme in spec.security_schemes.values()
            for flow in scheme.flows
            if flow.kind == "clientCredentials"
            for scope in flow.scopes
        )
    )


def token_paths(spec: Spec) -> set[str]:
    """Paths the token endpoint answers at: as written, and under the base path."""
    paths: set[str] = set()
    for scheme in spec.security_schemes.values():
        for flow in scheme.flows:
            if flow.token_url and flow.kind in ("clientCredentials", "password"):
                path = urlsplit(flow.token_url).path or "/"
                path = path if path.startswith("/") else "/" + path
                paths.add(path.rstrip("/") or "/")
    return paths


def _form(request: InboundRequest) -> dict[str, str]:
    if request.content_type == "application/json":
        try:
            data = orjson.loads(request.body or b"{}")
        except orjson.JSONDecodeError:
            return {}
        return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))


def _basic(request: InboundRequest) -> tuple[str, str] | None:
    kind, _, value = request.headers.get("authorization", "").partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _error(status: int, code: str, description: str) -> TokenResult:
    return TokenResult(status, {"error": code, "error_description": description})


async def issue(
    request: InboundRequest, connections: Connections, scopes: tuple[str, ...] = ()
) -> TokenResult:
    """Issue a token; without a requested scope, every scope the spec's flow declares."""
    form = _form(request)
    grant = form.get("grant_type", "")
    if grant != "client_credentials":
        if not grant:
            return _error(400, "invalid_request", "grant_type is required (client_credentials)")
        return _error(
            400,
            "unsupported_grant_type",
            f"grant_type {grant!r} is not supported; this twin issues client_credentials tokens",
        )
    basic = _basic(request)
    client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
    if not client_id:
        return _error(
            400,
            "invalid_request",
            "client_id is required (form field or HTTP Basic authentication)",
        )
    connection = connections.authenticate_client(client_id, secret)
    if connection is None:
        return _error(401, "invalid_client", f"unknown client {client_id!r} or wrong client_secret")
    granted = form.get("scope") or " ".join(scopes)
    body = await connections.issue_token(connection, granted)
    return TokenResult(200, body, connection)
