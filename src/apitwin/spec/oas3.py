"""OpenAPI 3.0 / 3.1 (and 3.2 documents that stay 3.1-compatible) into the model."""

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
    Callback,
    Direction,
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
    Webhook,
)
from apitwin.spec.refs import Located
from apitwin.spec.schemas import SchemaCompiler

_LOCATIONS = ("path", "query", "header", "cookie")


class _Builder:
    def __init__(self, root: Located, collector: Collector) -> None:
        self.root = root
        self.c = collector
        version = str(root.value["openapi"])
        self.compiler = SchemaCompiler(
            collector.registry, "3.0" if version.startswith("3.0") else "3.1"
        )
        self.op_ids: set[str] = set()
        self._parameters: dict[str, Parameter | None] = {}
        self._responses: dict[tuple[str, str], Response] = {}
        root_security = root.value.get("security")
        self.default_security = self.security(root.child("security")) if root_security else ()

    # -- schemas, examples, media -------------------------------------------------------------

    def schema(self, node: Located, direction: Direction) -> Schema | None:
        if node.value is None:
            return None
        if not isinstance(node.value, (dict, bool)):
            self.c.problem(node, "a schema must be a mapping or a boolean")
            return None
        return Schema(self.compiler, f"{node.uri}#{node.pointer}", node.value, direction)

    def examples(self, node: Located) -> tuple[Example, ...]:
        raw = node.value
        found: list[Example] = []
        if "example" in raw:
            found.append(Example("default", raw["example"]))
        examples = raw.get("examples")
        if isinstance(examples, dict):
            for name in examples:
                example = self.c.follow(node.child("examples", name))
                if example is None or not isinstance(example.value, dict):
                    continue
                if "value" in example.value:
                    summary = str(example.value.get("summary") or "")
                    found.append(Example(str(name), example.value["value"], summary))
                elif "externalValue" in example.value:
                    self.c.warn(example, "externalValue examples are not fetched")
        return tuple(found)

    def media(self, node: Located, direction: Direction) -> dict[str, MediaType]:
        content = node.value.get("content")
        if not isinstance(content, dict):
            return {}
        result = {}
        for name, value in content.items():
            child = node.child("content", name)
            if not isinstance(value, dict):
                self.c.problem(child, "a media type object must be a mapping")
                continue
            schema = self.schema(child.child("schema"), direction) if "schema" in value else None
            result[str(name)] = MediaType(str(name), schema, self.examples(child))
        return result

    # -- operation parts ----------------------------------------------------------------------

    def parameter(self, node: Located) -> Parameter | None:
        resolved = self.c.follow(node)
        if resolved is None:
            return None
        # Big specs share parameters (and responses) between hundreds of operations by `$ref`:
        # each is built once. What is built depends on the resolved node alone.
        address = resolved.address
        if address not in self._parameters:
            self._parameters[address] = self._parameter(resolved)
        return self._parameters[address]

    def _parameter(self, resolved: Located) -> Parameter | None:
        raw = resolved.value
        name, location = raw.get("name"), raw.get("in")
        if not isinstance(name, str) or location not in _LOCATIONS:
            self.c.problem(
                resolved, "a parameter needs a 'name' and 'in' of path/query/header/cookie"
            )
            return None
        style = raw.get("style") or ("form" if location in ("query", "cookie") else "simple")
        media_type = None
        schema = None
        if "schema" in raw:
            schema = self.schema(resolved.child("schema"), "request")
        elif isinstance(raw.get("content"), dict) and raw["content"]:
            media_type = next(iter(raw["content"]))
            inner = resolved.child("content", media_type)
            if isinstance(inner.value, dict) and "schema" in inner.value:
                schema = self.schema(inner.child("schema"), "request")
        return Parameter(
            name=name,
            location=cast(ParamLocation, location),
            required=bool(raw.get("required")) or location == "path",
            schema=schema,
            style=str(style),
            explode=bool(raw.get("explode", style == "form")),
            allow_reserved=bool(raw.get("allowReserved")),
            allow_empty_value=bool(raw.get("allowEmptyValue")),
            media_type=media_type,
            deprecated=bool(raw.get("deprecated")),
        )

    def parameters(self, item: Located, op: Located) -> tuple[Parameter, ...]:
        merged: dict[tuple[str, str], Parameter] = {}
        for owner in (item, op):
            raw = owner.value.get("parameters")
            if not isinstance(raw, list):
                continue
            for i in range(len(raw)):
                param = self.parameter(owner.child("parameters", i))
                if param is not None:
                    merged[(param.name, param.location)] = param
        return tuple(merged.values())

    def body(self, op: Located) -> Body | None:
        if "requestBody" not in op.value:
            return None
        node = self.c.follow(op.child("requestBody"))
        if node is None or not isinstance(node.value, dict):
            return None
        return Body(
            required=bool(node.value.get("required")),
            media=self.media(node, "request"),
            description=str(node.value.get("description") or ""),
        )

    def header(self, name: str, node: Located) -> Header | None:
        resolved = self.c.follow(node)
        if resolved is None or not isinstance(resolved.value, dict):
            return None
        raw = resolved.value
        schema = self.schema(resolved.child("schema"), "response") if "schema" in raw else None
        if schema is None and isinstance(raw.get("content"), dict) and raw["content"]:
            inner = resolved.child("content", next(iter(raw["content"])))
            if isinstance(inner.value, dict) and "schema" in inner.value:
                schema = self.schema(inner.child("schema"), "response")
        return Header(name, bool(raw.get("required")), schema, self.examples(resolved))

    def responses(self, op: Located) -> dict[str, Response]:
        raw = op.value.get("responses")
        if not isinstance(raw, dict) or not raw:
            self.c.warn(op, "operation declares no responses; it answers 204")
            return {}
        result = {}
        for status in raw:
            node = self.c.follow(op.child("responses", status))
            if node is None or not isinstance(node.value, dict):
                continue
            name = str(status).upper() if str(status) != "default" else "default"
            key = (node.address, name)
            if key not in self._responses:
                self._responses[key] = self._response(name, node)
            result[name] = self._responses[key]
        return result

    def _response(self, status: str, node: Located) -> Response:
        headers = {}
        for name in node.value.get("headers") or {}:
            if name.lower() == "content-type":
                continue
            header = self.header(name, node.child("headers", name))
            if header is not None:
                headers[name] = header
        return Response(
            status=status,
            description=str(node.value.get("description") or ""),
            headers=headers,
            media=self.media(node, "response"),
        )

    def security(self, node: Located) -> tuple[SecurityRequirement, ...]:
        if not isinstance(node.value, list):
            return ()
        alternatives: list[SecurityRequirement] = []
        for entry in node.value:
            if isinstance(entry, dict):
                alternatives.append({str(k): tuple(map(str, v or ())) for k, v in entry.items()})
        return tuple(alternatives)

    def callbacks(self, op: Located) -> tuple[Callback, ...]:
        raw = op.value.get("callbacks")
        if not isinstance(raw, dict):
            return ()
        found = []
        for name in raw:
            node = self.c.follow(op.child("callbacks", name))
            if node is None or not isinstance(node.value, dict):
                continue
            for expression in node.value:
                item = self.c.follow(node.child(expression))
                if item is None or not isinstance(item.value, dict):
                    continue
                ops = tuple(
                    self.operation(str(expression), m, item, "webhook") for m in methods_of(item)
                )
                found.append(Callback(str(name), str(expression), ops))
        return tuple(found)

    def operation(self, path: str, method: str, item: Located, kind: str = "api") -> Operation:
        op = item.child(method)
        raw = op.value
        security = (
            self.security(op.child("security")) if "security" in raw else self.default_security
        )
        if kind == "api":
            op_id = unique_operation_id(
                raw.get("operationId"), method, path, self.op_ids, op, self.c
            )
        else:
            op_id = str(raw.get("operationId") or f"{method}_{path}")
        params = self.parameters(item, op)
        if kind == "api":
            self.check_path_params(path, params, op)
        return Operation(
            method=method,
            path=path,
            operation_id=op_id,
            summary=str(raw.get("summary") or ""),
            tags=tuple(str(t) for t in raw.get("tags") or ()),
            parameters=params,
            body=self.body(op),
            responses=self.responses(op),
            security=security,
            callbacks=self.callbacks(op) if kind == "api" else (),
            deprecated=bool(raw.get("deprecated")),
            location=f"{op.uri}#{op.pointer}",
        )

    def check_path_params(self, path: str, params: tuple[Parameter, ...], op: Located) -> None:
        declared = {p.name for p in params if p.location == "path"}
        for name in template_names(path):
            if name not in declared:
                self.c.warn(op, f"path parameter {name!r} is not declared; treated as a string")
        for name in declared - set(template_names(path)):
            self.c.warn(op, f"path parameter {name!r} is declared but not in the path")

    # -- document level -----------------------------------------------------------------------

    def security_schemes(self) -> dict[str, SecurityScheme]:
        components = self.root.value.get("components") or {}
        raw = components.get("securitySchemes") if isinstance(components, dict) else None
        if not isinstance(raw, dict):
            return {}
        result = {}
        for name in raw:
            node = self.c.follow(self.root.child("components", "securitySchemes", name))
            if node is None or not isinstance(node.value, dict):
                continue
            scheme = scheme_from(str(name), node.value)
            if scheme is None:
                self.c.warn(
                    node, f"unknown security scheme type {node.value.get('type')!r}; ignored"
                )
            else:
                result[str(name)] = scheme
        return result

    def webhooks(self) -> tuple[Webhook, ...]:
        raw = self.root.value.get("webhooks") or self.root.value.get("x-webhooks")
        if not isinstance(raw, dict):
            return ()
        key = "webhooks" if "webhooks" in self.root.value else "x-webhooks"
        found = []
        for name in raw:
            item = self.c.follow(self.root.child(key, name))
            if item is None or not isinstance(item.value, dict):
                continue
            for method in methods_of(item):
                found.append(Webhook(str(name), self.operation(str(name), method, item, "webhook")))
        return tuple(found)

    def build(self) -> Spec:
        operations = [
            self.operation(path, method, item)
            for path, item in path_items(self.root, self.c)
            for method in methods_of(item)
        ]
        servers = tuple(server_urls(self.root.value.get("servers")))
        info = self.root.value.get("info") if isinstance(self.root.value.get("info"), dict) else {}
        if not info.get("title"):
            self.c.warn(self.root, "info.title is missing")
        tags = [
            t["name"]
            for t in self.root.value.get("tags") or ()
            if isinstance(t, dict) and "name" in t
        ]
        return Spec(
            title=str(info.get("title") or "Untitled API"),
            version=str(info.get("version") or ""),
            openapi=str(self.root.value["openapi"]),
            base_path=base_path_of(servers[0]) if servers else "",
            servers=servers,
            operations=tuple(operations),
            security_schemes=self.security_schemes(),
            webhooks=self.webhooks(),
            tags=tuple(map(str, tags)),
            source=self.root.uri,
            warnings=tuple(self.c.warnings),
            description=str(info.get("description") or ""),
        )


def server_urls(raw: Any) -> list[str]:
    urls = []
    for server in raw if isinstance(raw, list) else ():
        if not isinstance(server, dict) or not isinstance(server.get("url"), str):
            continue
        url = server["url"]
        for name, var in (server.get("variables") or {}).items():
            if isinstance(var, dict) and "default" in var:
                url = url.replace("{" + str(name) + "}", str(var["default"]))
        urls.append(url)
    return urls


def scheme_from(name: str, raw: dict[str, Any]) -> SecurityScheme | None:
    kind = raw.get("type")
    if kind == "apiKey":
        where = raw.get("in")
        location: Literal["header", "query", "cookie"] = (
            "query" if where == "query" else "cookie" if where == "cookie" else "header"
        )
        return SecurityScheme(
            name, "apiKey", location=location, param_name=str(raw.get("name") or name)
        )
    if kind == "http":
        return SecurityScheme(
            name,
            "http",
            scheme=str(raw.get("scheme") or "bearer").lower(),
            bearer_format=raw.get("bearerFormat"),
        )
    if kind == "oauth2":
        raw_flows = raw.get("flows")
        flows: dict[str, Any] = raw_flows if isinstance(raw_flows, dict) else {}
        return SecurityScheme(
            name,
            "oauth2",
            flows=tuple(
                OAuthFlow(
                    kind=str(flow_name),
                    token_url=flow.get("tokenUrl"),
                    authorization_url=flow.get("authorizationUrl"),
                    scopes=dict(flow.get("scopes") or {}),
                )
                for flow_name, flow in flows.items()
                if isinstance(flow, dict)
            ),
        )
    if kind == "openIdConnect":
        return SecurityScheme(name, "openIdConnect", openid_url=raw.get("openIdConnectUrl"))
    if kind == "mutualTLS":
        return SecurityScheme(name, "mutualTLS")
    return None


def build(root: Located, collector: Collector) -> Spec:
    return _Builder(root, collector).build()
