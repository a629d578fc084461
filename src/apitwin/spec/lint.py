"""Deeper checks for `apitwin check`: things that do not stop serving but deserve a warning.

*Contradictions* are places where no response can satisfy the spec (a discriminator whose implied
values its own branches forbid, ...): the twin still answers, and conformance tests skip them
visibly, naming the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from apitwin.spec.model import MediaType, Operation, Schema, Spec

KNOWN_FORMATS = {
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uri-template",
    "uuid",
    "json-pointer",
    "relative-json-pointer",
    "regex",
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "binary",
    "password",
    "decimal",
    "base64",
    "url",
    "phone",
    "guid",
    "unix-time",
    "timestamp",
}


@dataclass(frozen=True, slots=True)
class Finding:
    operation: str  # operationId, or "" for the document
    where: str
    reason: str
    contradiction: bool = False

    def __str__(self) -> str:
        prefix = f"{self.operation}: " if self.operation else ""
        return f"{prefix}{self.where}: {self.reason}"


def lint(spec: Spec) -> list[Finding]:
    findings: list[Finding] = []
    for op in spec.operations:
        for where, media in _response_media(op):
            findings.extend(_check_media(op, where, media))
        for alternative in op.security:
            for name in alternative:
                if name not in spec.security_schemes:
                    findings.append(
                        Finding(
                            op.operation_id, "security", f"uses undeclared security scheme {name!r}"
                        )
                    )
    return _unique(findings)


def contradictions(spec: Spec) -> dict[str, str]:
    """operationId -> reason, for operations no response can conform to."""
    found: dict[str, str] = {}
    for finding in lint(spec):
        if finding.contradiction:
            found.setdefault(finding.operation, finding.reason)
    return found


def _response_media(op: Operation) -> Iterator[tuple[str, MediaType]]:
    for status, response in op.responses.items():
        for name, media in response.media.items():
            yield f"responses/{status}/{name}", media


def _check_media(op: Operation, where: str, media: MediaType) -> list[Finding]:
    if media.schema is None:
        return []
    findings = [
        Finding(op.operation_id, where, reason, True)
        for reason in _discriminator_conflicts(media.schema)
    ]
    findings += [
        Finding(op.operation_id, where, f"unknown format {fmt!r} (not checked)")
        for fmt in sorted(_formats(media.schema.json) - KNOWN_FORMATS)
    ]
    if media.is_json:
        validator = jsonschema_rs.Draft202012Validator(
            media.schema.json, validate_formats=True, ignore_unknown_formats=True
        )
        for example in media.examples:
            error = next(iter(validator.iter_errors(example.value)), None)
            if error is not None:
                findings.append(
                    Finding(
                        op.operation_id,
                        where,
                        f"example {example.name!r} violates its schema "
                        f"({error.message}); generated data is served instead",
                    )
                )
    return findings


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, dict):
            yield current
            stack.extend(
                v
                for k, v in current.items()
                if k not in ("enum", "const", "example", "examples", "default")
            )
        elif isinstance(current, list):
            stack.extend(current)


def _formats(root: dict[str, Any]) -> set[str]:
    return {n["format"] for n in _walk(root) if isinstance(n.get("format"), str)}


def _discriminator_conflicts(schema: Schema) -> list[str]:
    root = schema.json
    defs = root.get("$defs", {})
    reasons = []
    for node in _walk(root):
        disc = node.get("discriminator")
        branches = node.get("oneOf") or node.get("anyOf")
        if not isinstance(disc, dict) or not isinstance(branches, list) or disc.get("mapping"):
            continue
        prop = disc.get("propertyName")
        for branch in branches:
            ref = branch.get("$ref", "") if isinstance(branch, dict) else ""
            name = ref.rsplit("/", 1)[-1]
            allowed = _allowed_values(defs.get(name), prop, defs)
            if allowed is not None and name not in allowed:
                reasons.append(
                    f"discriminator {prop!r} without a mapping implies the value {name!r}, but "
                    f"{name} only allows {sorted(map(str, allowed))}; no response can satisfy both"
                )
    return reasons


def _allowed_values(schema: Any, prop: Any, defs: dict[str, Any]) -> list[Any] | None:
    for node in _walk(schema):
        props = node.get("properties")
        if isinstance(props, dict) and isinstance(props.get(prop), dict):
            target = props[prop]
            ref = target.get("$ref", "")
            if ref.startswith("#/$defs/"):
                target = defs.get(ref[len("#/$defs/") :], {})
            if "const" in target:
                return [target["const"]]
            if isinstance(target.get("enum"), list):
                return list(target["enum"])
    return None


def _unique(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))
