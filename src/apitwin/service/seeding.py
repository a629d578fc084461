"""Seed data: fixtures from apitwin.yaml, the spec's own examples, or N generated records."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from apitwin.errors import ConfigError, NotFoundError
from apitwin.schemanav import keyword
from apitwin.service.records import Records
from apitwin.spec.model import Spec
from apitwin.spec.resources import Resource
from apitwin.state.store import Item, Key, Put

SEEDED_KIND = "meta"
PARENT_KEY = "_parent"
MAX_GENERATED = 1000


async def seed_connection(
    records: Records,
    spec: Spec,
    conn: str,
    fixtures: Mapping[str, list[dict[str, Any]]],
    *,
    from_examples: bool = False,
) -> int:
    """Seed a connection once (a restart keeps what it has); returns the records created."""
    marker = Key(records.twin, conn, SEEDED_KIND, "seeded")
    if await records.store.get(marker) is not None:
        return 0
    created = 0
    if from_examples:
        created += await _seed_examples(records, spec, conn)
    for name, rows in fixtures.items():
        resource = _resource(records, name)
        for row in rows:
            await create_fixture(records, conn, resource, row)
            created += 1
    await records.store.write([Put(marker, {"records": created}, now=records.clock.now())])
    return created


async def create_fixture(
    records: Records, conn: str, resource: Resource, row: Mapping[str, Any]
) -> Item:
    body = {k: v for k, v in row.items() if k != PARENT_KEY}
    parent = row.get(PARENT_KEY)
    if parent is None and resource.parent_field:
        parent = row.get(resource.parent_field)
    if resource.parent and parent is None:
        raise ConfigError(
            f"fixture for {resource.name} needs its parent {resource.parent} id: set "
            f"'{resource.parent_field or PARENT_KEY}'"
        )
    return await records.create(
        conn,
        resource,
        body,
        parent_id=None if parent is None else str(parent),
        complete=True,
        upsert=True,
    )


async def generate(
    records: Records,
    conn: str,
    resource: Resource,
    count: int,
    parent_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Item]:
    """``count`` realistic records (each different), e.g. for a demo or a load test."""
    if not 1 <= count <= MAX_GENERATED:
        raise ConfigError(f"count must be between 1 and {MAX_GENERATED}", field="count")
    if resource.parent and parent_id is None:
        raise ConfigError(
            f"{resource.name} live under {resource.parent}: give the parent id", field="parent"
        )
    return [
        await records.create(
            conn, resource, dict(overrides or {}), parent_id=parent_id, complete=True
        )
        for _ in range(count)
    ]


async def _seed_examples(records: Records, spec: Spec, conn: str) -> int:
    created = 0
    for resource in records.resources.resources.values():
        if resource.parent or resource.schema is None or resource.kind != "collection":
            continue
        # The same example often appears under several responses: seed each record once.
        unique = {repr(e.get(resource.id_field, e)): e for e in _examples(spec, resource)}
        for example in unique.values():
            await records.create(conn, resource, example, complete=True, upsert=True)
            created += 1
    return created


def _examples(spec: Spec, resource: Resource) -> list[dict[str, Any]]:
    read = resource.operations.get("read")
    op = spec.operation(read) if read else None
    found: list[dict[str, Any]] = []
    for status, response in op.responses.items() if op else ():
        if not status.startswith("2"):
            continue  # error examples are not records
        for media in response.media.values():
            found += [
                e.value
                for e in media.examples
                if isinstance(e.value, dict) and e.value.get(resource.id_field) is not None
            ]
    if resource.schema is not None:  # examples written on the record schema itself
        root = resource.schema.json
        listed = keyword(root, root, "examples") or []
        found += [e for e in listed if isinstance(e, dict) and e.get(resource.id_field)]
    return found


def _resource(records: Records, name: str) -> Resource:
    try:
        return records.resource(name)
    except NotFoundError as exc:
        raise ConfigError(f"fixtures: {exc}", field=f"fixtures.{name}") from None
