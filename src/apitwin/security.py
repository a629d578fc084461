"""Check a request's credentials against the operation's security requirements.

Requirements are alternatives (OR); within one alternative every scheme must be satisfied (AND).
The credential found is returned so the caller can map it to a connection.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from apitwin.http import InboundRequest
from apitwin.spec.model import Operation, SecurityScheme


@dataclass(frozen=True, slots=True)
class Credential:
    scheme: str  # the security scheme's name in the spec
    kind: str  # apiKey, basic, bearer, mtls
    value: str  # the key, the token, or the basic user name
    secret: str = ""  # the basic password


@dataclass(frozen=True, slots=True)
class SecurityOutcome:
    ok: bool
    credentials: tuple[Credential, ...] = ()
    reason: str = ""
    challenge: str = ""  # WWW-Authenticate value for a 401


def _authorization(request: InboundRequest, expected: str) -> str | None:
    header = request.headers.get("authorization", "")
    kind, _, value = header.partition(" ")
    if kind.lower() != expected or not value.strip():
        return None
    return value.strip()


def credential_for(scheme: SecurityScheme, request: InboundRequest) -> Credential | str:
    """The credential a request presents for ``scheme``, or why it presents none."""
    if scheme.type == "apiKey":
        name = scheme.param_name or scheme.name
        if scheme.location == "query":
            value = next((v for k, v in request.query_pairs if k == name), None)
        elif scheme.location == "cookie":
            value = request.cookies.get(name)
        else:
            value = request.headers.get(name.lower())
        if not value:
            return f"missing API key in {scheme.location} '{name}'"
        return Credential(scheme.name, "apiKey", value)
    if scheme.type == "http" and scheme.scheme == "basic":
        return _basic(scheme, request)
    if scheme.type in ("http", "oauth2", "openIdConnect"):
        token = _authorization(request, "bearer")
        if token is None:
            return "missing 'Authorization: Bearer <token>' header"
        return Credential(scheme.name, "bearer", token)
    # mutualTLS is settled by the TLS layer in front of the twin.
    return Credential(scheme.name, "mtls", "")


def _basic(scheme: SecurityScheme, request: InboundRequest) -> Credential | str:
    encoded = _authorization(request, "basic")
    if encoded is None:
        return "missing 'Authorization: Basic <credentials>' header"
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return "Authorization: Basic credentials are not valid base64 of 'user:password'"
    user, sep, password = decoded.partition(":")
    if not sep:
        return "Authorization: Basic credentials lack the ':' between user and password"
    return Credential(scheme.name, "basic", user, password)


def check_security(
    op: Operation, schemes: Mapping[str, SecurityScheme], request: InboundRequest
) -> SecurityOutcome:
    if not op.security:
        return SecurityOutcome(True)
    reasons: list[str] = []
    for alternative in op.security:
        if not alternative:
            return SecurityOutcome(True)  # `{}` makes security optional
        found: list[Credential] = []
        for name in alternative:
            scheme = schemes.get(name)
            if scheme is None:
                continue  # undeclared scheme: reported by `apitwin check`, not enforced
            result = credential_for(scheme, request)
            if isinstance(result, str):
                reasons.append(result)
                break
            found.append(result)
        else:
            return SecurityOutcome(True, tuple(found))
    return SecurityOutcome(
        False, reason="; ".join(dict.fromkeys(reasons)), challenge=challenge_for(op, schemes)
    )


def challenge_for(op: Operation, schemes: Mapping[str, SecurityScheme]) -> str:
    """The WWW-Authenticate challenge matching the operation's own schemes."""
    for alternative in op.security:
        for name in alternative:
            scheme = schemes.get(name)
            if scheme is not None and scheme.type == "http" and scheme.scheme == "basic":
                return 'Basic realm="apitwin"'
            if scheme is not None and scheme.type in ("http", "oauth2", "openIdConnect"):
                return 'Bearer realm="apitwin"'
    return ""
