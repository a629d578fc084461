"""`apitwin.yaml`: read once at the edge, validated against a published JSON Schema, typed after.

Errors name the file, line and field. `${VAR}` in any string is replaced by that environment
variable (a missing variable is an error), so secrets stay out of the file.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema_rs
import yaml

from apitwin.errors import ConfigError
from apitwin.schemanav import json_type
from apitwin.spec.refs import BoundedMerges, SpecLimits, check_shape

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[a-z][a-z0-9-]{0,39}$"
# Values of these fields never appear in error messages.
_SECRET_FIELDS = ("client_secret", "api_key", "admin_token")


def schema_text() -> str:
    """The published JSON Schema of `apitwin.yaml`, exactly as shipped in the package."""
    return (resources.files("apitwin") / "schema" / "apitwin.schema.json").read_text("utf-8")


# The JSON file is the one source of truth: the loader, the reference docs and editors read it.
SCHEMA: dict[str, Any] = json.loads(schema_text())


@functools.cache
def _validator() -> Any:
    return jsonschema_rs.Draft202012Validator(SCHEMA)


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
class Limits:
    """What one server accepts before it refuses clearly (docs/limits.md lists each answer)."""

    request_body_bytes: int = 10 * 1024 * 1024  # larger request bodies get 413
    request_header_bytes: int = 64 * 1024  # request line and headers; beyond: 431
    journal_entries: int = 1000  # per connection; the oldest go first
    journal_body_bytes: int = 16 * 1024  # of each request and response body kept in the journal
    pending_deliveries: int = 10_000  # per connection; further events are refused (429)
    connections: int = 1000  # per twin; connect() beyond it is refused (429)
    fault_rules: int = 100  # per connection, active or spent (spent go first); beyond: 429
    deliveries_kept: int = 10_000  # finished deliveries and messages per connection; oldest go
    spec_bytes: int = 64 * 1024 * 1024  # each spec file; larger ones are refused


@dataclass(frozen=True, slots=True)
class Settings:
    twins: tuple[TwinConfig, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    db: str = ":memory:"
    admin_token: str | None = None
    source: Path | None = None
    limits: Limits = field(default_factory=Limits)


# apitwin.yaml is small: fixtures, corrections and connections.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
CONFIG_LIMITS = SpecLimits(max_bytes=MAX_CONFIG_BYTES, max_nesting=64, max_alias_expansion=100_000)


def _read_text(path: Path) -> str:
    if path.exists() and not path.is_file():  # a FIFO would block, a device never end
        raise ConfigError(f"{path}: not a regular file")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than the {MAX_CONFIG_BYTES // (1024 * 1024)} MiB limit")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}"
        ) from None


class _Loader(BoundedMerges, yaml.SafeLoader):
    """Safe YAML that keeps dates as written: JSON (and so the schema and fixtures) has none."""

    merge_budget = CONFIG_LIMITS.max_alias_expansion


def _timestamp_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_text)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Settings:
    path = Path(path)
    text = _read_text(path)
    try:
        node = yaml.compose(text, Loader=_Loader)
        raw = yaml.load(text, Loader=_Loader)
        # Before anything walks the document: refuse alias bombs and runaway nesting.
        check_shape(raw, CONFIG_LIMITS)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except RecursionError:
        limit = CONFIG_LIMITS.max_nesting
        raise ConfigError(f"{path}: the file nests deeper than {limit} levels") from None
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; it needs at least 'twins'")
    # Variables first, so values (secrets' lengths, say) are checked as they will be used.
    missing: list[tuple[list[Any], str]] = []
    raw = _expand(raw, os.environ if env is None else env, [], missing)
    unset = [pointer for pointer, _ in missing]
    problems = {_problem(path, node, pointer, text) for pointer, text in missing}
    problems |= set(_duplicate_keys(node, path))
    problems |= {
        _problem(path, node, pointer, text, key=at_key)
        for pointer, text, at_key in _schema_errors(raw)
        if pointer not in unset
    }
    if problems:
        count = f"{len(problems)} problems" if len(problems) > 1 else "1 problem"
        lines = "\n".join(f"  {text}" for _, _, text in sorted(problems))
        raise ConfigError(f"invalid configuration ({count}):\n{lines}")
    return _settings(raw, path, node)


# -- errors that name the line and the field -------------------------------------------------


def _where(path: Path, node: yaml.Node | None, pointer: list[Any], *, key: bool = False) -> str:
    """`file:line:column: field.path` for a JSON pointer into the document."""
    mark = _mark_of(node, pointer, key=key)
    position = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
    return f"{path}{position}: {_field_path(pointer)}"


def _field_path(pointer: list[Any]) -> str:
    text = ""
    for part in pointer:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _mark_of(node: yaml.Node | None, pointer: list[Any], *, key: bool = False) -> Any:
    """Where the value at ``pointer`` starts (or its key, with ``key``); the nearest parent else."""
    current = node
    mark = node.start_mark if node is not None else None
    for part in pointer:
        if isinstance(current, yaml.MappingNode):
            pair = next(((k, v) for k, v in current.value if k.value == str(part)), None)
            if pair is None:
                break
            mark = pair[0].start_mark if key else pair[1].start_mark
            current = pair[1]
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                break
            current = current.value[part]
            mark = current.start_mark
        else:
            break
    return mark


def _problem(
    path: Path, node: yaml.Node | None, pointer: list[Any], message: str, *, key: bool = False
) -> tuple[int, int, str]:
    """(line, column, message) for a problem with the value (or key) at ``pointer``."""
    mark = _mark_of(node, pointer, key=key)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return line, column, f"{path}:{line}:{column}: {_field_path(pointer)}: {message}"


def _duplicate_keys(node: yaml.Node | None, path: Path) -> list[tuple[int, int, str]]:
    """YAML keeps the last of repeated keys silently; a repeated key is almost always a mistake."""
    problems = []
    stack: list[tuple[yaml.Node | None, list[Any]]] = [(node, [])]
    visited: set[int] = set()
    while stack:
        current, pointer = stack.pop()
        # An alias is its anchor's node again: visited once, or shared nodes (merge keys of
        # merge keys) would be walked once per path to them, exponentially many.
        if id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in current.value:
                name = str(key.value)
                if name in seen:
                    # The position is this key's own: a lookup by name would find the first.
                    line, column = key.start_mark.line + 1, key.start_mark.column + 1
                    field_path = _field_path([*pointer, name])
                    text = f"repeated key (first given on line {seen[name]})"
                    problems.append((line, column, f"{path}:{line}:{column}: {field_path}: {text}"))
                else:
                    seen[name] = key.start_mark.line + 1
                stack.append((value, [*pointer, name]))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, [*pointer, i]) for i, item in enumerate(current.value))
    return problems


def _schema_errors(raw: Any) -> list[tuple[list[Any], str, bool]]:
    try:
        return [found for error in _validator().iter_errors(raw) for found in _explain(error)]
    except ValueError as exc:  # a YAML-only value (!!binary, !!set) that JSON cannot hold
        return [([], f"holds a value JSON cannot hold: {exc}", False)]


def _explain(error: Any) -> list[tuple[list[Any], str, bool]]:
    """(pointer, what was expected, whether to point at the key) for one schema violation."""
    pointer = list(error.instance_path)
    kind = error.kind
    name = getattr(kind, "name", "")
    value = error.instance
    if name == "additionalProperties":
        known = sorted(_properties_at(pointer))
        result = []
        for unexpected in kind.unexpected:
            close = difflib.get_close_matches(str(unexpected), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(known)}"
            result.append(([*pointer, unexpected], f"unknown field; {hint}", True))
        return result
    if name == "propertyNames":
        inner = kind.as_dict().get("error")
        key = inner.instance if inner is not None else None
        pattern = _schema_at(pointer) or {}
        expected = (pattern.get("propertyNames") or {}).get("pattern", "a different name")
        where = pointer if key is None else [*pointer, key]
        return [(where, f"names here must match {expected}", key is not None)]
    if name == "required":
        return [(pointer, f"missing required field {kind.property!r}", False)]
    if name == "anyOf":
        # Report the branch that got furthest into the value: its error is the specific one.
        branches = [list(branch) for branch in kind.context]
        best = max(branches, key=lambda errs: max(len(list(e.instance_path)) for e in errs))
        if any(len(list(e.instance_path)) > len(pointer) for e in best):
            return [item for sub in best for item in _explain(sub)]
        return [(pointer, f"{_described(pointer)}; got {_shown(value, pointer)}", False)]
    return [(pointer, _expected(name, kind, value, pointer, error.message), False)]


def _expected(name: str, kind: Any, value: Any, pointer: list[Any], message: str) -> str:
    got = _shown(value, pointer)
    if name == "type":
        wanted = " or ".join(_a(t) for t in sorted(kind.types, key=lambda t: t == "null"))
        given = _a(json_type(value)) + ("" if value is None else f" ({got})")
        return f"expected {wanted}, got {given}"
    if name == "enum":
        options = [str(o) for o in kind.options]
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"expected one of: {', '.join(options)}; got {got}{hint}"
    if name == "pattern":
        return f"{_described(pointer)}; got {got}"
    limit = kind.as_dict().get("limit") if hasattr(kind, "as_dict") else None
    bounds = {
        "minLength": f"at least {limit} characters",
        "maxLength": f"at most {limit} characters",
        "minItems": f"at least {limit} item(s)",
        "maxItems": f"at most {limit} item(s)",
        "minimum": f"a number >= {limit}",
        "maximum": f"a number <= {limit}",
        "exclusiveMinimum": f"a number > {limit}",
        "exclusiveMaximum": f"a number < {limit}",
    }
    if name in bounds and limit is not None:
        return f"expected {bounds[name]}, got {got}"
    return message


def _described(pointer: list[Any]) -> str:
    schema = _schema_at(pointer)
    if schema is None:
        return "not valid here"
    if "pattern" in schema:
        return f"expected text matching {schema['pattern']}"
    about = schema.get("description") or "a different value"
    return "expected " + about[:1].lower() + about[1:].rstrip(".")


def _shown(value: Any, pointer: list[Any]) -> str:
    if _secret(pointer):
        return "(value hidden)"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _secret(pointer: list[Any]) -> bool:
    return any(str(part) in _SECRET_FIELDS for part in pointer)


def _a(kind: str) -> str:
    return {
        "object": "a mapping",
        "array": "a list",
        "string": "a string",
        "integer": "an integer",
        "number": "a number",
        "boolean": "true or false",
        "null": "nothing (null)",
    }.get(kind, kind)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target: dict[str, Any] = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
        return target
    return schema


def _schema_at(pointer: list[Any]) -> dict[str, Any] | None:
    """The schema that applies to the value at ``pointer`` (following properties and items)."""
    schema: dict[str, Any] | None = SCHEMA
    for part in pointer:
        if schema is None:
            return None
        schema = _resolve(schema)
        if isinstance(part, int):
            items = schema.get("items")
            schema = items if isinstance(items, dict) else None
        else:
            props = schema.get("properties") or {}
            extra = schema.get("additionalProperties")
            schema = props.get(part) or (extra if isinstance(extra, dict) else None)
    return _resolve(schema) if schema is not None else None


def _properties_at(pointer: list[Any]) -> list[str]:
    schema = _schema_at(pointer)
    return list((schema or {}).get("properties") or {})


def _expand(value: Any, env: Mapping[str, str], pointer: list[Any], missing: list[Any]) -> Any:
    """Replace `${VAR}`s; each variable that is not set is added to ``missing``."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(
                    (pointer, f"environment variable {name} is not set (used as ${{{name}}})")
                )
                return match.group(0)
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [_expand(v, env, [*pointer, i], missing) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, env, [*pointer, k], missing) for k, v in value.items()}
    return value


def _unique(items: list[Any]) -> list[Any]:
    return [item for i, item in enumerate(items) if item not in items[:i]]


def _settings(raw: dict[str, Any], path: Path, node: yaml.Node | None = None) -> Settings:
    base = path.resolve().parent
    server = raw.get("server") or {}
    twins = tuple(_twin(t, base) for t in raw["twins"])
    names = [t.name for t in twins]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ConfigError(
                f"{_where(path, node, ['twins', index])}: twin name {name!r} is already used by "
                f"twins[{names.index(name)}]; names must be unique",
                field=f"twins[{index}].name",
            )
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
        limits=Limits(**(server.get("limits") or {})),
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
