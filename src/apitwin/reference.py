"""Reference docs generated from the code (CLI, config, admin API, MCP tools), so they cannot drift.

`python -m apitwin.reference docs/` rewrites them; a test checks the committed copies are current.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from apitwin.config import SCHEMA


def cli_reference() -> str:
    from apitwin.cli import _parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; the docs must not vary
    try:
        parser = _parser()
        parts = ["# CLI reference", "", "```text", parser.format_help().rstrip(), "```"]
        subparsers = next(a for a in parser._actions if a.dest == "command")
        for name, sub in subparsers.choices.items():  # type: ignore[union-attr]
            help_text = sub.format_help().rstrip()
            parts += ["", f"## `apitwin {name}`", "", "```text", help_text, "```"]
    finally:
        if saved is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(parts) + "\n"


def config_reference() -> str:
    lines = [
        "# `apitwin.yaml` reference",
        "",
        "Validated at load against the JSON Schema that `apitwin schema` prints; errors name the",
        "file, line, column and field, and what was expected. `${VAR}` in any string reads an",
        "environment variable. For completion and hover docs in editors that use the YAML",
        "language server, save the schema next to the file",
        "(`apitwin schema > apitwin.schema.json`) and start the file with:",
        "",
        "```yaml",
        "# yaml-language-server: $schema=apitwin.schema.json",
        "```",
        "",
    ]
    lines += _fields(SCHEMA, "")
    return "\n".join(lines) + "\n"


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        found: dict[str, Any] = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
        return found
    return schema


def _kind(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "anyOf" in prop:
        return " or ".join(_kind(_resolved(p)) for p in prop["anyOf"])
    kind = prop.get("type", "value")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and isinstance(prop.get("items"), dict):
        inner = _resolved(prop["items"])
        if inner.get("type") in ("string", "number", "integer"):
            return f"list of {inner['type']}s"
        return "list"
    return {"object": "mapping"}.get(str(kind), str(kind))


def _fields(schema: dict[str, Any], prefix: str) -> list[str]:
    lines = []
    required = set(schema.get("required", ()))
    for name, raw in (schema.get("properties") or {}).items():
        prop = _resolved(raw)
        path = f"{prefix}{name}"
        note = " (required)" if name in required else ""
        text = prop.get("description", "")
        if "default" in prop:
            text = f"{text} Default: `{json.dumps(prop['default'])}`."
        lines.append(f"- `{path}` — {_kind(prop)}{note}. {text}".rstrip())
        lines += _nested(prop, path)
    return lines


def _nested(prop: dict[str, Any], path: str) -> list[str]:
    if "properties" in prop:
        return _fields(prop, path + ".")
    extra = prop.get("additionalProperties")
    if isinstance(extra, dict) and "properties" in _resolved(extra):
        return _fields(_resolved(extra), path + ".<name>.")
    items = prop.get("items")
    if isinstance(items, dict) and "properties" in _resolved(items):
        return _fields(_resolved(items), path + "[].")
    return []


def admin_reference() -> str:
    from apitwin.server.admin_api import ENDPOINTS

    lines = [
        "# Admin REST API reference",
        "",
        "Under `/_apitwin/api`; the OpenAPI document is served at `/_apitwin/openapi.json`.",
        "",
        "| method | path | what it does |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {e.method} | `{e.path}` | {e.summary} |" for e in ENDPOINTS]
    return "\n".join(lines) + "\n"


def tools_reference() -> str:
    from apitwin.mcp_tools import build_server

    tools = asyncio.run(build_server(None).list_tools())
    lines = [
        "# MCP tool reference",
        "",
        "Fixed tools (workflow actions from `apitwin.yaml` add tools of their own).",
        "",
    ]
    for tool in tools:
        params = tool.input_schema.get("properties", {})
        required = set(tool.input_schema.get("required", ()))
        lines += [f"## `{tool.name}`", "", (tool.description or "").strip().splitlines()[0], ""]
        for name, prop in params.items():
            mark = " (required)" if name in required else ""
            lines.append(f"- `{name}`{mark}: {prop.get('description', '')}".rstrip())
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


DOCS = {
    "cli.md": cli_reference,
    "config.md": config_reference,
    "admin-api.md": admin_reference,
    "mcp-tools.md": tools_reference,
}


def main(folder: str) -> int:
    for name, build in DOCS.items():
        (Path(folder) / name).write_text(build(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "docs"))
