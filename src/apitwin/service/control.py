"""The control service: every control operation, whatever surface asks (admin REST, MCP, CLI).

Connections are addressed by a handle, ``"<twin>:<client id>"`` (the twin part may be left out when
the server has one twin). Results are plain JSON-ready dicts; errors are ApitwinError subclasses
whose message says what was wrong and what to do next.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import jsonschema_rs

from apitwin.changes import Change, Listener
from apitwin.errors import InvalidInputError, LimitExceededError, NotFoundError
from apitwin.faults import FaultError, TooManyRulesError
from apitwin.schemanav import deref, properties
from apitwin.service import actions, seeding
from apitwin.service.actions import Action
from apitwin.service.twin import TwinService
from apitwin.spec.resources import Resource
from apitwin.state.store import Item
from apitwin.tenants import Connection
from apitwin.webhooks.events import build_payload
from apitwin.webhooks.outbox import collecting

if TYPE_CHECKING:
    from apitwin.webhooks.outbox import DeliveryStatus

MAX_LIMIT = 100
DELIVERY_STATUSES = ("pending", "delivering", "succeeded", "failed", "dropped")

# Unseeded payload data (seeding a generator from the OS per event costs more than the event).
_PAYLOADS = random.Random()


@dataclass(frozen=True, slots=True)
class Handle:
    twin: TwinService
    connection: Connection

    @property
    def id(self) -> str:
        return f"{self.twin.name}:{self.connection.client_id}"


class ControlService:
    def __init__(self, twins: list[TwinService], origin: str = "http://127.0.0.1:8000") -> None:
        self.twins = {twin.name: twin for twin in twins}
        self.origin = origin.rstrip("/")

    # -- addressing ----------------------------------------------------------------------------

    def twin(self, name: str | None) -> TwinService:
        if name is None:
            if len(self.twins) == 1:
                return next(iter(self.twins.values()))
            raise InvalidInputError(
                f"this server runs several twins; name one of: {', '.join(sorted(self.twins))}",
                field="twin",
            )
        found = self.twins.get(name)
        if found is None:
            raise NotFoundError(
                f"no twin {name!r}; known: {', '.join(sorted(self.twins))}", field="twin"
            )
        return found

    def handle(self, connection_id: str) -> Handle:
        twin_name, sep, client_id = connection_id.rpartition(":")
        twin = self.twin(twin_name if sep else None)
        try:
            return Handle(twin, twin.connections.get(client_id))
        except NotFoundError:
            known = ", ".join(f"{twin.name}:{c.client_id}" for c in twin.connections.all())
            raise NotFoundError(
                f"no connection {connection_id!r}; known: {known}. Call connect() to create one.",
                field="connection_id",
            ) from None

    # -- connections ---------------------------------------------------------------------------

    async def connect(
        self,
        client_id: str,
        *,
        twin: str | None = None,
        webhook_url: str | None = None,
        label: str = "",
    ) -> dict[str, Any]:
        """The connection for ``client_id``, created when it does not exist yet."""
        target = self.twin(twin)
        existing = target.connections.index.connections.get(client_id)
        created = existing is None
        if existing is None:
            connection = await target.connections.create(
                client_id, webhook_url=webhook_url, label=label
            )
            await seeding.seed_connection(
                target.records,
                target.spec,
                client_id,
                target.config.fixtures,
                from_examples=target.config.seed_examples,
            )
        elif webhook_url and webhook_url != existing.webhook_url:
            connection = await target.connections.save(
                existing.with_changes(webhook_url=webhook_url)
            )
        else:
            connection = existing
        view = self._connection_view(Handle(target, connection), reveal=created, created=created)
        if connection.webhook_url:
            view["webhook"] = await target.ensure_endpoint(
                connection.client_id, connection.webhook_url
            )
        return view

    async def list_connections(self, twin: str | None = None) -> list[dict[str, Any]]:
        twins = [self.twin(twin)] if twin else list(self.twins.values())
        return [
            self._connection_view(Handle(t, c), reveal=False)
            for t in twins
            for c in t.connections.all()
        ]

    async def reset_connection(self, connection_id: str) -> dict[str, Any]:
        """Back to seed data: records, journal, deliveries and faults go; endpoints stay."""
        handle = self.handle(connection_id)
        seeded = await handle.twin.reset(handle.connection.client_id)
        return {"connection_id": handle.id, "reset": True, "seeded_records": seeded}

    async def remove_connection(self, connection_id: str) -> dict[str, Any]:
        """Remove a connection and everything of it (records, journal, webhook endpoints and
        deliveries, faults, tokens); its client id can connect again afresh."""
        handle = self.handle(connection_id)
        client_id = handle.connection.client_id
        await handle.twin.remove_connection(client_id)
        answer: dict[str, Any] = {"connection_id": handle.id, "removed": True}
        if any(c.client_id == client_id for c in handle.twin.config.connections):
            answer["note"] = (
                "declared in apitwin.yaml: it comes back, with its configured credentials, "
                "when the server starts again"
            )
        return answer

    async def reset_twin(self, twin: str | None = None) -> dict[str, Any]:
        """Every connection of a twin back to its seed data."""
        target = self.twin(twin)
        seeded = {c.client_id: await target.reset(c.client_id) for c in target.connections.all()}
        return {"twin": target.name, "reset": True, "seeded_records": seeded}

    def _connection_view(
        self, handle: Handle, *, reveal: bool, created: bool | None = None
    ) -> dict[str, Any]:
        twin, connection = handle.twin, handle.connection
        view = connection.public(reveal=reveal)
        view["connection_id"] = handle.id
        view["twin"] = twin.name
        view["base_url"] = self.origin + twin.base_path
        view["token_url"] = [self.origin + twin.base_path + p for p in sorted(twin.token_paths)]
        view["how_to_authenticate"] = self._auth_help(twin, connection)
        if created is not None:
            view["created"] = created
            if not created:
                view["note"] = "secrets are shown in full only when the connection is created"
        return view

    def _auth_help(self, twin: TwinService, connection: Connection) -> list[str]:
        help_lines = []
        for scheme in twin.spec.security_schemes.values():
            if scheme.type == "apiKey":
                help_lines.append(f"API key in {scheme.location} '{scheme.param_name}'")
            elif scheme.type == "http" and scheme.scheme == "basic":
                help_lines.append("HTTP Basic with client_id:client_secret")
            elif scheme.type in ("http", "oauth2", "openIdConnect"):
                help_lines.append("Authorization: Bearer <token from token_url, or the api_key>")
        if not help_lines:
            help_lines.append(f"header X-Apitwin-Connection: {connection.client_id}")
        return help_lines

    # -- describe ------------------------------------------------------------------------------

    async def describe_api(self, connection_id: str, resource: str | None = None) -> dict[str, Any]:
        handle = self.handle(connection_id)
        twin = handle.twin
        resources = twin.resource_map.resources
        names = [resource] if resource else sorted(resources)
        described = {name: describe_resource(twin.records.resource(name)) for name in names}
        return {
            "twin": twin.name,
            "title": f"{twin.spec.title} {twin.spec.version}".strip(),
            "base_url": self.origin + twin.base_path,
            "resources": described,
            "actions": [a.view() for a in twin.actions.values()],
            "events": {
                name: {"resource": event.resource, "verb": event.verb}
                for name, event in sorted(twin.events.items())
            },
        }

    # -- records -------------------------------------------------------------------------------

    def _resource(self, handle: Handle, name: str) -> Resource:
        return handle.twin.records.resource(name)

    def _parent_id(self, resource: Resource, parent: Mapping[str, str] | None) -> str | None:
        if resource.parent is None:
            return None
        value = (parent or {}).get(resource.parent)
        if value is None:
            raise InvalidInputError(
                f"{resource.name} live under {resource.parent}: pass "
                f'parent={{"{resource.parent}": "<id>"}}',
                field="parent",
            )
        return str(value)

    async def list_records(
        self,
        connection_id: str,
        resource: str,
        *,
        parent: Mapping[str, str] | None = None,
        filters: Mapping[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        _check_filters(found, filters or {})
        page = await handle.twin.records.page(
            handle.connection.client_id,
            found,
            parent_id=self._parent_id(found, parent),
            filters=filters,
            cursor=cursor,
            limit=max(1, min(limit, MAX_LIMIT)),
        )
        return {
            "resource": found.name,
            "records": [item.data for item in page.items],
            "total": page.total,
            "next_cursor": page.next_cursor,
        }

    async def get_record(self, connection_id: str, resource: str, record_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        item = await handle.twin.records.require(handle.connection.client_id, found, record_id)
        return _record_view(found, item)

    async def create_record(
        self,
        connection_id: str,
        resource: str,
        data: Mapping[str, Any],
        *,
        parent: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        check_record(found, data, partial=False)
        item = await handle.twin.records.create(
            handle.connection.client_id,
            found,
            data,
            parent_id=self._parent_id(found, parent),
            complete=True,
        )
        return _record_view(found, item)

    async def update_record(
        self, connection_id: str, resource: str, record_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        check_record(found, changes, partial=True)
        item = await handle.twin.records.update(
            handle.connection.client_id, found, record_id, changes
        )
        return _record_view(found, item)

    async def record_action(
        self,
        connection_id: str,
        resource: str,
        record_id: str,
        action: str,
        body: Mapping[str, Any] | None = None,
        *,
        parent: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """A resource's action endpoint as the partner performs it (`shortlist`, `cancel`)."""
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        records = handle.twin.records
        conn = handle.connection.client_id
        if f"action:{action}" not in found.operations:
            known = sorted(
                k.removeprefix("action:") for k in found.operations if k.startswith("action:")
            )
            raise NotFoundError(
                f"{resource} has no action {action!r}; actions: {known}", field="action"
            )
        parent_id = self._parent_id(found, parent) if parent else None
        await records.require(conn, found, record_id, parent_id)
        item = await records.action(conn, found, record_id, action, body)
        return _record_view(found, item)

    async def list_actions(self, connection_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        return {"actions": [a.view() for a in handle.twin.actions.values()]}

    async def run_action(
        self, connection_id: str, action: str, inputs: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run a workflow action declared in apitwin.yaml."""
        handle = self.handle(connection_id)
        found = handle.twin.actions.get(action)
        if found is None:
            known = sorted(handle.twin.actions) or "none"
            raise NotFoundError(f"no action {action!r}; known: {known}", field="action")
        return await actions.run(self, connection_id, found, dict(inputs or {}))

    def all_actions(self) -> list[Action]:
        """Every twin's workflow actions (for tools named after them)."""
        found: dict[str, Action] = {}
        for twin in self.twins.values():
            for action in twin.actions.values():
                found.setdefault(action.name, action)
        return list(found.values())

    async def delete_record(
        self, connection_id: str, resource: str, record_id: str
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        await handle.twin.records.delete(handle.connection.client_id, found, record_id)
        return {"resource": found.name, "id": record_id, "deleted": True}

    async def generate_records(
        self,
        connection_id: str,
        resource: str,
        count: int,
        *,
        parent: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        found = self._resource(handle, resource)
        items = await seeding.generate(
            handle.twin.records,
            handle.connection.client_id,
            found,
            count,
            self._parent_id(found, parent),
        )
        return {"resource": found.name, "created": [item.key.id for item in items]}

    # -- events and deliveries -----------------------------------------------------------------

    async def trigger_event(
        self,
        connection_id: str,
        event: str,
        *,
        record: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Send ``event`` now, about a stored record ({"resource", "id"}) or generated data."""
        handle = self.handle(connection_id)
        twin, conn = handle.twin, handle.connection.client_id
        found = twin.events.get(event)
        if found is None:
            known = ", ".join(sorted(twin.events)) or "none"
            raise NotFoundError(f"no event {event!r}; known: {known}", field="event")
        data = None
        if record:
            resource = twin.records.resource(str(record.get("resource", found.resource or "")))
            data = (await twin.records.require(conn, resource, str(record.get("id")))).data
        payload = build_payload(
            found,
            data,
            generator=twin.generator,
            rng=_PAYLOADS,
            clock=twin.clock,
            overrides=overrides,
        )
        with collecting() as enqueued:
            message_id = await twin.outbox.emit(conn, event, payload)
        return {
            "message_id": message_id,
            "event": event,
            "payload": payload,
            "deliveries": list(enqueued),
        }

    async def list_deliveries(
        self,
        connection_id: str,
        *,
        status: str | None = None,
        event: str | None = None,
        endpoint: str | None = None,
        since: float | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        if status is not None and status not in DELIVERY_STATUSES:
            raise InvalidInputError(f"status must be one of {DELIVERY_STATUSES}", field="status")
        page = await handle.twin.outbox.list_deliveries(
            handle.connection.client_id,
            status=cast("DeliveryStatus | None", status),
            event=event,
            endpoint=endpoint,
            since=since,
            limit=max(1, min(limit, MAX_LIMIT)),
            cursor=cursor,
        )
        return {"deliveries": page.items, "next_cursor": page.next_cursor}

    async def get_delivery(self, connection_id: str, delivery_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        return await handle.twin.outbox.get_delivery(handle.connection.client_id, delivery_id)

    async def redeliver(self, connection_id: str, delivery_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        return await handle.twin.outbox.redeliver(handle.connection.client_id, delivery_id)

    async def redeliver_failed(self, connection_id: str, since_seconds: float) -> dict[str, Any]:
        """Deliver again every delivery that failed in the last ``since_seconds``."""
        handle = self.handle(connection_id)
        since = handle.twin.clock.now() - since_seconds
        ids = await handle.twin.outbox.redeliver_failed(handle.connection.client_id, since)
        return {"redelivered": ids}

    async def add_endpoint(
        self,
        connection_id: str,
        url: str,
        *,
        events: list[str] | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]:
        """Another webhook target; its signing secret is shown in full only here."""
        handle = self.handle(connection_id)
        outbox = handle.twin.outbox
        endpoint, secret = await outbox.add_endpoint(
            handle.connection.client_id,
            url,
            tuple(events or ()),
            scheme or handle.twin.config.webhooks.scheme,
        )
        return {**endpoint.view(), "secret": secret}

    async def list_endpoints(self, connection_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        endpoints = await handle.twin.outbox.list_endpoints(handle.connection.client_id)
        return {"endpoints": [endpoint.view() for endpoint in endpoints]}

    async def rotate_secret(
        self, connection_id: str, endpoint_id: str, grace_seconds: float = 86400
    ) -> dict[str, Any]:
        """A new signing secret; the old one still signs until the grace period ends."""
        handle = self.handle(connection_id)
        secret = await handle.twin.outbox.rotate_secret(
            handle.connection.client_id, endpoint_id, grace_seconds
        )
        return {"endpoint_id": endpoint_id, "secret": secret, "grace_seconds": grace_seconds}

    async def remove_endpoint(self, connection_id: str, endpoint_id: str) -> dict[str, Any]:
        """Stop sending to an endpoint; its pending deliveries are dropped."""
        handle = self.handle(connection_id)
        await handle.twin.outbox.remove_endpoint(handle.connection.client_id, endpoint_id)
        return {"endpoint_id": endpoint_id, "removed": True}

    # -- faults --------------------------------------------------------------------------------

    async def add_fault(self, connection_id: str, rule: Mapping[str, Any]) -> dict[str, Any]:
        handle = self.handle(connection_id)
        try:
            added = await handle.twin.faults.add(handle.connection.client_id, dict(rule))
        except TooManyRulesError as exc:
            raise LimitExceededError(str(exc), field=exc.field) from None
        except FaultError as exc:
            raise InvalidInputError(str(exc), field=getattr(exc, "field", None)) from None
        return added.as_dict(handle.twin.clock.now())

    async def list_faults(self, connection_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        now = handle.twin.clock.now()
        rules = await handle.twin.faults.list(handle.connection.client_id)
        return {"faults": [rule.as_dict(now) for rule in rules]}

    async def clear_faults(self, connection_id: str, rule_id: str | None = None) -> dict[str, Any]:
        handle = self.handle(connection_id)
        removed = await handle.twin.faults.clear(handle.connection.client_id, rule_id)
        return {"cleared": removed}

    # -- journal -------------------------------------------------------------------------------

    async def list_requests(
        self, connection_id: str, *, limit: int = 20, cursor: str | None = None, **filters: Any
    ) -> dict[str, Any]:
        handle = self.handle(connection_id)
        # A cursor or filter the journal cannot use is its InvalidInputError, naming the field.
        page = await handle.twin.journal.query(
            handle.connection.client_id,
            limit=max(1, min(limit, MAX_LIMIT)),
            cursor=cursor,
            **_journal_filters(filters),
        )
        return {"requests": [entry.as_dict() for entry in page.entries], "next_cursor": page.cursor}

    async def get_request(self, connection_id: str, request_id: str) -> dict[str, Any]:
        handle = self.handle(connection_id)
        entry = await handle.twin.journal.get(handle.connection.client_id, request_id)
        if entry is None:
            raise NotFoundError(
                f"no request {request_id!r} in this connection's journal", field="request_id"
            )
        return entry.as_dict()

    async def count_requests(self, connection_id: str, **filters: Any) -> dict[str, Any]:
        handle = self.handle(connection_id)
        count = await handle.twin.journal.count(
            handle.connection.client_id, **_journal_filters(filters)
        )
        return {"count": count, "filters": {k: v for k, v in filters.items() if v is not None}}

    # -- change feed ---------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Tell ``listener`` of every journal entry and delivery recorded on any twin, with the
        connection as its handle; returns the function that stops it."""
        stops: list[Callable[[], None]] = []
        for twin in self.twins.values():

            def relay(change: Change, name: str = twin.name) -> None:
                listener(replace(change, connection=f"{name}:{change.connection}"))

            stops.append(twin.journal.changes.subscribe(relay))
            stops.append(twin.outbox.changes.subscribe(relay))

        def unsubscribe() -> None:
            for stop in stops:
                stop()

        return unsubscribe

    # -- clock ---------------------------------------------------------------------------------

    async def advance_clock(self, connection_id: str, seconds: float) -> dict[str, Any]:
        """Move the twin's clock; deliveries and retries that became due run before returning."""
        handle = self.handle(connection_id)
        if not 0 < seconds <= 366 * 86400:
            raise InvalidInputError("seconds must be between 0 and one year", field="seconds")
        now = await handle.twin.clock.move(seconds)
        ran = await handle.twin.dispatcher.run_due()
        return {
            "twin": handle.twin.name,
            "now": handle.twin.clock.iso(now),
            "deliveries_attempted": ran,
        }


_JOURNAL_FILTERS = ("operation", "method", "status", "since", "until", "text", "fault")


def _journal_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(filters) - set(_JOURNAL_FILTERS)
    if unknown:
        raise InvalidInputError(
            f"unknown filter(s) {sorted(unknown)}; use {_JOURNAL_FILTERS}", field="filters"
        )
    return {k: v for k, v in filters.items() if v is not None}


def _check_filters(resource: Resource, filters: Mapping[str, Any]) -> None:
    """A filter on a field records do not have would silently match nothing."""
    root = resource.schema.json if resource.schema is not None else None
    known = set(properties(root, root)) if root else set()
    unknown = sorted(set(filters) - known)
    if known and unknown:
        raise InvalidInputError(
            f"{resource.name} have no field {', '.join(map(repr, unknown))}; filter on one of: "
            + ", ".join(sorted(known)),
            field="filters",
        )


def describe_resource(resource: Resource) -> dict[str, Any]:
    """A compact description an agent can read: fields, required, enums, parent, operations."""
    root = resource.schema.json if resource.schema is not None else {}
    create_root = resource.create_schema.json if resource.create_schema is not None else root
    required = set(deref(create_root, create_root).get("required", ())) if create_root else set()
    fields = {}
    for name, prop in properties(create_root or root, create_root or root).items():
        node = deref(create_root or root, prop)
        fields[name] = _field_text(node) + (" (required)" if name in required else "")
    server = list(resource.server_fields)
    view: dict[str, Any] = {
        "kind": resource.kind,
        "id_field": resource.id_field,
        "fields": fields,
        "server_set": server,
        "operations": sorted(resource.operations),
    }
    if resource.parent:
        view["parent"] = resource.parent
    actions = [k.removeprefix("action:") for k in resource.operations if k.startswith("action:")]
    if actions:
        view["actions"] = actions
    if resource.filters:
        view["filters"] = sorted(resource.filters.values())
    return view


def _field_text(node: Any) -> str:
    if not isinstance(node, dict):
        return "any"
    if isinstance(node.get("enum"), list):
        return "one of " + ", ".join(map(str, node["enum"]))
    kind = node.get("type", "object" if "properties" in node else "any")
    text = "/".join(kind) if isinstance(kind, list) else str(kind)
    if node.get("format"):
        text += f" ({node['format']})"
    return text


def check_record(resource: Resource, data: Mapping[str, Any], *, partial: bool) -> None:
    """Validate control-plane input against the spec; the error names every bad field."""
    schema = resource.create_schema or resource.schema
    if schema is None:
        return
    root = dict(schema.json)
    if partial:
        root = _without_required(root)
    validator = jsonschema_rs.Draft202012Validator(
        root, validate_formats=True, ignore_unknown_formats=True
    )
    problems = []
    for error in validator.iter_errors(dict(data)):
        where = "/" + "/".join(map(str, error.instance_path)) if error.instance_path else "(record)"
        problems.append(f"{where}: {error.message}")
    if problems:
        raise InvalidInputError(
            f"invalid {resource.singular}: " + "; ".join(problems[:10]), field="data"
        )


def _without_required(root: dict[str, Any]) -> dict[str, Any]:
    """The same fields, none of them required (for partial changes)."""
    partial: dict[str, Any] = {"type": "object", "properties": properties(root, root)}
    if "$defs" in root:
        partial["$defs"] = root["$defs"]
    return partial


def _record_view(resource: Resource, item: Item) -> dict[str, Any]:
    return {"resource": resource.name, "id": item.key.id, "record": item.data}
