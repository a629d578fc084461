"""Swagger 2.0 into the model: body/formData parameters become bodies, consumes/produces media."""

from __future__ import annotations

from typing import Any, Literal, cast

from apitwin.spec.loader import (
    Collector,
    base_path_of,
    methods_of,
    path_items,
    template_names,
    unique_operation_id,
)
from apitwin.spec.model import (
    Body,
    Example,
    Header,
    MediaType,
    OAuthFlow,
    Operation,
    Parameter,
    ParamLocation,
    Response,
    Schema,
    SecurityRequirement,
    SecurityScheme,
    Spec,
)
from apitwin.spec.refs import Located
from apitwin.spec.schemas import SchemaCompiler

# Keywords a non-body parameter, header or `items` shares with JSON Schema.
_SIMPLE_KEYS = (
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
    "x-nullable",
)
_STYLES = {
    "csv": ("form", False),
    "ssv": ("spaceDelimited", False),
    "pipes": ("pipeDelimited", False),
    "tsv": ("form", False),
    "multi": ("form", True),
}
_FLOWS = {
    "application": "clientCredentials",
    "accessCode": "authorizationCode",
    "implicit": "implicit",
    "password": "password",
}


def simple_schema(raw: dict[str, Any]) -> dict[str, Any]:
    schema = {k: raw[k] for k in _SIMPLE_KEYS if k in raw}
    if isinstance(raw.get("items"), dict):
        schema["items"] = simple_schema(raw["items"])
    return schema


class _Builder:
    def __init__(self, root: Located, collector: Collector) -> None:
        self.root = root
        self.c = collector
        self.compiler = SchemaCompiler(collector.registry, "2.0")
        self.op_ids: set[str] = set()
        self.consumes = _strings(root.value.get("consumes")) or ["application/json"]
        self.produces = _strings(root.value.get("produces")) or ["application/json"]
        self.default_security = self.security(root.value.get("security"))

    def schema(self, node: Located, raw: Any, direction: str) -> Schema:
        return Schema(self.compiler, f"{node.uri}#{node.pointer}", raw, direction)  # type: ignore[arg-type]

    def security(self, raw: Any) -> tuple[SecurityRequirement, ...]:
        if not isinstance(raw, list):
            return ()
        return tuple(
            {str(k): tuple(map(str, v or ())) for k, v in entry.items()}
            for entry in raw
            if isinstance(entry, dict)
        )

    def raw_parameters(self, item: Located, op: Located) -> list[Located]:
        merged: dict[tuple[str, str], Located] = {}
        for owner in (item, op):
            raw = owner.value.get("parameters")
            for i in range(len(raw) if isinstance(raw, list) else 0):
                node = self.c.follow(owner.child("parameters", i))
                if node is None or not isinstance(node.value, dict):
                    continue
                name, location = node.value.get("name"), node.value.get("in")
                if not isinstance(name, str) or location not in (
                    "path",
                    "query",
                    "header",
                    "body",
                    "formData",
                ):
                    self.c.problem(node, "a parameter needs a 'name' and a valid 'in'")
                    continue
                merged[(name, location)] = node
        return list(merged.values())

    def parameter(self, node: Located) -> Parameter:
        raw = node.value
        location = raw["in"]
        fmt = raw.get("collectionFormat", "csv")
        style, explode = _STYLES.get(fmt, ("form", False))
        if location in ("path", "header"):
            style, explode = "simple", False
        return Parameter(
            name=raw["name"],
            location=cast(ParamLocation, location),
            required=bool(raw.get("required")) or location == "path",
            schema=self.schema(node, simple_schema(raw), "request"),
            style=style,
            explode=explode,
            allow_empty_value=bool(raw.get("allowEmptyValue")),
        )

    def body(self, params: list[Located], consumes: list[str]) -> Body | None:
        body = [p for p in params if p.value["in"] == "body"]
        if body:
            node = body[0]
            schema = self.schema(node.child("schema"), node.value.get("schema", {}), "request")
            media = {m: MediaType(m, schema) for m in consumes}
            return Body(
                bool(node.value.get("required")), media, str(node.value.get("description") or "")
            )
        form = [p for p in params if p.value["in"] == "formData"]
        if not form:
            return None
        properties = {p.value["name"]: simple_schema(p.value) for p in form}
        required = [p.value["name"] for p in form if p.value.get("required")]
        schema_raw: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            schema_raw["required"] = required
        has_file = any(p.value.get("type") == "file" for p in form)
        types = [m for m in consumes if "form" in m] or (
            ["multipart/form-data"] if has_file else ["application/x-www-form-urlencoded"]
        )
        schema = self.schema(form[0], schema_raw, "request")
        return Body(bool(required), {m: MediaType(m, schema) for m in types})

    def responses(self, op: Located, produces: list[str]) -> dict[str, Response]:
        raw = op.value.get("responses")
        if not isinstance(raw, dict) or not raw:
            self.c.warn(op, "operation declares no responses; it answers 204")
            return {}
        result = {}
        for status in raw:
            node = self.c.follow(op.child("responses", status))
            if node is None or not isinstance(node.value, dict):
                continue
            value = node.value
            media: dict[str, MediaType] = {}
            raw_examples = value.get("examples")
            examples: dict[str, Any] = raw_examples if isinstance(raw_examples, dict) else {}
            # Swagger 2.0 responses carry `produces` media types even without a schema.
            schema = (
                self.schema(node.child("schema"), value["schema"], "response")
                if "schema" in value
                else None
            )
            for m in produces:
                found = (Example("default", examples[m]),) if m in examples else ()
                media[m] = MediaType(m, schema, found)
            headers = {
                str(name): Header(
                    str(name),
                    False,
                    self.schema(node.child("headers", name), simple_schema(h), "response"),
                )
                for name, h in (value.get("headers") or {}).items()
                if isinstance(h, dict)
            }
            key = "default" if str(status) == "default" else str(status).upper()
            result[key] = Response(key, str(value.get("description") or ""), headers, media)
        return result

    def operation(self, path: str, method: str, item: Located) -> Operation:
        op = item.child(method)
        raw = op.value
        params = self.raw_parameters(item, op)
        consumes = _strings(raw.get("consumes")) or self.consumes
        produces = _strings(raw.get("produces")) or self.produces
        plain = tuple(
            self.parameter(p) for p in params if p.value["in"] not in ("body", "formData")
        )
        declared = {p.name for p in plain if p.location == "path"}
        for name in template_names(path):
            if name not in declared:
                self.c.warn(op, f"path parameter {name!r} is not declared; treated as a string")
        return Operation(
            method=method,
            path=path,
            operation_id=unique_operation_id(
                raw.get("operationId"), method, path, self.op_ids, op, self.c
            ),
            summary=str(raw.get("summary") or ""),
            tags=tuple(str(t) for t in raw.get("tags") or ()),
            parameters=plain,
            body=self.body(params, consumes),
            responses=self.responses(op, produces),
            security=self.security(raw["security"]) if "security" in raw else self.default_security,
            deprecated=bool(raw.get("deprecated")),
            location=f"{op.uri}#{op.pointer}",
        )

    def security_schemes(self) -> dict[str, SecurityScheme]:
        raw = self.root.value.get("securityDefinitions")
        result: dict[str, SecurityScheme] = {}
        for name, value in (raw or {}).items() if isinstance(raw, dict) else ():
            if not isinstance(value, dict):
                continue
            kind = value.get("type")
            if kind == "basic":
                result[name] = SecurityScheme(name, "http", scheme="basic")
            elif kind == "apiKey":
                location: Literal["query", "header"] = (
                    "query" if value.get("in") == "query" else "header"
                )
                result[name] = SecurityScheme(
                    name, "apiKey", location=location, param_name=str(value.get("name") or name)
                )
            elif kind == "oauth2":
                flow = OAuthFlow(
                    kind=_FLOWS.get(str(value.get("flow")), str(value.get("flow"))),
                    token_url=value.get("tokenUrl"),
                    authorization_url=value.get("authorizationUrl"),
                    scopes=dict(value.get("scopes") or {}),
                )
                result[name] = SecurityScheme(name, "oauth2", flows=(flow,))
        return result

    def build(self) -> Spec:
        doc = self.root.value
        operations = [
            self.operation(path, method, item)
            for path, item in path_items(self.root, self.c)
            for method in methods_of(item)
        ]
        info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
        base = base_path_of(str(doc.get("basePath") or ""))
        host = doc.get("host")
        schemes = _strings(doc.get("schemes")) or ["http"]
        servers = tuple(f"{s}://{host}{base}" for s in schemes) if host else ((base or "/"),)
        tags = [t["name"] for t in doc.get("tags") or () if isinstance(t, dict) and "name" in t]
        return Spec(
            title=str(info.get("title") or "Untitled API"),
            version=str(info.get("version") or ""),
            openapi=str(doc["swagger"]),
            base_path=base,
            servers=servers,
            operations=tuple(operations),
            security_schemes=self.security_schemes(),
            webhooks=(),
            tags=tuple(map(str, tags)),
            source=self.root.uri,
            warnings=tuple(self.c.warnings),
            description=str(info.get("description") or ""),
        )


def _strings(raw: Any) -> list[str]:
    return [str(x) for x in raw] if isinstance(raw, list) else []


def build(root: Located, collector: Collector) -> Spec:
    return _Builder(root, collector).build()
