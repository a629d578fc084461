"""Load a spec file (and everything it references) into the typed model.

``load_spec`` returns a :class:`Spec` or raises :class:`SpecError` listing every problem found, each
with its file, JSON pointer and a plain reason. Imperfections that do not stop serving become
``Spec.warnings``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from apitwin.errors import Problem, SpecError
from apitwin.spec.model import HTTP_METHODS, Spec
from apitwin.spec.refs import DocumentRegistry, Located, RefError, SpecLimits, escape

_SKIP_KEYS = {"example", "examples", "enum", "const"}
_TEMPLATE = re.compile(r"\{([^{}]+)\}")


class Collector:
    """Gathers problems (fatal) and warnings while a spec is read."""

    def __init__(self, registry: DocumentRegistry) -> None:
        self.registry = registry
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []

    def problem(self, node: Located, reason: str) -> None:
        self.problems.append(Problem(self.registry.name(node.uri), node.pointer, reason))

    def warn(self, node: Located, reason: str) -> None:
        self.warnings.append(Problem(self.registry.name(node.uri), node.pointer, reason))

    def follow(self, node: Located) -> Located | None:
        try:
            return self.registry.follow(node)
        except RefError as exc:
            self.problems.append(exc.problem)
            return None


# Loading phases, in the order they are reported (the last is reported by whoever infers them).
PHASES = ("reading", "parsing", "resolving refs", "building operations", "inferring resources")


@dataclass(frozen=True, slots=True)
class Phase:
    """A loading phase starting (``done`` False) or ending, with what it produced."""

    name: str  # one of PHASES
    done: bool = False
    # When done: bytes read, documents parsed, $refs resolved, operations built, resources.
    count: int | None = None


Progress = Callable[[Phase], None]


def load_spec(
    path: str | Path,
    *,
    spec_root: str | Path | None = None,
    progress: Progress | None = None,
    limits: SpecLimits | None = None,
) -> Spec:
    """``limits`` bound what reading may cost (size, nesting, YAML aliases, `$ref` chains)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([Problem(str(path), "", "file not found")])
    registry = DocumentRegistry(
        path, spec_root=Path(spec_root) if spec_root else None, limits=limits
    )
    tell = progress or _silent
    tell(Phase("reading"))

    def read(uri: str, size: int) -> None:
        tell(Phase("reading", True, size))
        tell(Phase("parsing"))

    registry.on_read = read
    try:
        root = registry.root()
    except RefError as exc:
        raise SpecError([exc.problem]) from None
    registry.on_read = None
    tell(Phase("parsing", True, 1))
    collector = Collector(registry)
    if not isinstance(root.value, dict):
        raise SpecError([Problem(registry.name(root.uri), "", "the document is not a mapping")])
    tell(Phase("resolving refs"))
    refs = check_refs(registry, collector)
    if collector.problems:
        raise SpecError(collector.problems)
    tell(Phase("resolving refs", True, refs))
    tell(Phase("building operations"))
    spec = _adapt(root, collector)
    if collector.problems or spec is None:
        raise SpecError(collector.problems or [Problem(registry.name(root.uri), "", "unreadable")])
    tell(Phase("building operations", True, len(spec.operations)))
    return spec


def _silent(phase: Phase) -> None:
    pass


def _adapt(root: Located, collector: Collector) -> Spec | None:
    from apitwin.spec import oas3, swagger2

    doc = root.value
    if isinstance(doc.get("swagger"), str):
        if not doc["swagger"].startswith("2."):
            collector.problem(
                root.child("swagger"), f"unsupported Swagger version {doc['swagger']!r}"
            )
            return None
        return swagger2.build(root, collector)
    version = doc.get("openapi")
    if isinstance(version, str) and re.match(r"3\.[0-2](\.|$)", version):
        return oas3.build(root, collector)
    if version is None:
        collector.problem(root, "not an OpenAPI document: no 'openapi' or 'swagger' field")
    else:
        collector.problem(root.child("openapi"), f"unsupported OpenAPI version {version!r}")
    return None


def check_refs(registry: DocumentRegistry, collector: Collector) -> int:
    """Report every `$ref` whose target cannot be found, in all reachable documents.

    Returns how many `$ref`s were found.
    """
    found = 0
    pending = [registry.root_uri]
    walked: set[str] = set()
    checked: set[str] = set()
    while pending:
        uri = pending.pop()
        if uri in walked:
            continue
        walked.add(uri)
        try:
            document = registry.document(uri)
        except RefError as exc:
            collector.problems.append(exc.problem)
            continue
        quick = _literal_refs(registry.json_text(uri))
        if quick is not None and _all_resolve(registry, uri, quick, checked):
            found += len(quick)
            continue
        # YAML, a reference that does not resolve or one to another document: walk the
        # document, to know which `$ref`s count (not those inside examples or extensions) and
        # where each one is.
        refs = _refs_in(document)
        found += len(refs)
        for ref, pointer in refs:
            if not isinstance(ref, str) or not ref:
                collector.warnings.append(
                    Problem(
                        registry.name(uri),
                        pointer,
                        "$ref is empty (in YAML, an unquoted # starts a comment); treated as {}",
                    )
                )
                continue
            target_uri, target_pointer = registry.target(uri, ref)
            address = f"{target_uri}#{target_pointer}"
            if address in checked:
                continue
            checked.add(address)
            try:
                _resolve(registry, target_uri, target_pointer)
            except RefError as exc:
                reason = f"$ref {ref!r} cannot be resolved: {exc.problem.reason}"
                collector.problems.append(Problem(registry.name(uri), pointer, reason))
                continue
            if target_uri != uri:
                pending.append(target_uri)
    registry.forget_texts()
    return found


# How "$ref" could be spelled with escapes in JSON: "$", "r", "e" or "f" as a \u escape (their
# codes have no hex letters, so there is no upper-case variant).
_ESCAPED_REF = re.compile(rb"\\u00(?:24|6[56]|72)")
# "$ref" with what follows: a colon (a key), then a string value without escapes.
_REF_KEY = re.compile(rb'\$ref"[ \t\r\n]*(:[ \t\r\n]*(?:"([^"\\]*)(["\\]))?)?')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def _literal_refs(text: bytes | None) -> list[str] | None:
    """Every `$ref` of a JSON text, found in the text itself: a fraction of walking the parsed
    document. None when that cannot be exact: a `$ref` key spelled with an escape, or a value
    that is not a plain non-empty string.

    In JSON text, a string followed by a colon is a key: each `$ref"` then a colon ends a key,
    so no `$ref` key is missed. A longer key ending so (`"x$ref"`) is checked too, which can
    only send the load the long way round.
    """
    if text is None or _ESCAPED_REF.search(text):
        return None
    found: list[str] = []
    for match in _REF_KEY.finditer(text):
        if match[1] is None:
            continue  # not followed by a colon: not a key
        if match[3] is None:
            return None  # not a string
        if match[3] == b'"':
            value = match[2].decode()
        else:  # escapes (some writers escape every "/"): the whole string, decoded
            whole = _JSON_STRING.match(text, match.start(2) - 1)
            value = orjson.loads(whole[0]) if whole else ""
        if not value:
            return None
        found.append(value)
    return found


def _all_resolve(registry: DocumentRegistry, uri: str, refs: list[str], checked: set[str]) -> bool:
    """Whether each of ``refs`` (written in ``uri``) resolves within ``uri`` itself; marks
    those that do. A reference to another document takes the long way round, which knows
    whether it is a reference at all (not inside an example) before reading that document."""
    for ref in refs:
        target_uri, target_pointer = registry.target(uri, ref)
        if target_uri != uri:
            return False
        address = f"{target_uri}#{target_pointer}"
        if address in checked:
            continue
        try:
            _resolve(registry, target_uri, target_pointer)
        except RefError:
            return False
        checked.add(address)
    return True


def _resolve(registry: DocumentRegistry, uri: str, pointer: str) -> None:
    target = registry.lookup(uri, pointer)
    if isinstance(target.value, dict) and "$ref" in target.value:
        registry.follow(target)  # a $ref to a $ref: the chain must end, and soon


def _refs_in(document: Any) -> list[tuple[Any, str]]:
    # Every container of the document passes here (a 10 MB spec has hundreds of thousands):
    # exact type checks (parsed documents hold plain dicts and lists, with string keys) and
    # pointers escaped only where a key needs it.
    found: list[tuple[Any, str]] = []
    stack: list[tuple[Any, str]] = [(document, "")]
    pop, push = stack.pop, stack.append
    while stack:
        node, pointer = pop()
        if type(node) is dict:
            if "$ref" in node:
                found.append((node["$ref"], pointer))
            for key, value in node.items():
                if (
                    (type(value) is dict or type(value) is list)
                    and key not in _SKIP_KEYS
                    and not key.startswith("x-")
                ):
                    token = escape(key) if "/" in key or "~" in key else key
                    push((value, f"{pointer}/{token}"))
        elif type(node) is list:
            for i, value in enumerate(node):
                if type(value) is dict or type(value) is list:
                    push((value, f"{pointer}/{i}"))
    return found


def template_names(path: str) -> list[str]:
    return _TEMPLATE.findall(path)


def path_items(root: Located, collector: Collector) -> list[tuple[str, Located]]:
    """(path, resolved path item) for every entry of ``paths``."""
    paths = root.value.get("paths")
    if paths is None:
        return []
    if not isinstance(paths, dict):
        collector.problem(root.child("paths"), "'paths' must be a mapping")
        return []
    result = []
    for path in paths:
        node = collector.follow(root.child("paths", path))
        if node is None:
            continue
        if not isinstance(node.value, dict):
            collector.problem(node, "a path item must be a mapping")
            continue
        if not path.startswith("/"):
            collector.warn(node, f"path {path!r} does not start with '/'")
        result.append((path, node))
    return result


def methods_of(item: Located) -> list[str]:
    return [m for m in HTTP_METHODS if isinstance(item.value.get(m), dict)]


def unique_operation_id(
    raw_id: Any, method: str, path: str, seen: set[str], node: Located, collector: Collector
) -> str:
    if isinstance(raw_id, str) and raw_id:
        op_id = raw_id
    else:
        slug = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
        op_id = f"{method}_{slug}"
    if op_id in seen:
        collector.warn(node, f"duplicate operationId {op_id!r}; renamed")
        n = 2
        while f"{op_id}_{n}" in seen:
            n += 1
        op_id = f"{op_id}_{n}"
    seen.add(op_id)
    return op_id


def base_path_of(url: str) -> str:
    """The path part of a server URL ("https://x/v1/" -> "/v1", "/" -> "")."""
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*(.*)$", url)
    path = match.group(1) if match else url
    path = path.split("?", 1)[0].split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path if path else ""
    return path.rstrip("/")
