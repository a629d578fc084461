"""Route (method, path) to an operation.

Concrete segments beat templated ones (``/pets/mine`` wins over ``/pets/{id}``); a path that exists
with another method is a PARTIAL match (405 with ``Allow``); nothing matching is NONE (404).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from apitwin.spec.model import Operation

_TEMPLATE = re.compile(r"\{([^{}]+)\}")
_MATCHES_KEPT = 4096  # (method, path) answers a router keeps: clients repeat their paths


class MatchKind(enum.Enum):
    NONE = 0
    PARTIAL = 1  # the path exists, the method does not
    FULL = 2


@dataclass(frozen=True, slots=True)
class Match:
    kind: MatchKind
    operation: Operation | None = None
    # Raw (still percent-encoded) segment text per path parameter, for style-aware decoding.
    path_params: Mapping[str, str] = field(default_factory=dict)  # shared by requests: read only
    allowed: tuple[str, ...] = ()
    template: str = ""


@dataclass(slots=True)
class _Segment:
    """One position of a path template: a literal or a pattern with named captures."""

    text: str
    pattern: re.Pattern[str] | None
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> _Segment:
        names = tuple(_TEMPLATE.findall(text))
        if not names:
            return cls(text, None, ())
        regex = "".join(
            f"(?P<p{i}>[^/]+?)" if i % 2 else re.escape(part)
            for i, part in enumerate(_TEMPLATE.split(text))
        )
        # Group names must be identifiers; map them back by position.
        regex = re.sub(r"\(\?P<p(\d+)>", lambda m: f"(?P<g{int(m.group(1)) // 2}>", regex)
        return cls(text, re.compile(f"^{regex}$"), names)


@dataclass(slots=True)
class _Route:
    template: str
    segments: list[_Segment]
    operations: dict[str, Operation]
    # Sort key: more literal segments first, then more literal characters.
    score: tuple[int, ...] = ()
    allowed: tuple[str, ...] = ()  # its methods, for Allow (HEAD wherever GET is)

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for segment, part in zip(self.segments, parts, strict=True):
            if segment.pattern is None:
                if (unquote(part) if "%" in part else part) != segment.text:
                    return None
                continue
            found = segment.pattern.match(part)
            if found is None:
                return None
            for i, name in enumerate(segment.names):
                params[name] = found.group(f"g{i}")
        return params


class Router:
    """Precompiled routes of one spec; ``match`` is called per request."""

    def __init__(self, operations: tuple[Operation, ...] | list[Operation]) -> None:
        by_template: dict[str, _Route] = {}
        for op in operations:
            route = by_template.get(op.path)
            if route is None:
                segments = [_Segment.parse(s) for s in _split(op.path)]
                score = tuple(0 if s.pattern is not None else 1 for s in segments)
                route = by_template[op.path] = _Route(op.path, segments, {}, score)
            route.operations[op.method.upper()] = op
        self._static: dict[str, _Route] = {}
        self._by_length: dict[int, list[_Route]] = {}
        for route in by_template.values():
            if all(s.pattern is None for s in route.segments):
                self._static["/" + "/".join(s.text for s in route.segments)] = route
            self._by_length.setdefault(len(route.segments), []).append(route)
        for routes in self._by_length.values():
            routes.sort(key=lambda r: r.score, reverse=True)
        for route in by_template.values():
            route.allowed = self.allowed(route)
        self._kept: dict[tuple[str, str], Match] = {}

    def match(self, method: str, path: str) -> Match:
        """``path`` is relative to the base path, still percent-encoded. The answer is the
        same for the same request line (routes never change), so the latest are kept."""
        key = (method, path)
        found = self._kept.get(key)
        if found is None:
            found = self._match(method, path)
            if len(self._kept) >= _MATCHES_KEPT:
                del self._kept[next(iter(self._kept))]
            self._kept[key] = found
        return found

    def _match(self, method: str, path: str) -> Match:
        parts = _split(path)
        method = method.upper()
        allowed: set[str] = set()
        template = ""
        for route, params in self._candidates(parts):
            op = route.operations.get(method)
            if op is None and method == "HEAD":
                op = route.operations.get("GET")
            if op is not None:
                return Match(MatchKind.FULL, op, params, route.allowed, route.template)
            allowed.update(route.allowed)
            template = template or route.template
        if not allowed:
            return Match(MatchKind.NONE)
        return Match(MatchKind.PARTIAL, allowed=tuple(sorted(allowed)), template=template)

    def _candidates(self, parts: list[str]) -> Iterator[tuple[_Route, dict[str, str]]]:
        literal = "/" + "/".join(parts)
        static = self._static.get(unquote(literal) if "%" in literal else literal)
        if static is not None:
            yield static, {}
        for candidate in self._by_length.get(len(parts), ()):
            if candidate is static:
                continue
            params = candidate.match(parts)
            if params is not None:
                yield candidate, params

    @staticmethod
    def allowed(route: _Route) -> tuple[str, ...]:
        methods = set(route.operations)
        if "GET" in methods:
            methods.add("HEAD")
        return tuple(sorted(methods))

    def templates(self) -> list[str]:
        return [r.template for routes in self._by_length.values() for r in routes]


def _split(path: str) -> list[str]:
    stripped = path.strip("/")
    return stripped.split("/") if stripped else []
