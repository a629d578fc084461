"""`apitwin init`: a starter apitwin.yaml that shows what the twin inferred from a spec.

The file is meant to be read and corrected: every inferred resource is an explicit entry whose
comment says what was inferred, events and the webhook scheme are spelled out, and the first line
points editors at the configuration's JSON Schema.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from apitwin.config import load_config, twin_for_spec
from apitwin.errors import ConfigError
from apitwin.spec.loader import load_spec
from apitwin.spec.model import Spec
from apitwin.spec.resources import ResourceMap, describe_resources, infer_resources
from apitwin.webhooks.events import EventType, catalogue

SCHEMA_FILE = "apitwin.schema.json"
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SCHEMES = "standard-webhooks, standard-webhooks-v1a, stripe, github, slack, shopify"


@dataclass(frozen=True, slots=True)
class Written:
    path: Path
    twin: str
    client_id: str
    resources: int
    events: int

    @property
    def summary(self) -> str:
        return (
            f"wrote {self.path}: twin {self.twin!r} with {self.resources} resource(s) and "
            f"{self.events} event(s), connection {self.client_id!r}\n"
            f"next: apitwin check --config {self.path}   then   "
            f"apitwin serve --config {self.path}"
        )


def write_config(
    spec_path: Path, output: Path, *, force: bool = False, spec_root: Path | None = None
) -> Written:
    """Writes the starter config; refuses to replace an existing file unless ``force``."""
    if output.exists() and not force:
        raise ConfigError(f"{output} already exists; pass --force to overwrite it")
    if output.is_dir():
        raise ConfigError(f"{output} is a folder; name the file to write")
    spec = load_spec(spec_path, spec_root=spec_root)
    rmap = infer_resources(spec)
    events = catalogue(spec, rmap)
    name = twin_for_spec(spec_path).name
    client_id = f"dev-{secrets.token_hex(3)}"
    text = render(
        spec,
        rmap,
        events,
        name=name,
        spec_ref=_relative(spec_path, output),
        spec_root_ref=_relative(spec_root, output) if spec_root else None,
        client_id=client_id,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with output.open("w" if force else "x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{output} already exists; pass --force to overwrite it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    load_config(output)  # what was written must load; a failure here is a bug worth seeing
    return Written(output, name, client_id, len(rmap.resources), len(events))


def render(
    spec: Spec,
    rmap: ResourceMap,
    events: dict[str, EventType],
    *,
    name: str,
    spec_ref: str,
    spec_root_ref: str | None,
    client_id: str,
) -> str:
    title = f"{spec.title} {spec.version}".strip()
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_FILE}",
        f"# Starter configuration for a twin of {title} (OpenAPI {spec.openapi}), "
        "written by `apitwin init`.",
        f"# Editor completion and checks: apitwin schema > {SCHEMA_FILE}",
        "# Check what the twin serves: apitwin check --config <this file>",
        "# Serve it:                   apitwin serve --config <this file>",
        "server:",
        "  db: apitwin.db                    # ':memory:' keeps nothing between runs",
        "twins:",
        f"  - name: {name}",
        f"    spec: {_scalar(spec_ref)}",
    ]
    if spec_root_ref:
        lines.append(f"    spec_root: {_scalar(spec_root_ref)}")
    lines.append(
        f"    # base_path: {spec.base_path or '/'}            "
        "# served under the spec's first server URL; change it here"
    )
    lines += [
        "    connections:                    # one per integration environment",
        f"      - client_id: {client_id}",
        "        label: local development",
        "        # client_secret and api_key are generated on first start (shown by `serve`),",
        "        # or set them, e.g. client_secret: ${MY_CLIENT_SECRET} from the environment.",
        "        # webhook_url: http://127.0.0.1:9000/webhooks",
        f"        # or run: apitwin listen --server http://127.0.0.1:8000 "
        f"--connection {name}:{client_id}",
        "    webhooks:",
        f"      scheme: standard-webhooks      # how deliveries are signed: {_SCHEMES}",
        "      retry: standard-webhooks       # or stripe, github, or delays in seconds [5, 60]",
    ]
    lines += _events(events)
    lines += _resources(rmap)
    lines += [
        "    # fixtures:                     # records every connection starts with",
        "    #   <resource>: [{field: value}]",
    ]
    return "\n".join(lines) + "\n"


def _events(events: dict[str, EventType]) -> list[str]:
    if not events:
        return [
            "    # events: the spec declares no webhooks or callbacks; declare them here:",
            "    #   order.created: {resource: orders, verb: created, schema: {type: object}}",
        ]
    lines = ["    # Events found in the spec (name: what emits it):"]
    for event in sorted(events.values(), key=lambda e: e.name):
        if event.resource:
            what = f"{event.resource} {event.verb or 'changed'}"
        else:
            what = "not linked to a resource: trigger_event sends it"
        lines.append(f"    #   {event.name} ({event.source}): {what}")
    lines.append(
        "    # Link or add events with events: {name: {resource, verb, schema}}; "
        "emit after requests with rules:"
    )
    return lines


def _resources(rmap: ResourceMap) -> list[str]:
    if not rmap.resources:
        return ["    # resources: none inferred; the twin answers from the spec's examples"]
    lines = [
        "    # Resources inferred from paths and schemas. Correct any of them here: id_field,",
        "    # name, parent_field, envelope, pagination, filters (see docs/config.md).",
    ]
    described = dict(zip(rmap.resources, describe_resources(rmap), strict=True))
    entries: list[str] = []
    for key, resource in rmap.resources.items():
        inferred = described[key].removeprefix(f"{resource.name} (").removesuffix(")")
        if resource.kind == "collection":
            entries.append(f"      {_scalar(key)}: {{id_field: {_scalar(resource.id_field)}}}")
            entries.append(f"        # {inferred}")
        else:
            entries.append(f"      # {_scalar(key)}: {inferred}")
    # Singletons take no id_field: with only those, the mapping stays a comment.
    if any(not entry.lstrip().startswith("#") for entry in entries):
        lines.append("    resources:")
    else:
        lines.append("    # resources:")
    return lines + entries


def _scalar(value: str) -> str:
    """A YAML scalar: plain when that reads back as the same string, else a JSON string."""
    if _PLAIN.match(value) and value.lower() not in {"true", "false", "null", "yes", "no", "on"}:
        return value
    return json.dumps(value)


def _relative(path: Path, output: Path) -> str:
    """``path`` as the config will read it: relative to the config file's folder."""
    try:
        return Path(os.path.relpath(path.resolve(), output.resolve().parent)).as_posix()
    except ValueError:  # another drive on Windows
        return path.resolve().as_posix()
