"""RemoteControl: the control-service interface, over another server's admin REST API."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx2

from apitwin.changes import Change, ChangeFeed, ChangeKind, Listener
from apitwin.errors import (
    ApitwinError,
    ConfigError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
)
from apitwin.service.actions import Action, ActionInput

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0  # seconds between looks at the server while anyone listens
POLL_DEPTH = 5  # newest journal entries and deliveries compared per connection

_ERRORS: dict[int, type[ApitwinError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConfigError,
    429: LimitExceededError,
}


class RemoteControl:
    def __init__(self, server_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.origin = server_url.rstrip("/")
        self.base = self.origin + "/_apitwin/api"
        self.client = httpx2.AsyncClient(headers=headers, timeout=timeout)
        self.headers, self.timeout = headers, timeout
        self.poll_interval = POLL_INTERVAL
        self._changes = ChangeFeed()
        self._poller: asyncio.Task[None] | None = None

    async def _request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = await self.client.request(method, self.base + path, json=json, params=params)
        except httpx2.TransportError as exc:
            raise ApitwinError(f"cannot reach the apitwin server at {self.base}: {exc}") from None
        if response.status_code >= 400:
            detail = _detail(response)
            raise _ERRORS.get(response.status_code, ApitwinError)(detail)
        return response.json()

    async def connect(
        self,
        client_id: str,
        *,
        twin: str | None = None,
        webhook_url: str | None = None,
        label: str = "",
    ) -> dict[str, Any]:
        body = {"client_id": client_id, "twin": twin, "webhook_url": webhook_url, "label": label}
        return dict(
            await self._request("POST", "/connections", json={k: v for k, v in body.items() if v})
        )

    async def list_connections(self, twin: str | None = None) -> list[dict[str, Any]]:
        found = await self._request("GET", "/connections", params={"twin": twin} if twin else None)
        return list(found["connections"])

    async def reset_connection(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("POST", f"{_conn(connection_id)}/reset"))

    async def remove_connection(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("DELETE", _conn(connection_id)))

    async def describe_api(self, connection_id: str, resource: str | None = None) -> dict[str, Any]:
        params = {"resource": resource} if resource else None
        return dict(await self._request("GET", f"{_conn(connection_id)}/describe", params=params))

    async def list_records(
        self,
        connection_id: str,
        resource: str,
        *,
        parent: dict[str, str] | None = None,
        filters: dict[str, Any] | None = None,
        cursor: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {**(filters or {}), "limit": limit}
        if cursor:
            params["cursor"] = cursor
        if parent:
            name, value = next(iter(parent.items()))
            params["parent"] = f"{name}/{value}"
        return dict(await self._request("GET", _records(connection_id, resource), params=params))

    async def get_record(self, connection_id: str, resource: str, record_id: str) -> dict[str, Any]:
        return dict(
            await self._request(
                "GET", f"{_records(connection_id, resource)}/{quote(record_id, safe='')}"
            )
        )

    async def create_record(
        self,
        connection_id: str,
        resource: str,
        data: dict[str, Any],
        *,
        parent: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return dict(
            await self._request(
                "POST", _records(connection_id, resource), json={"data": data, "parent": parent}
            )
        )

    async def update_record(
        self, connection_id: str, resource: str, record_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        path = f"{_records(connection_id, resource)}/{quote(record_id, safe='')}"
        return dict(await self._request("PATCH", path, json={"changes": changes}))

    async def delete_record(
        self, connection_id: str, resource: str, record_id: str
    ) -> dict[str, Any]:
        path = f"{_records(connection_id, resource)}/{quote(record_id, safe='')}"
        return dict(await self._request("DELETE", path))

    async def generate_records(
        self, connection_id: str, resource: str, count: int, *, parent: dict[str, str] | None = None
    ) -> dict[str, Any]:
        return dict(
            await self._request(
                "POST",
                f"{_records(connection_id, resource)}/generate",
                json={"count": count, "parent": parent},
            )
        )

    async def record_action(
        self,
        connection_id: str,
        resource: str,
        record_id: str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        parent: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        path = (
            f"{_records(connection_id, resource)}/{quote(record_id, safe='')}"
            f"/actions/{quote(action, safe='')}"
        )
        params = {"parent": "/".join(next(iter(parent.items())))} if parent else None
        return dict(await self._request("POST", path, json={"body": body}, params=params))

    async def advance_clock(self, connection_id: str, seconds: float) -> dict[str, Any]:
        return dict(
            await self._request(
                "POST", f"{_conn(connection_id)}/clock/advance", json={"seconds": seconds}
            )
        )

    async def trigger_event(
        self,
        connection_id: str,
        event: str,
        *,
        record: dict[str, str] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body = {"event": event, "record": record, "overrides": overrides}
        return dict(await self._request("POST", f"{_conn(connection_id)}/events", json=body))

    async def list_deliveries(
        self,
        connection_id: str,
        *,
        status: str | None = None,
        event: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = _params(status=status, event=event, limit=limit, cursor=cursor)
        return dict(await self._request("GET", f"{_conn(connection_id)}/deliveries", params=params))

    async def get_delivery(self, connection_id: str, delivery_id: str) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/deliveries/{quote(delivery_id, safe='')}"
        return dict(await self._request("GET", path))

    async def redeliver(self, connection_id: str, delivery_id: str) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/deliveries/{quote(delivery_id, safe='')}/redeliver"
        return dict(await self._request("POST", path))

    async def add_fault(self, connection_id: str, rule: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._request("POST", f"{_conn(connection_id)}/faults", json=rule))

    async def redeliver_failed(self, connection_id: str, since_seconds: float) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/deliveries/redeliver-failed"
        return dict(await self._request("POST", path, json={"since_seconds": since_seconds}))

    async def add_endpoint(
        self,
        connection_id: str,
        url: str,
        *,
        events: list[str] | None = None,
        scheme: str | None = None,
    ) -> dict[str, Any]:
        body = _params(url=url, events=events, scheme=scheme)
        return dict(await self._request("POST", f"{_conn(connection_id)}/endpoints", json=body))

    async def list_endpoints(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"{_conn(connection_id)}/endpoints"))

    async def rotate_secret(
        self, connection_id: str, endpoint_id: str, grace_seconds: float = 86400
    ) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/endpoints/{quote(endpoint_id, safe='')}/rotate"
        return dict(await self._request("POST", path, json={"grace_seconds": grace_seconds}))

    async def remove_endpoint(self, connection_id: str, endpoint_id: str) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/endpoints/{quote(endpoint_id, safe='')}"
        return dict(await self._request("DELETE", path))

    async def run_action(
        self, connection_id: str, action: str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/actions/{quote(action, safe='')}"
        return dict(await self._request("POST", path, json={"inputs": inputs or {}}))

    async def list_actions(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"{_conn(connection_id)}/actions"))

    def all_actions(self) -> list[Action]:
        """Every twin's workflow actions, for tools named after them (asked once, at start;
        none when the server cannot be reached then)."""
        found: dict[str, Action] = {}
        try:
            with httpx2.Client(headers=self.headers, timeout=self.timeout) as client:
                connections = client.get(self.base + "/connections").raise_for_status().json()
                first = {c["twin"]: c["connection_id"] for c in connections["connections"][::-1]}
                for handle in first.values():
                    listed = client.get(f"{self.base}{_conn(handle)}/actions").raise_for_status()
                    for view in listed.json()["actions"]:
                        found.setdefault(view["name"], _action(view))
        except (httpx2.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("no workflow action tools: cannot list them at %s: %s", self.base, exc)
        return list(found.values())

    async def list_faults(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"{_conn(connection_id)}/faults"))

    async def clear_faults(self, connection_id: str, rule_id: str | None = None) -> dict[str, Any]:
        return dict(
            await self._request(
                "DELETE", f"{_conn(connection_id)}/faults", params=_params(rule_id=rule_id)
            )
        )

    async def list_requests(
        self, connection_id: str, *, limit: int = 20, cursor: str | None = None, **filters: Any
    ) -> dict[str, Any]:
        params = _params(limit=limit, cursor=cursor, **filters)
        return dict(await self._request("GET", f"{_conn(connection_id)}/requests", params=params))

    async def get_request(self, connection_id: str, request_id: str) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/requests/{quote(request_id, safe='')}"
        return dict(await self._request("GET", path))

    async def count_requests(self, connection_id: str, **filters: Any) -> dict[str, Any]:
        return dict(
            await self._request(
                "GET", f"{_conn(connection_id)}/requests/count", params=_params(**filters)
            )
        )

    # -- change feed -------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Like ControlService.subscribe; the admin API has no push channel, so while anyone
        listens this polls the newest journal entries and deliveries of every connection."""
        stop = self._changes.subscribe(listener)
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll())

        def unsubscribe() -> None:
            stop()
            if not self._changes.listening and self._poller is not None:
                self._poller.cancel()
                self._poller = None

        return unsubscribe

    async def _poll(self) -> None:
        seen: dict[tuple[ChangeKind, str, str], Any] | None = None
        while True:
            try:
                now = await self._snapshot()
            except (ApitwinError, httpx2.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.debug("change poll failed: %s", exc)  # unreachable for now: look again
            else:
                if seen is not None:
                    for key, fingerprint in now.items():
                        if seen.get(key, object()) != fingerprint:
                            self._changes.publish(Change(*key))
                seen = now
            await asyncio.sleep(self.poll_interval)

    async def _snapshot(self) -> dict[tuple[ChangeKind, str, str], Any]:
        """(kind, connection, id) -> when it last changed, for the newest entries."""
        found: dict[tuple[ChangeKind, str, str], Any] = {}
        for connection in await self.list_connections():
            handle = connection["connection_id"]
            requests = await self.list_requests(handle, limit=POLL_DEPTH)
            for entry in requests["requests"]:
                found[("request", handle, entry["id"])] = None
            deliveries = await self.list_deliveries(handle, limit=POLL_DEPTH)
            for delivery in deliveries["deliveries"]:
                found[("delivery", handle, delivery["id"])] = delivery.get("updated")
        return found


def _action(view: dict[str, Any]) -> Action:
    inputs = tuple(
        ActionInput(
            name,
            spec.get("type", "string"),
            bool(spec.get("required")),
            spec.get("description", ""),
            tuple(spec.get("enum") or ()),
        )
        for name, spec in view.get("inputs", {}).items()
    )
    return Action(view["name"], view.get("description", ""), inputs)


def _params(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _conn(connection_id: str) -> str:
    return f"/connections/{quote(connection_id, safe=':')}"


def _records(connection_id: str, resource: str) -> str:
    return f"{_conn(connection_id)}/records/{quote(resource, safe='')}"


def _detail(response: httpx2.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])
    return f"HTTP {response.status_code}"
