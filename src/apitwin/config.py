"""`apitwin.yaml`: read once at the edge, validated against a published JSON Schema, typed after.

Errors name the file, line and field. `${VAR}` in any string is replaced by that environment
variable (a missing variable is an error), so secrets stay out of the file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from apitwin.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[a-z][a-z0-9-]{0,39}$"

_FIXTURES = {
    "type": "object",
    "description": "Records to seed, by resource name: a list of objects per resource.",
    "additionalProperties": {"type": "array", "items": {"type": "object"}},
}
_CONNECTION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["client_id"],
    "properties": {
        "client_id": {
            "type": "string",
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
            "description": "Identifies the connection; the OAuth client id.",
        },
        "client_secret": {
            "type": "string",
            "minLength": 8,
            "description": "OAuth client secret (generated when absent).",
        },
        "api_key": {
            "type": "string",
            "minLength": 8,
            "description": "API key / static bearer token (generated when absent).",
        },
        "webhook_url": {
            "type": "string",
            "pattern": "^https?://",
            "description": "Where this connection's webhooks are delivered.",
        },
        "label": {"type": "string"},
        "fixtures": _FIXTURES,
    },
}
_TWIN = {
    "type": "object",
    "additionalProperties": False,
    "required": ["spec"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": _NAME,
            "description": "Short name (lower case); defaults to the spec file's stem.",
        },
        "spec": {
            "type": "string",
            "description": "Path of the OpenAPI file, relative to this file.",
        },
        "spec_root": {
            "type": "string",
            "description": "Folder $refs may read from (default: the spec's folder).",
        },
        "base_path": {
            "type": "string",
            "pattern": "^/",
            "description": "Serve under this path instead of the spec's server URL.",
        },
        "seed": {"type": "integer", "description": "Seed for generated data."},
        "auth": {
            "enum": ["strict", "lenient"],
            "description": "strict: unknown credentials get 401; lenient: they act as the "
            "default connection. Default: strict when connections are listed.",
        },
        "seed_examples": {
            "type": "boolean",
            "description": "Seed each connection from the spec's own examples.",
        },
        "resources": {
            "type": "object",
            "description": "Corrections to inferred resources, by resource name.",
        },
        "operations": {
            "type": "object",
            "description": "operationId -> {resource, role, action} reassignments.",
        },
        "fixtures": _FIXTURES,
        "connections": {"type": "array", "items": _CONNECTION},
        "events": {
            "type": "object",
            "description": "Events the spec does not declare, or corrections: name -> "
            "{schema, resource, verb}.",
        },
        "webhooks": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "scheme": {
                    "enum": [
                        "standard-webhooks",
                        "standard-webhooks-v1a",
                        "stripe",
                        "github",
                        "slack",
                        "shopify",
                    ],
                    "description": "How deliveries are signed (default standard-webhooks).",
                },
                "retry": {
                    "description": "Preset (standard-webhooks, stripe, github) or delays in s.",
                    "anyOf": [
                        {"enum": ["standard-webhooks", "stripe", "github"]},
                        {"type": "array", "items": {"type": "number", "minimum": 0}},
                    ],
                },
                "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 300},
                "allow": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Networks (CIDR) targets may resolve to; default loopback.",
                },
                "failing_after": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Consecutive failures before an endpoint is failing (5).",
                },
                "disable_after": {
                    "type": "number",
                    "minimum": 0,
                    "description": "Seconds failing before it is disabled (432000, 5 days).",
                },
                "emit_on_change": {
                    "type": "boolean",
                    "description": "Record changes emit their linked events (default true).",
                },
            },
        },
        "actions": {
            "type": "object",
            "description": "Workflow actions (become MCP tools): name -> {description, inputs, "
            "steps: [create|update|action|delete|emit]}.",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["steps"],
                "properties": {
                    "description": {"type": "string"},
                    "inputs": {"type": "object"},
                    "steps": {"type": "array", "items": {"type": "object"}, "minItems": 1},
                },
            },
        },
        "rules": {
            "type": "array",
            "description": "Events emitted after inbound requests.",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["after", "emit"],
                "properties": {
                    "after": {"type": "string", "description": "operationId"},
                    "emit": {"type": "string", "description": "event name"},
                    "status": {"type": "array", "items": {"type": "integer"}},
                    "delay": {
                        "type": "number",
                        "minimum": 0,
                        "description": "seconds on the twin's clock",
                    },
                },
            },
        },
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "apitwin configuration (apitwin.yaml)",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "server": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "host": {"type": "string"},
                "port": {"type": "integer", "minimum": 0, "maximum": 65535},
                "db": {
                    "type": "string",
                    "description": "SQLite file, or ':memory:' to keep nothing.",
                },
                "admin_token": {"type": "string", "minLength": 16},
            },
        },
        "twins": {"type": "array", "minItems": 1, "items": _TWIN},
    },
    "required": ["twins"],
}


@dataclass(frozen=True, slots=True)
class ConnectionConfig:
    client_id: str
    client_secret: str | None = None
    api_key: str | None = None
    webhook_url: str | None = None
    label: str = ""
    fixtures: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    scheme: str = "standard-webhooks"
    retry: str | tuple[float, ...] = "standard-webhooks"
    timeout: float = 15.0
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    emit_on_change: bool = True
    failing_after: int = 5
    disable_after: float = 5 * 86400.0


@dataclass(frozen=True, slots=True)
class Rule:
    """Emit ``emit`` after a request to ``after`` (an operationId) answered one of ``status``."""

    after: str
    emit: str
    status: tuple[int, ...] = ()
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class TwinConfig:
    name: str
    spec: Path
    spec_root: Path | None = None
    base_path: str | None = None
    seed: int = 0
    auth: str | None = None
    seed_examples: bool = False
    resources: Mapping[str, Any] = field(default_factory=dict)
    operations: Mapping[str, Any] = field(default_factory=dict)
    fixtures: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    connections: tuple[ConnectionConfig, ...] = ()
    events: Mapping[str, Any] = field(default_factory=dict)
    webhooks: WebhookConfig = field(default_factory=lambda: WebhookConfig())
    rules: tuple[Rule, ...] = ()
    actions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def strict_auth(self) -> bool:
        return self.auth != "lenient"


@dataclass(frozen=True, slots=True)
class Settings:
    twins: tuple[TwinConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = ":memory:"
    admin_token: str | None = None
    source: Path | None = None


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least 'twins'")
    errors = _schema_errors(raw, node, path)
    if errors:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {e}" for e in errors))
    raw = _expand(raw, os.environ if env is None else env, path)
    return _settings(raw, path)


def _schema_errors(raw: Any, node: yaml.Node | None, path: Path) -> list[str]:
    validator = jsonschema_rs.Draft202012Validator(SCHEMA)
    messages = []
    for error in validator.iter_errors(raw):
        pointer = list(error.instance_path)
        field_name = ".".join(str(p) for p in pointer) or "(top level)"
        line = _line_of(node, pointer)
        messages.append(f"{path}:{line}: {field_name}: {error.message}")
    return sorted(set(messages), key=lambda m: int(m.split(":")[1]))


def _line_of(node: yaml.Node | None, pointer: list[Any]) -> int:
    current = node
    for part in pointer:
        if isinstance(current, yaml.MappingNode):
            current = next((v for k, v in current.value if k.value == str(part)), current)
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            current = current.value[part] if part < len(current.value) else current
    return current.start_mark.line + 1 if current is not None else 1


def _expand(value: Any, env: Mapping[str, str], path: Path) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{path}: environment variable {name} is not set (used as ${{{name}}})"
                )
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [_expand(v, env, path) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env, path) for k, v in value.items()}
    return value


def _settings(raw: dict[str, Any], path: Path) -> Settings:
    base = path.resolve().parent
    server = raw.get("server") or {}
    twins = tuple(_twin(t, base) for t in raw["twins"])
    names = [t.name for t in twins]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: twin names must be unique; repeated: {', '.join(duplicates)}")
    db = server.get("db", ":memory:")
    if db not in (":memory:",) and "://" not in db:
        db = str((base / db).resolve())
    return Settings(
        twins=twins,
        host=server.get("host", "127.0.0.1"),
        port=server.get("port", 8000),
        db=db,
        admin_token=server.get("admin_token"),
        source=path,
    )


def _twin(raw: dict[str, Any], base: Path) -> TwinConfig:
    spec = (base / raw["spec"]).resolve()
    name = raw.get("name") or re.sub(r"[^a-z0-9-]+", "-", spec.stem.lower()).strip("-")[:40]
    return TwinConfig(
        name=name or "twin",
        spec=spec,
        spec_root=(base / raw["spec_root"]).resolve() if raw.get("spec_root") else None,
        base_path=raw.get("base_path"),
        seed=raw.get("seed", 0),
        auth=raw.get("auth"),
        seed_examples=raw.get("seed_examples", False),
        resources=raw.get("resources") or {},
        operations=raw.get("operations") or {},
        fixtures=raw.get("fixtures") or {},
        connections=tuple(ConnectionConfig(**c) for c in raw.get("connections") or ()),
        events=raw.get("events") or {},
        webhooks=_webhooks(raw.get("webhooks") or {}),
        actions=raw.get("actions") or {},
        rules=tuple(
            Rule(r["after"], r["emit"], tuple(r.get("status", ())), float(r.get("delay", 0)))
            for r in raw.get("rules") or ()
        ),
    )


def _webhooks(raw: dict[str, Any]) -> WebhookConfig:
    retry = raw.get("retry", "standard-webhooks")
    return WebhookConfig(
        scheme=raw.get("scheme", "standard-webhooks"),
        retry=tuple(retry) if isinstance(retry, list) else retry,
        timeout=float(raw.get("timeout", 15.0)),
        allow=tuple(raw.get("allow", ("127.0.0.0/8", "::1/128"))),
        emit_on_change=raw.get("emit_on_change", True),
        failing_after=int(raw.get("failing_after", 5)),
        disable_after=float(raw.get("disable_after", 5 * 86400.0)),
    )


def twin_for_spec(spec: Path, name: str | None = None, **options: Any) -> TwinConfig:
    """A zero-config twin of one spec file (what `apitwin serve SPEC` uses)."""
    if name is None:
        name = re.sub(r"[^a-z0-9-]+", "-", spec.stem.lower()).strip("-")[:40] or "twin"
        if not re.match(_NAME, name):
            name = "twin-" + name[:34]
    return TwinConfig(name=name, spec=spec.resolve(), **options)
