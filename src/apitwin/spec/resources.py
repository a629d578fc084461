"""Resources inferred from paths, methods and schemas: what the twin keeps state for.

``infer_resources(spec, overrides)`` maps every operation to a role on a resource (list, create,
read, replace, update, delete, an action, or none), with the id field, server-set fields, list
envelope and pagination style each resource uses. ``apitwin.yaml`` can correct any of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from apitwin.spec.model import Operation, Schema, Spec

Role = Literal["list", "create", "read", "replace", "update", "delete", "action"]
PaginationStyle = Literal["cursor", "page", "offset", "none"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """Shape of a list response: a bare array (``list_field`` None) or an object around it."""

    list_field: str | None = None  # "data", "items", ...
    next_cursor_field: str | None = None  # "next_cursor", "nextPageToken", ...
    has_more_field: str | None = None
    total_field: str | None = None
    schema: Schema | None = None  # the list response schema, to fill other required fields


@dataclass(frozen=True, slots=True)
class Pagination:
    style: PaginationStyle = "none"
    cursor_param: str | None = None  # cursor / after / starting_after / page_token
    limit_param: str | None = None  # limit / per_page / page_size
    page_param: str | None = None  # page
    offset_param: str | None = None  # offset
    default_limit: int = 20
    max_limit: int = 100


@dataclass(frozen=True, slots=True)
class OperationRole:
    resource: str
    role: Role
    action: str = ""  # for role "action": the action's name, e.g. "cancel"


@dataclass(frozen=True, slots=True)
class Resource:
    name: str  # "projects", "experts" (qualified "users.repos" only on a name clash)
    singular: str  # "project", "expert"
    kind: Literal["collection", "singleton"]
    collection_path: str | None  # "/projects/{projectId}/experts"
    item_path: str | None  # "/projects/{projectId}/experts/{expertId}" (singleton: its path)
    parent: str | None = None  # name of the parent resource
    parent_param: str | None = None  # path parameter naming the parent ("projectId")
    parent_field: str | None = None  # record field naming the parent ("project_id")
    id_param: str | None = None  # path parameter naming the item ("expertId")
    id_field: str = "id"
    id_schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    schema: Schema | None = None  # the record as the API returns it
    create_schema: Schema | None = None  # the create request body, when there is one
    server_fields: tuple[str, ...] = ()  # readOnly, id, timestamps, fields with defaults
    timestamp_fields: Mapping[str, str] = field(default_factory=dict)  # field -> created|updated
    envelope: Envelope = field(default_factory=Envelope)
    pagination: Pagination = field(default_factory=Pagination)
    filters: Mapping[str, str] = field(default_factory=dict)  # query param -> record field
    operations: Mapping[str, str] = field(default_factory=dict)  # role or "action:<name>" -> opId


@dataclass(frozen=True, slots=True)
class ResourceMap:
    resources: Mapping[str, Resource]
    roles: Mapping[str, OperationRole]  # operationId -> role

    def for_operation(self, op: Operation) -> tuple[Resource, OperationRole] | None:
        role = self.roles.get(op.operation_id)
        if role is None:
            return None
        return self.resources[role.resource], role


def infer_resources(spec: Spec, overrides: Mapping[str, Any] | None = None) -> ResourceMap:
    raise NotImplementedError
