"""MCP server: workflow-level tools over the control service (a thin adapter only).

Every tool takes an explicit ``connection_id`` handle returned by ``connect`` (no hidden session
state). A handle is ``"<twin>:<client id>"`` for this server, or ``"<twin>:<client id>@<server
URL>"`` for a connection on another apitwin server reached through its admin API.

Journal entries and deliveries are also resources, and clients that listen are told when new
ones are recorded (see :class:`Notifier`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

import orjson
from mcp.server import MCPServer
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
)
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    EmptyResult,
    ListResourcesResult,
    PaginatedRequestParams,
    Resource,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field
from sse_starlette.sse import AppStatus

from apitwin import __version__
from apitwin.changes import Change, Listener
from apitwin.errors import ApitwinError
from apitwin.faults import INBOUND, OUTBOUND
from apitwin.service.actions import Action

log = logging.getLogger(__name__)
MODERN = MODERN_PROTOCOL_VERSIONS

INSTRUCTIONS = (
    "apitwin runs working twins of partner platforms. Call connect(client_id) first; every other "
    "tool takes the connection_id it returns. describe_api(connection_id) lists the resources, "
    "their fields and events. Records you create or change emit the platform's webhooks. "
    "list_requests shows what the system under test sent; the resources "
    "apitwin://connections/<connection_id>/requests and /deliveries change as it does."
)

ConnectionId = Annotated[str, Field(description="Handle returned by connect()")]
RecordId = Annotated[str, Field(description="The record's id, e.g. from list_records")]
Changes = Annotated[
    dict[str, Any], Field(description='Fields to change, e.g. {"status": "closed"}; null removes')
]
EndpointId = Annotated[str, Field(description="An endpoint id from list_endpoints")]
DeliveryId = Annotated[str, Field(description="A delivery id from list_deliveries")]
RequestId = Annotated[str, Field(description="A journal entry id from list_requests")]
Cursor = Annotated[str | None, Field(description="next_cursor of the previous page")]
StatusFilter = Annotated[
    str | None,
    Field(description="An HTTP status or class, e.g. 201 or 4xx", pattern=r"^[1-5]([0-9]{2}|xx)$"),
]
ResourceName = Annotated[str, Field(description="Resource name from describe_api, e.g. 'projects'")]
Parent = Annotated[
    dict[str, str] | None,
    Field(description='For nested resources: the parent\'s id, e.g. {"projects": "prj_123"}'),
]


class Control(Protocol):
    """What the tools need; ControlService in-process, RemoteControl over the admin API."""

    async def connect(
        self,
        client_id: str,
        *,
        twin: str | None = None,
        webhook_url: str | None = None,
        label: str = "",
    ) -> dict[str, Any]: ...
    async def list_connections(self, twin: str | None = None) -> list[dict[str, Any]]: ...
    async def reset_connection(self, connection_id: str) -> dict[str, Any]: ...
    async def remove_connection(self, connection_id: str) -> dict[str, Any]: ...
    async def describe_api(
        self, connection_id: str, resource: str | None = None
    ) -> dict[str, Any]: ...
    async def list_records(
        self,
        connection_id: str,
        resource: str,
        *,
        parent: dict[str, str] | None = None,
        filters: dict[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]: ...
    async def get_record(
        self, connection_id: str, resource: str, record_id: str
    ) -> dict[str, Any]: ...
    async def create_record(
        self,
        connection_id: str,
        resource: str,
        data: dict[str, Any],
        *,
        parent: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...
    async def update_record(
        self, connection_id: str, resource: str, record_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]: ...
    async def delete_record(
        self, connection_id: str, resource: str, record_id: str
    ) -> dict[str, Any]: ...
    async def generate_records(
        self, connection_id: str, resource: str, count: int, *, parent: dict[str, str] | None = None
    ) -> dict[str, Any]: ...
    async def record_action(
        self,
        connection_id: str,
        resource: str,
        record_id: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        parent: dict[str, str] | None = None,
    ) -> dict[str, Any]: ...
    async def advance_clock(self, connection_id: str, seconds: float) -> dict[str, Any]: ...
    async def trigger_event(
        self,
        connection_id: str,
        event: str,
        *,
        record: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]: ...
    async def list_deliveries(
        self,
        connection_id: str,
        *,
        status: str | None = None,
        event: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]: ...
    async def get_delivery(self, connection_id: str, delivery_id: str) -> dict[str, Any]: ...
    async def redeliver(self, connection_id: str, delivery_id: str) -> dict[str, Any]: ...
    async def redeliver_failed(
        self, connection_id: str, since_seconds: float
    ) -> dict[str, Any]: ...
    async def add_fault(self, connection_id: str, rule: dict[str, Any]) -> dict[str, Any]: ...
    async def run_action(
        self, connection_id: str, action: str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]: ...
    async def list_actions(self, connection_id: str) -> dict[str, Any]: ...
    async def add_endpoint(
        self,
        connection_id: str,
        url: str,
        *,
        events: list[str] | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]: ...
    async def list_endpoints(self, connection_id: str) -> dict[str, Any]: ...
    async def rotate_secret(
        self, connection_id: str, endpoint_id: str, grace_seconds: float = 86400
    ) -> dict[str, Any]: ...
    async def remove_endpoint(self, connection_id: str, endpoint_id: str) -> dict[str, Any]: ...
    async def list_faults(self, connection_id: str) -> dict[str, Any]: ...
    async def clear_faults(
        self, connection_id: str, rule_id: str | None = None
    ) -> dict[str, Any]: ...
    async def list_requests(
        self, connection_id: str, *, limit: int = 20, cursor: str | None = None, **filters: Any
    ) -> dict[str, Any]: ...
    async def get_request(self, connection_id: str, request_id: str) -> dict[str, Any]: ...
    async def count_requests(self, connection_id: str, **filters: Any) -> dict[str, Any]: ...
    def subscribe(self, listener: Listener) -> Callable[[], None]: ...


# Every hint set: clients assume the worst of an unset one.
READ = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
ADD = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False
)
CHANGE = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)
FAULT_KINDS = sorted(set(INBOUND) | set(OUTBOUND))
REMOVE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False
)


class Router:
    """Finds the control service a handle belongs to: this server's, or a remote one."""

    def __init__(self, local: Control | None) -> None:
        self.local = local
        self.remote: dict[str, Control] = {}

    def remote_url(self, server_url: str | None) -> str | None:
        """The other server ``server_url`` names; None for the one this server drives."""
        url = (server_url or "").rstrip("/")
        here = str(getattr(self.local, "origin", "")).rstrip("/")
        return url if url and url != here else None

    def for_server(self, server_url: str | None) -> Control:
        url = self.remote_url(server_url)
        if url:
            from apitwin.remote import RemoteControl

            if url not in self.remote:
                self.remote[url] = RemoteControl(url)
            return self.remote[url]
        if self.local is None:
            raise ToolError(
                "this MCP server runs no twin itself: pass server_url to connect(), "
                "e.g. http://127.0.0.1:8000"
            )
        return self.local

    def split(self, connection_id: str) -> tuple[Control, str]:
        handle, at, server = connection_id.partition("@")
        return self.for_server(server if at else None), handle


def _fail(exc: ApitwinError) -> ToolError:
    return ToolError(exc.message)


def build_server(local: Control | None) -> MCPServer:
    notifier = Notifier(local)
    mcp = MCPServer(
        "apitwin",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
        subscriptions=notifier.bus,
    )
    router = Router(local)

    def remote_id(view: dict[str, Any], server_url: str | None) -> dict[str, Any]:
        url = router.remote_url(server_url)
        if url:
            view = {**view, "connection_id": f"{view['connection_id']}@{url}"}
        return view

    @mcp.tool(annotations=CHANGE)
    async def connect(
        client_id: Annotated[str, Field(description="Client id of the integration environment")],
        server_url: Annotated[
            str | None,
            Field(
                description=(
                    "The apitwin server, e.g. http://127.0.0.1:8000 (default: the one this MCP "
                    "server drives)"
                )
            ),
        ] = None,
        twin: Annotated[
            str | None, Field(description="Twin name when a server runs several")
        ] = None,
        webhook_url: Annotated[str | None, Field(description="Where webhooks go")] = None,
    ) -> dict[str, Any]:
        """Connect to a twin with a client id; creates the connection when it does not exist.

        Returns connection_id (pass it to every other tool), the base URL and credentials to
        give the system under test (secrets in full only when just created), and the webhook
        target.
        """
        try:
            view = await router.for_server(server_url).connect(
                client_id, twin=twin, webhook_url=webhook_url
            )
        except ApitwinError as exc:
            raise _fail(exc) from None
        return remote_id(view, server_url)

    @mcp.tool(annotations=READ)
    async def list_connections(
        server_url: Annotated[str | None, Field(description="Another apitwin server")] = None,
    ) -> dict[str, Any]:
        """List the connections of every twin (secrets masked)."""
        control = router.for_server(server_url)
        views = await control.list_connections()
        return {"connections": [remote_id(c, server_url) for c in views]}

    @mcp.tool(annotations=REMOVE)
    async def reset_connection(connection_id: ConnectionId) -> dict[str, Any]:
        """Delete all records of the connection and restore its seed data."""
        control, handle = router.split(connection_id)
        return await _call(control.reset_connection(handle))

    @mcp.tool(annotations=REMOVE)
    async def remove_connection(connection_id: ConnectionId) -> dict[str, Any]:
        """Remove the connection with its records, journal, webhook endpoints and deliveries,
        faults and tokens. Its client id can connect again afresh, with new credentials."""
        control, handle = router.split(connection_id)
        return await _call(control.remove_connection(handle))

    @mcp.tool(annotations=READ)
    async def describe_api(
        connection_id: ConnectionId,
        resource: Annotated[str | None, Field(description="Only this resource")] = None,
    ) -> dict[str, Any]:
        """The twin's resources (fields, required, enums, parent), actions and events."""
        control, handle = router.split(connection_id)
        return await _call(control.describe_api(handle, resource))

    @mcp.tool(annotations=READ)
    async def list_records(
        connection_id: ConnectionId,
        resource: ResourceName,
        parent: Parent = None,
        filters: Annotated[dict[str, Any] | None, Field(description="field -> value")] = None,
        cursor: Cursor = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """List records of a resource, e.g. experts submitted to a project (newest last)."""
        control, handle = router.split(connection_id)
        return await _call(
            control.list_records(
                handle, resource, parent=parent, filters=filters, cursor=cursor, limit=limit
            )
        )

    @mcp.tool(annotations=READ)
    async def get_record(
        connection_id: ConnectionId, resource: ResourceName, record_id: RecordId
    ) -> dict[str, Any]:
        """Read one record."""
        control, handle = router.split(connection_id)
        return await _call(control.get_record(handle, resource, record_id))

    @mcp.tool(annotations=ADD)
    async def create_record(
        connection_id: ConnectionId,
        resource: ResourceName,
        data: Annotated[dict[str, Any], Field(description="Fields; see describe_api")],
        parent: Parent = None,
    ) -> dict[str, Any]:
        """Create a record as the partner platform would (emits its webhook events)."""
        control, handle = router.split(connection_id)
        return await _call(control.create_record(handle, resource, data, parent=parent))

    @mcp.tool(annotations=CHANGE)
    async def update_record(
        connection_id: ConnectionId, resource: ResourceName, record_id: RecordId, changes: Changes
    ) -> dict[str, Any]:
        """Change fields of a record (JSON merge patch; null removes a field)."""
        control, handle = router.split(connection_id)
        return await _call(control.update_record(handle, resource, record_id, changes))

    @mcp.tool(annotations=REMOVE)
    async def delete_record(
        connection_id: ConnectionId, resource: ResourceName, record_id: RecordId
    ) -> dict[str, Any]:
        """Delete a record."""
        control, handle = router.split(connection_id)
        return await _call(control.delete_record(handle, resource, record_id))

    @mcp.tool(annotations=CHANGE)
    async def record_action(
        connection_id: ConnectionId,
        resource: ResourceName,
        record_id: RecordId,
        action: Annotated[
            str, Field(description="One of the resource's actions from describe_api, e.g. 'cancel'")
        ],
        body: Annotated[
            dict[str, Any] | None, Field(description="The action's request body, if it takes one")
        ] = None,
        parent: Parent = None,
    ) -> dict[str, Any]:
        """Perform a record's own action as the partner would (shortlist, cancel, ...); emits
        the events linked to it."""
        control, handle = router.split(connection_id)
        return await _call(
            control.record_action(handle, resource, record_id, action, body, parent=parent)
        )

    @mcp.tool(annotations=ADD)
    async def generate_records(
        connection_id: ConnectionId,
        resource: ResourceName,
        count: Annotated[int, Field(ge=1, le=1000)] = 5,
        parent: Parent = None,
    ) -> dict[str, Any]:
        """Create realistic generated records."""
        control, handle = router.split(connection_id)
        return await _call(control.generate_records(handle, resource, count, parent=parent))

    @mcp.tool(annotations=ADD)
    async def advance_clock(
        connection_id: ConnectionId,
        seconds: Annotated[float, Field(gt=0, description="How far to move the twin's clock")],
    ) -> dict[str, Any]:
        """Move the twin's virtual clock forward, so due retries and scheduled events run now."""
        control, handle = router.split(connection_id)
        return await _call(control.advance_clock(handle, seconds))

    @mcp.tool(annotations=ADD)
    async def trigger_event(
        connection_id: ConnectionId,
        event: Annotated[
            str, Field(description="Event name from describe_api, e.g. project.created")
        ],
        record: Annotated[
            dict[str, str] | None,
            Field(description='The record it is about: {"resource": "projects", "id": "…"}'),
        ] = None,
        overrides: Annotated[
            dict[str, Any] | None,
            Field(description="Fields to change in the payload (JSON merge patch)"),
        ] = None,
    ) -> dict[str, Any]:
        """Send a webhook event to the connection's endpoints now, signed like production."""
        control, handle = router.split(connection_id)
        return await _call(control.trigger_event(handle, event, record=record, overrides=overrides))

    @mcp.tool(annotations=READ)
    async def list_deliveries(
        connection_id: ConnectionId,
        status: Annotated[
            Literal["pending", "delivering", "succeeded", "failed", "dropped"] | None,
            Field(description="Only deliveries in this state"),
        ] = None,
        event: Annotated[str | None, Field(description="Only this event type")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """Webhook deliveries to the connection's endpoints, newest first."""
        control, handle = router.split(connection_id)
        return await _call(
            control.list_deliveries(handle, status=status, event=event, limit=limit, cursor=cursor)
        )

    @mcp.tool(annotations=ADD)
    async def add_endpoint(
        connection_id: ConnectionId,
        url: Annotated[str, Field(description="Where the system under test receives webhooks")],
        events: Annotated[
            list[str] | None,
            Field(description="Only these events (glob like 'project.*'); all when omitted"),
        ] = None,
        scheme: Annotated[
            Literal[
                "standard-webhooks", "standard-webhooks-v1a", "stripe", "github", "slack", "shopify"
            ]
            | None,
            Field(description="Signing scheme; the twin's default when omitted"),
        ] = None,
    ) -> dict[str, Any]:
        """Add a webhook target; the signing secret is shown in full only in this answer."""
        control, handle = router.split(connection_id)
        return await _call(control.add_endpoint(handle, url, events=events, scheme=scheme))

    @mcp.tool(annotations=READ)
    async def list_endpoints(connection_id: ConnectionId) -> dict[str, Any]:
        """Webhook targets of the connection (secrets masked), with their health."""
        control, handle = router.split(connection_id)
        return await _call(control.list_endpoints(handle))

    @mcp.tool(annotations=ADD)
    async def rotate_secret(
        connection_id: ConnectionId,
        endpoint_id: EndpointId,
        grace_seconds: Annotated[
            float, Field(ge=0, description="Old secret still signs this long")
        ] = 86400,
    ) -> dict[str, Any]:
        """New signing secret for an endpoint (old and new signatures sent during the grace)."""
        control, handle = router.split(connection_id)
        return await _call(control.rotate_secret(handle, endpoint_id, grace_seconds))

    @mcp.tool(annotations=REMOVE)
    async def remove_endpoint(
        connection_id: ConnectionId, endpoint_id: EndpointId
    ) -> dict[str, Any]:
        """Stop sending webhooks to an endpoint; its pending deliveries are dropped."""
        control, handle = router.split(connection_id)
        return await _call(control.remove_endpoint(handle, endpoint_id))

    @mcp.tool(annotations=READ)
    async def get_delivery(connection_id: ConnectionId, delivery_id: DeliveryId) -> dict[str, Any]:
        """One delivery with every attempt: headers (secrets masked), status, response, timing."""
        control, handle = router.split(connection_id)
        return await _call(control.get_delivery(handle, delivery_id))

    @mcp.tool(annotations=ADD)
    async def redeliver(
        connection_id: ConnectionId,
        delivery_id: Annotated[str | None, Field(description="One delivery")] = None,
        failed_within_seconds: Annotated[
            float | None, Field(gt=0, description="Or: every delivery that failed this recently")
        ] = None,
    ) -> dict[str, Any]:
        """Deliver again: one delivery, or all that failed recently (a new attempt cycle)."""
        control, handle = router.split(connection_id)
        if delivery_id:
            return await _call(control.redeliver(handle, delivery_id))
        if failed_within_seconds:
            return await _call(control.redeliver_failed(handle, failed_within_seconds))
        raise ToolError("give delivery_id, or failed_within_seconds to redeliver recent failures")

    @mcp.tool(annotations=ADD)
    async def add_fault(
        connection_id: ConnectionId,
        kind: Annotated[
            str,
            Field(
                description=(
                    f"inbound (API requests): {', '.join(sorted(INBOUND))}; "
                    f"outbound (webhooks): {', '.join(sorted(OUTBOUND))}"
                ),
                json_schema_extra={"enum": FAULT_KINDS},
            ),
        ],
        params: Annotated[
            dict[str, Any] | None, Field(description='e.g. {"status": 503} or {"ms": 2000}')
        ] = None,
        operation: Annotated[
            str | None, Field(description="operationId or 'METHOD /path/template' (inbound)")
        ] = None,
        event_type: Annotated[str | None, Field(description="event (outbound)")] = None,
        next: Annotated[int | None, Field(ge=1, description="fire for the next N matches")] = None,
        probability: Annotated[float | None, Field(ge=0, le=1)] = None,
        seed: Annotated[int | None, Field(description="seed for probability")] = None,
        for_seconds: Annotated[
            float | None, Field(gt=0, description="active this long on the twin's clock")
        ] = None,
    ) -> dict[str, Any]:
        """Make the twin fail on purpose, e.g. the next request answers 503."""
        rule = {
            "kind": kind,
            "params": params or {},
            "operation": operation,
            "event_type": event_type,
            "next": next,
            "probability": probability,
            "seed": seed,
            "for_seconds": for_seconds,
        }
        control, handle = router.split(connection_id)
        return await _call(
            control.add_fault(handle, {k: v for k, v in rule.items() if v is not None})
        )

    @mcp.tool(annotations=READ)
    async def list_faults(connection_id: ConnectionId) -> dict[str, Any]:
        """Fault rules of the connection, with their hits and what remains."""
        control, handle = router.split(connection_id)
        return await _call(control.list_faults(handle))

    @mcp.tool(annotations=REMOVE)
    async def clear_faults(
        connection_id: ConnectionId,
        rule_id: Annotated[str | None, Field(description="Only this rule")] = None,
    ) -> dict[str, Any]:
        """Remove fault rules (all of them, or one)."""
        control, handle = router.split(connection_id)
        return await _call(control.clear_faults(handle, rule_id))

    @mcp.tool(annotations=READ)
    async def list_requests(
        connection_id: ConnectionId,
        operation: Annotated[str | None, Field(description="operationId or 'METHOD /path'")] = None,
        status: StatusFilter = None,
        text: Annotated[str | None, Field(description="text in the path or bodies")] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        cursor: Cursor = None,
    ) -> dict[str, Any]:
        """What the system under test sent the twin, newest first, with the twin's answers."""
        control, handle = router.split(connection_id)
        return await _call(
            control.list_requests(
                handle,
                limit=limit,
                cursor=cursor,
                operation=operation,
                status=_status(status),
                text=text,
            )
        )

    @mcp.tool(annotations=READ)
    async def get_request(connection_id: ConnectionId, request_id: RequestId) -> dict[str, Any]:
        """One journal entry in full."""
        control, handle = router.split(connection_id)
        return await _call(control.get_request(handle, request_id))

    @mcp.tool(annotations=READ)
    async def count_requests(
        connection_id: ConnectionId,
        operation: Annotated[str | None, Field(description="operationId or 'METHOD /path'")] = None,
        status: StatusFilter = None,
    ) -> dict[str, Any]:
        """Count journal entries, e.g. was submitExpert called 3 times with status 201?"""
        control, handle = router.split(connection_id)
        return await _call(
            control.count_requests(handle, operation=operation, status=_status(status))
        )

    @mcp.tool(annotations=ADD)
    async def run_action(
        connection_id: ConnectionId,
        action: Annotated[str, Field(description="A workflow action from describe_api")],
        inputs: Annotated[dict[str, Any] | None, Field(description="The action's inputs")] = None,
    ) -> dict[str, Any]:
        """Run a workflow action declared for the twin (e.g. shortlist_expert)."""
        control, handle = router.split(connection_id)
        return await _call(control.run_action(handle, action, inputs))

    for action in getattr(local, "all_actions", list)():
        mcp.add_tool(
            _action_tool(router, action),
            name=action.name,
            description=action.description,
            annotations=ADD,
        )

    @mcp.resource(
        "apitwin://connections/{connection_id}/deliveries/{delivery_id}",
        name="delivery",
        description="A webhook delivery with every attempt (payloads in full, secrets masked).",
        mime_type="application/json",
    )
    async def delivery_resource(connection_id: str, delivery_id: str) -> str:
        control, handle = router.split(connection_id)
        return orjson.dumps(await _call(control.get_delivery(handle, delivery_id))).decode()

    @mcp.resource(
        "apitwin://connections/{connection_id}/requests/{request_id}",
        name="request",
        description="A journal entry: what the system under test sent and what the twin answered.",
        mime_type="application/json",
    )
    async def request_resource(connection_id: str, request_id: str) -> str:
        control, handle = router.split(connection_id)
        return orjson.dumps(await _call(control.get_request(handle, request_id))).decode()

    @mcp.resource(
        "apitwin://connections/{connection_id}/requests",
        name="requests",
        description=f"The {FEED_SIZE} newest journal entries of a connection, in brief.",
        mime_type="application/json",
    )
    async def requests_resource(connection_id: str) -> str:
        control, handle = router.split(connection_id)
        page = await _call(control.list_requests(handle, limit=FEED_SIZE))
        return orjson.dumps([_request_brief(e) for e in page["requests"]]).decode()

    @mcp.resource(
        "apitwin://connections/{connection_id}/deliveries",
        name="deliveries",
        description=f"The {FEED_SIZE} newest webhook deliveries of a connection, in brief.",
        mime_type="application/json",
    )
    async def deliveries_resource(connection_id: str) -> str:
        control, handle = router.split(connection_id)
        page = await _call(control.list_deliveries(handle, limit=FEED_SIZE))
        return orjson.dumps([_delivery_brief(d) for d in page["deliveries"]]).decode()

    notifier.install(mcp)
    return mcp


FEED_SIZE = 20  # entries in a connection's requests or deliveries resource
LISTED = 10  # newest requests and deliveries per connection in resources/list
MAX_LEGACY_SESSIONS = 64
SEND_TIMEOUT = 5.0  # seconds a session may take to accept a notification


def feed_uri(connection_id: str, kind: str) -> str:
    return (
        f"apitwin://connections/{connection_id}/{'requests' if kind == 'request' else 'deliveries'}"
    )


def _request_brief(entry: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "at", "method", "path", "operation", "status", "fault", "fault_kind")
    return {k: entry.get(k) for k in keep}


def _delivery_brief(delivery: dict[str, Any]) -> dict[str, Any]:
    keep = ("id", "event", "endpoint", "url", "status", "attempts", "last_status", "created")
    return {k: delivery.get(k) for k in keep if k in delivery}


class _CountingBus(InMemorySubscriptionBus):
    """The SDK's in-process bus, telling the notifier when listen streams come and go."""

    def __init__(self, on_count: Callable[[], None]) -> None:
        super().__init__()
        self.count = 0
        self._on_count = on_count

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        stop = super().subscribe(listener)
        self.count += 1
        self._on_count()
        done = False

        def unsubscribe() -> None:
            nonlocal done
            if not done:
                done = True
                stop()
                self.count -= 1
                self._on_count()

        return unsubscribe


class Notifier:
    """Turns the control service's change feed into MCP change notifications.

    A new journal entry or delivery changes the resource list (it lists the newest ones) and
    updates the connection's ``requests`` or ``deliveries`` resource (and the delivery's own).

    * 2026-07-28 clients open ``subscriptions/listen`` (the SDK serves it from ``bus``).
    * 2025-11-25 sessions get ``notifications/resources/list_changed`` on their standalone
      stream once they have listed resources, and ``notifications/resources/updated`` for the
      URIs they ``resources/subscribe`` to.

    The control service is watched only while anyone listens: over stdio it is a remote server
    polled through its admin API.
    """

    def __init__(self, control: Control | None) -> None:
        self.control = control
        self.bus = _CountingBus(self._watch)
        self.listen = ListenHandler(self.bus)
        self._exit_watch: asyncio.Task[None] | None = None
        self.sessions: OrderedDict[str, ServerSession] = OrderedDict()
        self.subscribed: dict[str, set[str]] = {}  # URI -> keys of legacy sessions
        self._stop: Callable[[], None] | None = None
        self._updated: set[str] = set()
        self._listed = False
        self._flush: asyncio.Task[None] | None = None

    def install(self, mcp: MCPServer) -> None:
        # MCPServer wires only the 2026-07-28 way (subscriptions/listen, with a handler we
        # cannot close): the rest needs the low-level server.
        low = mcp._lowlevel_server
        add = low.add_request_handler
        add("subscriptions/listen", SubscriptionsListenRequestParams, self.listen)
        add("resources/list", PaginatedRequestParams, self._list(mcp))
        add("resources/subscribe", SubscribeRequestParams, self._subscribe)
        add("resources/unsubscribe", UnsubscribeRequestParams, self._unsubscribe)
        options = low.create_initialization_options

        def initialization_options(*args: Any, **kwargs: Any) -> Any:
            if not args and "notification_options" not in kwargs:
                kwargs["notification_options"] = NotificationOptions(resources_changed=True)
            return options(*args, **kwargs)

        low.create_initialization_options = initialization_options  # type: ignore[method-assign]

    # -- who listens -----------------------------------------------------------------------

    def _watch(self) -> None:
        if self.bus.count > 0 and self._exit_watch is None:
            self._exit_watch = asyncio.get_running_loop().create_task(self._end_on_exit())
        elif self.bus.count == 0 and self._exit_watch is not None:
            self._exit_watch.cancel()
            self._exit_watch = None
        wanted = self.bus.count > 0 or bool(self.sessions)
        if wanted and self._stop is None and self.control is not None:
            self._stop = self.control.subscribe(self._changed)
        elif not wanted and self._stop is not None:
            self._stop()
            self._stop = None

    async def _end_on_exit(self) -> None:
        # uvicorn waits for open responses to finish before the app shuts down, and a listen
        # stream ends only when told: end them once the server is asked to exit.
        while not _server_exiting():
            await asyncio.sleep(0.5)
        self.listen.close()

    def _remember(self, ctx: ServerRequestContext[Any, Any]) -> str | None:
        """The legacy session's key (None on 2026-07-28, where there are no sessions)."""
        if ctx.protocol_version in MODERN:
            return None
        headers = getattr(ctx.request, "headers", None)
        key = str(headers.get("mcp-session-id", "")) if headers is not None else ""
        key = key or "stream"  # stdio: one client per process
        self.sessions[key] = ctx.session
        self.sessions.move_to_end(key)
        while len(self.sessions) > MAX_LEGACY_SESSIONS:
            self._forget(next(iter(self.sessions)))
        self._watch()
        return key

    def _forget(self, key: str) -> None:
        self.sessions.pop(key, None)
        for keys in self.subscribed.values():
            keys.discard(key)

    def _list(
        self, mcp: MCPServer
    ) -> Callable[[ServerRequestContext[Any, Any], PaginatedRequestParams], Awaitable[Any]]:
        async def handler(
            ctx: ServerRequestContext[Any, Any], params: PaginatedRequestParams
        ) -> ListResourcesResult:
            self._remember(ctx)
            listed = await mcp.list_resources()
            if self.control is not None:
                try:
                    listed += await _connection_resources(self.control)
                except ApitwinError as exc:  # over stdio: the server is unreachable
                    raise MCPError(INTERNAL_ERROR, exc.message) from None
            return ListResourcesResult(resources=listed)

        return handler

    async def _subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams
    ) -> EmptyResult:
        key = self._remember(ctx)
        if key is not None:
            self.subscribed.setdefault(str(params.uri), set()).add(key)
        return EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        key = self._remember(ctx)
        if key is not None:
            self.subscribed.get(str(params.uri), set()).discard(key)
        return EmptyResult()

    # -- telling them ----------------------------------------------------------------------

    def _changed(self, change: Change) -> None:
        feed = feed_uri(change.connection, change.kind)
        self._updated.add(feed)
        if change.id:
            self._updated.add(f"{feed}/{change.id}")
            self._listed = True
        if self._flush is None:
            # Coalesces a burst (a request and the deliveries it causes) into one round.
            self._flush = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        await asyncio.sleep(0)
        uris, self._updated = sorted(self._updated), set()
        listed, self._listed = self._listed, False
        self._flush = None
        if listed:
            await self.bus.publish(ResourcesListChanged())
        for uri in uris:
            await self.bus.publish(ResourceUpdated(uri))
        for key, session in list(self.sessions.items()):
            try:
                async with asyncio.timeout(SEND_TIMEOUT):
                    if listed:
                        await session.send_resource_list_changed()
                    for uri in uris:
                        if key in self.subscribed.get(uri, ()):
                            await session.send_resource_updated(uri)
            except Exception:  # the session is gone, or stopped reading: stop telling it
                log.debug("dropping MCP session %s", key, exc_info=True)
                self._forget(key)
                self._watch()


def _server_exiting() -> bool:
    """Whether uvicorn was asked to stop, the way sse-starlette finds out for its streams: its
    flag, or the uvicorn server behind the signal handler (installed before MCP loaded)."""
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return AppStatus.should_exit or bool(getattr(server, "should_exit", False))


async def _connection_resources(control: Control) -> list[Resource]:
    """Each connection's requests and deliveries, and the newest of both."""
    found: list[Resource] = []
    for connection in await control.list_connections():
        handle = connection["connection_id"]
        requests = feed_uri(handle, "request")
        deliveries = feed_uri(handle, "delivery")
        found.append(_resource(requests, f"{handle} requests", "Newest journal entries"))
        found.append(_resource(deliveries, f"{handle} deliveries", "Newest webhook deliveries"))
        try:
            entries = (await control.list_requests(handle, limit=LISTED))["requests"]
            sent = (await control.list_deliveries(handle, limit=LISTED))["deliveries"]
        except ApitwinError:
            continue  # reset or removed meanwhile
        for entry in entries:
            what = f"{entry['method']} {entry['path']} -> {entry['status']}"
            found.append(_resource(f"{requests}/{entry['id']}", entry["id"], what))
        for delivery in sent:
            what = f"{delivery.get('event')} ({delivery.get('status')})"
            found.append(_resource(f"{deliveries}/{delivery['id']}", delivery["id"], what))
    return found


def _resource(uri: str, name: str, description: str) -> Resource:
    return Resource(uri=uri, name=name, description=description, mime_type="application/json")


_TYPES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "object": dict[str, Any],
    "array": list[Any],
}


def _action_tool(router: Router, action: Action) -> Callable[..., Awaitable[dict[str, Any]]]:
    """A tool function whose typed signature is the action's inputs (enums as enums)."""

    async def tool(connection_id: str, **inputs: Any) -> dict[str, Any]:
        control, handle = router.split(connection_id)
        return await _call(control.run_action(handle, action.name, inputs))

    params = [
        inspect.Parameter("connection_id", inspect.Parameter.KEYWORD_ONLY, annotation=ConnectionId)
    ]
    for spec in action.inputs:
        kind: Any = Literal[spec.enum] if spec.enum else _TYPES[spec.type]
        base = kind if spec.required else kind | None
        # Built at run time from the config, so the type checker cannot follow it.
        hint = Annotated.__class_getitem__((base, Field(description=spec.description or spec.name)))  # type: ignore[attr-defined]
        default = inspect.Parameter.empty if spec.required else None
        params.append(
            inspect.Parameter(
                spec.name, inspect.Parameter.KEYWORD_ONLY, annotation=hint, default=default
            )
        )
    tool.__signature__ = inspect.Signature(params, return_annotation=dict[str, Any])  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": dict[str, Any]}
    tool.__name__ = action.name
    tool.__doc__ = action.description
    return tool


def _status(value: str | None) -> int | str | None:
    return int(value) if value and value.isdigit() else value


async def _call(awaitable: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    try:
        result = await awaitable
    except ApitwinError as exc:
        raise _fail(exc) from None
    return dict(result)
