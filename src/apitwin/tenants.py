"""Connections: the integration environments of a twin, and who a request's credential belongs to.

A connection is keyed by its client id. It owns credentials (OAuth client secret, API key),
its webhook target, and an isolated slice of state. Credentials are indexed in memory for the hot
path; the store is the source of truth.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from apitwin.security import Credential

DEFAULT_CONNECTION = "default"
CLIENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONNECTION_KIND = "connection"
TOKEN_KIND = "token"


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(24)}"


def mask(secret: str) -> str:
    """Enough to recognise a secret, never enough to use it."""
    if not secret:
        return ""
    prefix, sep, body = secret.partition("_")
    if not sep:
        prefix, body = "", secret
    tail = body[-4:] if len(body) >= 16 else ""
    return f"{prefix}{sep}…{tail}"


@dataclass(frozen=True, slots=True)
class Connection:
    client_id: str
    client_secret: str = ""
    api_key: str = ""
    webhook_url: str | None = None
    label: str = ""
    created: float = 0.0
    extra_tokens: tuple[str, ...] = ()  # static bearer tokens accepted for this connection

    @property
    def id(self) -> str:
        return self.client_id

    @classmethod
    def create(cls, client_id: str, **given: Any) -> Connection:
        if not CLIENT_ID.match(client_id):
            raise ValueError(
                f"client id {client_id!r} must be 1-64 letters, digits, '.', '_' or '-'"
            )
        given.setdefault("client_secret", new_secret("cs"))
        given.setdefault("api_key", new_secret("ak"))
        return cls(client_id, **given)

    def to_data(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "api_key": self.api_key,
            "webhook_url": self.webhook_url,
            "label": self.label,
            "created": self.created,
            "extra_tokens": list(self.extra_tokens),
        }

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Connection:
        return cls(
            client_id=str(data["client_id"]),
            client_secret=str(data.get("client_secret") or ""),
            api_key=str(data.get("api_key") or ""),
            webhook_url=data.get("webhook_url"),
            label=str(data.get("label") or ""),
            created=float(data.get("created") or 0.0),
            extra_tokens=tuple(data.get("extra_tokens") or ()),
        )

    def public(self, *, reveal: bool = False) -> dict[str, Any]:
        show = (lambda s: s) if reveal else mask
        return {
            "connection_id": self.client_id,
            "client_id": self.client_id,
            "client_secret": show(self.client_secret),
            "api_key": show(self.api_key),
            "webhook_url": self.webhook_url,
            "label": self.label,
        }

    def with_changes(self, **changes: Any) -> Connection:
        return replace(self, **changes)


@dataclass(slots=True)
class Identity:
    """Which connection a request belongs to, and how that was decided (for the journal)."""

    connection: str
    via: str  # "api key", "token", "basic", "header", "default"
    error: str = ""  # set when the credential was presented but not recognised


@dataclass(slots=True)
class CredentialIndex:
    """In-memory lookup from credentials to connections of one twin."""

    connections: dict[str, Connection] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (conn, expiry)

    def add(self, connection: Connection) -> None:
        old = self.connections.get(connection.client_id)
        if old is not None:
            self.api_keys.pop(old.api_key, None)
            for token in old.extra_tokens:
                self.api_keys.pop(token, None)
        self.connections[connection.client_id] = connection
        if connection.api_key:
            self.api_keys[connection.api_key] = connection.client_id
        for token in connection.extra_tokens:
            self.api_keys[token] = connection.client_id

    def remove(self, client_id: str) -> None:
        old = self.connections.pop(client_id, None)
        if old is not None:
            self.api_keys = {k: v for k, v in self.api_keys.items() if v != client_id}
            self.tokens = {k: v for k, v in self.tokens.items() if v[0] != client_id}

    def identify(
        self, credentials: tuple[Credential, ...], header: str | None, now: float, strict: bool
    ) -> Identity:
        for credential in credentials:
            found = self._by_credential(credential, now)
            if found is not None:
                return found
        if strict and any(c.kind != "mtls" for c in credentials):
            return Identity("", "", self._why(credentials[0], now))
        if header:
            if header in self.connections:
                return Identity(header, "header")
            return Identity("", "", f"no connection {header!r} (X-Apitwin-Connection)")
        return Identity(DEFAULT_CONNECTION, "default")

    def _by_credential(self, credential: Credential, now: float) -> Identity | None:
        if credential.kind == "basic":
            conn = self.connections.get(credential.value)
            if conn is not None and secrets.compare_digest(conn.client_secret, credential.secret):
                return Identity(conn.client_id, "basic")
            return None
        if credential.kind == "bearer":
            issued = self.tokens.get(credential.value)
            if issued is not None and issued[1] > now:
                return Identity(issued[0], "token")
        owner = self.api_keys.get(credential.value)
        return Identity(owner, "api key") if owner else None

    def _why(self, credential: Credential, now: float) -> str:
        if credential.kind == "bearer":
            issued = self.tokens.get(credential.value)
            if issued is not None and issued[1] <= now:
                return "the access token has expired"
            return "the access token is not known to this twin"
        if credential.kind == "basic":
            return f"unknown client id {credential.value!r} or wrong secret"
        return f"the API key in '{credential.scheme}' is not known to this twin"
