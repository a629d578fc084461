"""The startup banner: where each twin is served and how to call it."""

from __future__ import annotations

from typing import Any

from apitwin import __version__
from apitwin.config import Settings
from apitwin.server.app import App, db_label


def banner(app: App, settings: Settings) -> str:
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    origin = f"http://{host}:{settings.port}"
    lines = [f"apitwin {__version__}  ·  state: {db_label(settings.db)}"]
    for twin in app.twins:
        spec = twin.spec
        lines.append("")
        lines.append(f"twin {twin.name!r}: {spec.title} {spec.version}".rstrip())
        lines.append(f"  API        {origin}{twin.base_path}  ({len(spec.operations)} operations)")
        for path in sorted(twin.token_paths):
            lines.append(f"  OAuth      POST {origin}{twin.base_path}{path}  (client credentials)")
        for connection in twin.connections.all():
            fresh = connection.client_id in twin.connections.created_now
            shown = connection.public(reveal=fresh)
            lines.append(
                f"  connection {shown['client_id']}: client_secret {shown['client_secret']}  "
                f"api_key {shown['api_key']}"
            )
        first = next((op for op in spec.operations if op.method == "get" and op.security), None)
        first = first or next((op for op in spec.operations if op.method == "get"), None)
        if first is not None:
            default = twin.connections.all()[0]
            auth = f"-H 'Authorization: Bearer {default.api_key}' " if first.security else ""
            if default.client_id in twin.connections.created_now or not first.security:
                lines.append(f"  try        curl {auth}{origin}{twin.base_path}{first.path}")
    lines.append("")
    lines.append(f"MCP          {origin}/mcp")
    # The token itself stays out of the log (logs get collected); the user knows it.
    auth = ' --header "Authorization: Bearer $APITWIN_ADMIN_TOKEN"' if settings.admin_token else ""
    lines.append(f"  claude mcp add --transport http apitwin {origin}/mcp{auth}")
    lines.append(f"admin API    {origin}/_apitwin/api  (OpenAPI: {origin}/_apitwin/openapi.json)")
    lines.append("")
    lines.append("secrets are shown in full only when created; press Ctrl+C to stop")
    return "\n".join(lines)


def banner_fields(app: App, settings: Settings) -> dict[str, Any]:
    """What the banner says, as fields of a JSON log record: like the banner, a connection's
    secrets are shown in full only by the process that created it, and masked otherwise."""
    host = settings.host if settings.host not in ("0.0.0.0", "::") else "127.0.0.1"
    origin = f"http://{host}:{settings.port}"
    return {
        "version": __version__,
        "state": db_label(settings.db),
        "twins": [
            {
                "name": twin.name,
                "title": twin.spec.title,
                "api": f"{origin}{twin.base_path}",
                "operations": len(twin.spec.operations),
                "connections": [
                    _credentials(c.public(reveal=c.client_id in twin.connections.created_now))
                    for c in twin.connections.all()
                ],
            }
            for twin in app.twins
        ],
        "mcp": f"{origin}/mcp",
        "admin_api": f"{origin}/_apitwin/api",
    }


def _credentials(shown: dict[str, Any]) -> dict[str, Any]:
    return {name: shown[name] for name in ("client_id", "client_secret", "api_key")}
