"""Connections of one twin: create, look up, list, remove, and OAuth tokens bound to them."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from apitwin.clock import VirtualClock
from apitwin.config import ConnectionConfig
from apitwin.errors import ConfigError, InvalidInputError, NotFoundError
from apitwin.state.store import Clear, Delete, Key, Op, Put, Query, Scope, Store, StoreError
from apitwin.tenants import (
    CONNECTION_KIND,
    DEFAULT_CONNECTION,
    TOKEN_KIND,
    Connection,
    CredentialIndex,
)

TOKEN_LIFETIME = 3600
MAX_CONNECTIONS = 1000  # default of server.limits.connections
MAX_TOKENS = 10_000
# Bumped (its version) with every change to a connection, so replicas sharing the store notice.
CHANGED_KIND = "connections-changed"


class TooManyConnectionsError(ConfigError):
    kind = "limit_exceeded"
    status = 429


class Connections:
    def __init__(self, twin: str, store: Store, clock: VirtualClock) -> None:
        self.twin = twin
        self.store = store
        self.clock = clock
        self.max_connections = MAX_CONNECTIONS
        self.index = CredentialIndex()
        self.created_now: set[str] = set()  # created by this process: secrets may be shown once
        self._scope = Scope(twin, "", CONNECTION_KIND)
        self._changed = Key(twin, "", CHANGED_KIND, "generation")
        self._seen = 0  # the generation the index was last read at

    def _bump(self) -> list[Put]:
        return [Put(self._changed, {})] if self.store.shared else []

    async def refresh(self, *, tokens: bool = False) -> bool:
        """Re-read connections another replica changed (and, with ``tokens``, the tokens it
        issued). No-op unless the store is shared; True if anything was re-read."""
        if not self.store.shared:
            return False
        item = await self.store.get(self._changed)
        generation = item.version if item is not None else 0
        if generation == self._seen and not tokens:
            return False
        index = CredentialIndex()
        stored = Query(self._scope, limit=max(self.max_connections, MAX_CONNECTIONS))
        for found in await self.store.query(stored):
            index.add(Connection.from_data(found.data))
        query = Query(Scope(self.twin, "", TOKEN_KIND), limit=MAX_TOKENS)
        for found in await self.store.query(query):
            index.tokens[found.key.id] = (found.data["connection"], found.data["expires"])
        self.index, self._seen = index, generation
        return True

    async def load(self, configured: tuple[ConnectionConfig, ...]) -> None:
        """Read stored connections, then make sure the default and configured ones exist."""
        # Stored ones are all read, even beyond a limit lowered since they were made.
        stored = Query(self._scope, limit=max(self.max_connections, MAX_CONNECTIONS))
        for item in await self.store.query(stored):
            self.index.add(Connection.from_data(item.data))
        if self.store.shared:
            changed = await self.store.get(self._changed)
            self._seen = changed.version if changed is not None else 0
        tokens = Query(Scope(self.twin, "", TOKEN_KIND), limit=MAX_TOKENS)
        for item in await self.store.query(tokens):
            self.index.tokens[item.key.id] = (item.data["connection"], item.data["expires"])
        if DEFAULT_CONNECTION not in self.index.connections:
            await self.create(DEFAULT_CONNECTION, label="used when a request names no connection")
        for config in configured:
            await self._apply_config(config)

    async def _apply_config(self, config: ConnectionConfig) -> None:
        given: dict[str, Any] = {"label": config.label, "webhook_url": config.webhook_url}
        if config.client_secret:
            given["client_secret"] = config.client_secret
        if config.api_key:
            given["api_key"] = config.api_key
        existing = self.index.connections.get(config.client_id)
        if existing is None:
            await self.create(config.client_id, **given)
        else:
            await self.save(existing.with_changes(**given))

    def get(self, client_id: str) -> Connection:
        found = self.index.connections.get(client_id)
        if found is None:
            known = ", ".join(sorted(self.index.connections)) or "none"
            raise NotFoundError(f"no connection {client_id!r}; known: {known}", field="client_id")
        return found

    def all(self) -> list[Connection]:
        return sorted(self.index.connections.values(), key=lambda c: c.created)

    async def create(self, client_id: str, **given: Any) -> Connection:
        if len(self.index.connections) >= self.max_connections:
            raise TooManyConnectionsError(
                f"twin {self.twin!r} already has the maximum of {self.max_connections} "
                "connections; server.limits.connections in apitwin.yaml raises it",
                field="client_id",
            )
        try:
            connection = Connection.create(client_id, created=self.clock.now(), **given)
        except ValueError as exc:
            raise ConfigError(str(exc), field="client_id") from None
        try:
            await self.store.write(
                [
                    Put(self._scope.key(client_id), connection.to_data(), expect="absent"),
                    *self._bump(),
                ]
            )
        except StoreError:
            raise ConfigError(
                f"connection {client_id!r} already exists", field="client_id"
            ) from None
        self.index.add(connection)
        self.created_now.add(client_id)
        return connection

    async def save(self, connection: Connection) -> Connection:
        await self.store.write(
            [Put(self._scope.key(connection.client_id), connection.to_data()), *self._bump()]
        )
        self.index.add(connection)
        return connection

    async def remove(self, client_id: str, *, also: Sequence[Op] = ()) -> None:
        """The connection, everything stored under it and the tokens issued to it (``also``:
        more of its rows, kept elsewhere, to delete in the same transaction)."""
        self.get(client_id)
        if client_id == DEFAULT_CONNECTION:
            raise InvalidInputError(
                f"the {DEFAULT_CONNECTION!r} connection answers requests that name no "
                "connection and cannot be removed; reset it instead",
                field="client_id",
            )
        await self.refresh(tokens=True)  # tokens another replica issued to it
        tokens = [t for t, (owner, _) in self.index.tokens.items() if owner == client_id]
        await self.store.write(
            [
                Delete(self._scope.key(client_id)),
                Clear(self.twin, client_id),
                *(Delete(Key(self.twin, "", TOKEN_KIND, t), must_exist=False) for t in tokens),
                *also,
                *self._bump(),
            ]
        )
        self.index.remove(client_id)
        self.created_now.discard(client_id)

    async def issue_token(self, connection: Connection, scope: str = "") -> dict[str, Any]:
        token = "at_" + secrets.token_urlsafe(24)
        expires = self.clock.now() + TOKEN_LIFETIME
        key = Key(self.twin, "", TOKEN_KIND, token)
        await self.store.write([Put(key, {"connection": connection.client_id, "expires": expires})])
        self.index.tokens[token] = (connection.client_id, expires)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME,
        }
        if scope:
            body["scope"] = scope
        return body

    def authenticate_client(self, client_id: str, client_secret: str) -> Connection | None:
        found = self.index.connections.get(client_id)
        if found is None or not secrets.compare_digest(found.client_secret, client_secret):
            return None
        return found
