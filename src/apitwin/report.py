"""Human-readable description of what a twin serves (`apitwin check`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from apitwin.spec.lint import lint
from apitwin.spec.model import SecurityScheme, Spec
from apitwin.spec.resources import describe_resources, infer_resources


def describe_spec(
    spec: Spec,
    overrides: Mapping[str, Any] | None = None,
    operations: Mapping[str, Any] | None = None,
) -> str:
    lines = [
        f"{spec.title} {spec.version}".rstrip() + f"  (OpenAPI {spec.openapi})",
        f"base path: {spec.base_path or '/'}",
        f"operations: {len(spec.operations)}",
    ]
    by_tag = Counter(op.tags[0] if op.tags else "(untagged)" for op in spec.operations)
    for tag, count in sorted(by_tag.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {tag}: {count}")
    lines.append(f"security schemes: {len(spec.security_schemes)}")
    for scheme in spec.security_schemes.values():
        lines.append(f"  {scheme.name}: {_scheme_text(scheme)}")
    lines.append(f"webhooks: {len(spec.webhooks)}")
    for hook in spec.webhooks:
        lines.append(f"  {hook.name} ({hook.operation.method.upper()})")
    callbacks = [(op, cb) for op in spec.operations for cb in op.callbacks]
    lines.append(f"callbacks: {len(callbacks)}")
    for op, cb in callbacks:
        lines.append(f"  {op.operation_id} -> {cb.name}: {cb.expression}")
    resources = describe_resources(infer_resources(spec, overrides, operations))
    lines.append(f"resources: {len(resources)}")
    lines.extend(f"  {line}" for line in resources)
    findings = lint(spec)
    lines.append(f"warnings: {len(spec.warnings) + len(findings)}")
    lines.extend(f"  {w}" for w in spec.warnings)
    lines.extend(f"  {f}" + ("  [contradiction]" if f.contradiction else "") for f in findings)
    return "\n".join(lines)


def _scheme_text(scheme: SecurityScheme) -> str:
    if scheme.type == "apiKey":
        return f"API key in {scheme.location} '{scheme.param_name}'"
    if scheme.type == "http":
        return f"HTTP {scheme.scheme}"
    if scheme.type == "oauth2":
        flows = ", ".join(
            f"{f.kind}" + (f" (token URL {f.token_url})" if f.token_url else "")
            for f in scheme.flows
        )
        return f"OAuth 2 {flows}"
    if scheme.type == "openIdConnect":
        return f"OpenID Connect {scheme.openid_url or ''}".rstrip()
    return "mutual TLS (not checked by the twin; terminate TLS in front of it)"
