"""RemoteControl: the control-service interface, over another server's admin REST API."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2

from apitwin.errors import ApitwinError, ConfigError, InvalidInputError, NotFoundError

_ERRORS: dict[int, type[ApitwinError]] = {
    400: InvalidInputError,
    404: NotFoundError,
    409: ConfigError,
}


class RemoteControl:
    def __init__(self, server_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base = server_url.rstrip("/") + "/_apitwin/api"
        self.client = httpx2.AsyncClient(headers=headers, timeout=timeout)

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

    async def run_action(
        self, connection_id: str, action: str, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = f"{_conn(connection_id)}/actions/{quote(action, safe='')}"
        return dict(await self._request("POST", path, json={"inputs": inputs or {}}))

    async def list_actions(self, connection_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"{_conn(connection_id)}/actions"))

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
