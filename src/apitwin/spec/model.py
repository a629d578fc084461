"""The normalised, typed model of a spec. Nothing after the loader reads raw spec dicts.

Swagger 2.0, OpenAPI 3.0 and 3.1 all load into these classes. Schemas are JSON Schema 2020-12,
converted and bundled lazily per use (see ``spec.schemas``), so multi-MB specs load quickly.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from apitwin.errors import Problem

if TYPE_CHECKING:
    from apitwin.spec.schemas import SchemaCompiler

Direction = Literal["request", "response"]
ParamLocation = Literal["path", "query", "header", "cookie"]
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Schema:
    """A schema as written in the spec, compiled on first use into a bundled 2020-12 schema."""

    __slots__ = ("_bundled", "_compiler", "cache", "direction", "raw", "uri")

    def __init__(self, compiler: SchemaCompiler, uri: str, raw: Any, direction: Direction) -> None:
        self._compiler = compiler
        self.uri = uri
        self.raw = raw
        self.direction = direction
        self._bundled: dict[str, Any] | None = None
        # Artifacts derived from the schema (compiled validator, ...), built on first use.
        self.cache: dict[str, Any] = {}

    @property
    def compiler(self) -> SchemaCompiler:
        """The compiler shared by the spec's schemas (to build sibling schemas)."""
        return self._compiler

    @property
    def json(self) -> dict[str, Any]:
        """Self-contained JSON Schema 2020-12 (`$defs` holds every schema it references)."""
        if self._bundled is None:
            self._bundled = self._compiler.bundle(self.uri, self.raw, self.direction)
        return self._bundled

    def __repr__(self) -> str:
        return f"Schema({self.uri!r}, {self.direction})"


@dataclass(frozen=True, slots=True)
class Example:
    name: str
    value: Any
    summary: str = ""


@dataclass(frozen=True, slots=True)
class MediaType:
    name: str
    schema: Schema | None
    examples: tuple[Example, ...] = ()

    @property
    def is_json(self) -> bool:
        return is_json_media(self.name)


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    location: ParamLocation
    required: bool
    schema: Schema | None
    style: str
    explode: bool
    allow_reserved: bool = False
    allow_empty_value: bool = False
    # OpenAPI 3 parameters may carry `content` instead of `schema` (a JSON-encoded value).
    media_type: str | None = None
    deprecated: bool = False
    # Values derived from the fields on first use (a request's response pick, a parameter's
    # shape), so no request walks the spec for them again; not part of equality.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Body:
    required: bool
    media: Mapping[str, MediaType]
    description: str = ""


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    required: bool
    schema: Schema | None
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True, slots=True)
class Response:
    status: str  # "200", "4XX" or "default", exactly as in the spec
    description: str
    headers: Mapping[str, Header]
    media: Mapping[str, MediaType]
    # As Parameter.memo.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class OAuthFlow:
    kind: str  # clientCredentials, authorizationCode, implicit, password
    token_url: str | None
    authorization_url: str | None
    scopes: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class SecurityScheme:
    name: str
    type: Literal["apiKey", "http", "oauth2", "openIdConnect", "mutualTLS"]
    location: Literal["header", "query", "cookie"] | None = None  # apiKey
    param_name: str | None = None  # apiKey
    scheme: str | None = None  # http: basic, bearer, ...
    bearer_format: str | None = None
    flows: tuple[OAuthFlow, ...] = ()
    openid_url: str | None = None


# One alternative of a security requirement: every named scheme must be satisfied.
SecurityRequirement = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Callback:
    name: str
    expression: str  # runtime expression URL template, e.g. {$request.body#/callbackUrl}
    operations: tuple[Operation, ...]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str  # lower case
    path: str  # as in the spec, without the base path
    operation_id: str
    summary: str
    tags: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    body: Body | None
    responses: Mapping[str, Response]
    # None: no requirement; () would mean "explicitly none". Alternatives are OR-ed.
    security: tuple[SecurityRequirement, ...]
    callbacks: tuple[Callback, ...] = ()
    deprecated: bool = False
    location: str = ""
    # As Parameter.memo.
    memo: dict[Any, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.method.upper()} {self.path}"


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    operation: Operation


@dataclass(frozen=True, slots=True)
class Spec:
    title: str
    version: str
    openapi: str  # "2.0", "3.0.3", "3.1.0", ...
    base_path: str  # "" or "/v1"; no trailing slash
    servers: tuple[str, ...]
    operations: tuple[Operation, ...]
    security_schemes: Mapping[str, SecurityScheme]
    webhooks: tuple[Webhook, ...]
    tags: tuple[str, ...]
    source: str
    warnings: tuple[Problem, ...] = field(default=())
    description: str = ""

    def operation(self, operation_id: str) -> Operation | None:
        for op in self.operations:
            if op.operation_id == operation_id:
                return op
        return None


@functools.lru_cache(maxsize=256)
def is_json_media(name: str) -> bool:
    base = name.split(";", 1)[0].strip().lower()
    return base == "application/json" or base.endswith("+json") or base == "*/*"
