"""Documents by URI, and `$ref` resolution across them.

Every document is keyed by an absolute ``file://`` URI, so relative references in multi-file specs
resolve with ``urljoin`` exactly as the specs intend. References that leave the root spec's folder,
or point at the network, are refused unless explicitly allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import orjson
import yaml

from apitwin.errors import Problem

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
MAX_REF_CHAIN = 64
# Alias uses are counted against this budget, so "billion laughs" documents fail fast.
MAX_YAML_ALIASES = 10_000


class RefError(Exception):
    """A reference or document that cannot be resolved; carries the Problem to report."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Located:
    """A value together with the document URI and JSON pointer it was found at."""

    value: Any
    uri: str
    pointer: str

    @property
    def address(self) -> str:
        return f"{self.uri}#{self.pointer}"

    def child(self, *keys: str | int) -> Located:
        value = self.value
        pointer = self.pointer
        for key in keys:
            value = value[key]
            pointer = f"{pointer}/{escape(str(key))}"
        return Located(value, self.uri, pointer)


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def path_to_uri(path: Path) -> str:
    return path.resolve().as_uri()


def display_name(uri: str, root: str) -> str:
    """A short file name for messages: relative to the root spec's folder when inside it."""
    path = Path(unquote(urlsplit(uri).path))
    base = Path(unquote(urlsplit(root).path)).parent
    try:
        return str(path.relative_to(base))
    except ValueError:
        return str(path)


class _Loader(yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader):  # type: ignore[misc]
    """Safe YAML with string keys (status codes stay "200") and bounded alias use."""


def _construct_mapping(loader: Any, node: yaml.MappingNode) -> dict[str, Any]:
    loader.flatten_mapping(node)
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key if isinstance(key, str) else _key_text(key)] = loader.construct_object(
            value_node, deep=True
        )
    return result


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return "null" if key is None else str(key)


def _construct_timestamp(loader: Any, node: yaml.ScalarNode) -> str:
    # JSON has no dates: keep YAML timestamps as the text written in the spec.
    return str(loader.construct_scalar(node))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def parse_document(data: bytes, name: str) -> Any:
    """Parse JSON or YAML bytes; raises ValueError with a plain reason."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"file is larger than the {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB limit")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not valid UTF-8 (byte {exc.start})") from None
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML is a superset of JSON in practice; let the YAML parser give the reason
    if text.count("*") > MAX_YAML_ALIASES and _alias_count(text) > MAX_YAML_ALIASES:
        raise ValueError(f"more than {MAX_YAML_ALIASES} YAML aliases (a YAML bomb?)")
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ValueError("document nests too deeply") from None


def _alias_count(text: str) -> int:
    count = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            count += 1
    return count


class DocumentRegistry:
    """Loads documents on demand and resolves references between them."""

    def __init__(self, root: Path, *, spec_root: Path | None = None) -> None:
        self.root_uri = path_to_uri(root)
        self._base_dir = (spec_root or root.parent).resolve()
        self._documents: dict[str, Any] = {}
        # JSON Schema `$id` and `$anchor` targets (OpenAPI 3.1), indexed on first need.
        self._ids: dict[str, Located] = {}
        self._indexed: set[str] = set()
        # Told (uri, size) after each file is read and before it is parsed (loading progress).
        self.on_read: Callable[[str, int], None] | None = None

    def name(self, uri: str) -> str:
        return display_name(uri, self.root_uri)

    def document(self, uri: str) -> Any:
        found = self._documents.get(uri)
        if found is not None or uri in self._documents:
            return found
        alias = self._identified(uri)
        if alias is not None:
            return alias.value
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise RefError(Problem(uri, "", "references to URLs are not followed; use local files"))
        path = Path(unquote(parts.path))
        if not path.resolve().is_relative_to(self._base_dir):
            reason = (
                f"reference leaves the spec root {self._base_dir} (refused; "
                "widen it with --spec-root)"
            )
            raise RefError(Problem(self.name(uri), "", reason))
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RefError(
                Problem(self.name(uri), "", f"cannot read file: {exc.strerror}")
            ) from None
        if self.on_read is not None:
            self.on_read(uri, len(data))
        try:
            document = parse_document(data, self.name(uri))
        except ValueError as exc:
            raise RefError(Problem(self.name(uri), "", str(exc))) from None
        self._documents[uri] = document
        return document

    def root(self) -> Located:
        return Located(self.document(self.root_uri), self.root_uri, "")

    def _identified(self, uri: str) -> Located | None:
        for doc_uri in list(self._documents):
            if doc_uri not in self._indexed:
                self._indexed.add(doc_uri)
                self._index_ids(doc_uri)
        return self._ids.get(uri)

    def _index_ids(self, doc_uri: str) -> None:
        stack: list[tuple[Any, str]] = [(self._documents[doc_uri], "")]
        while stack:
            node, pointer = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("$id"), str):
                    self._ids.setdefault(
                        urljoin(doc_uri, node["$id"]).split("#")[0], Located(node, doc_uri, pointer)
                    )
                if isinstance(node.get("$anchor"), str):
                    self._ids.setdefault(f"#{node['$anchor']}", Located(node, doc_uri, pointer))
                stack.extend(
                    (v, f"{pointer}/{escape(k)}")
                    for k, v in node.items()
                    if isinstance(v, (dict, list))
                )
            elif isinstance(node, list):
                stack.extend(
                    (v, f"{pointer}/{i}") for i, v in enumerate(node) if isinstance(v, (dict, list))
                )

    def lookup(self, uri: str, pointer: str) -> Located:
        if pointer and not pointer.startswith("/"):
            # A plain-name fragment: a `$anchor` (anchors are matched by name across documents).
            self._identified(uri)
            anchor = self._ids.get(f"#{pointer}")
            if anchor is None:
                raise RefError(Problem(self.name(uri), pointer, "no schema has this $anchor"))
            return anchor
        value = self.document(uri)
        base = self._ids.get(uri) if uri not in self._documents else None
        if base is not None:
            # Inside an `$id` resource: fall back to its document's root, as 3.1 specs intend.
            try:
                return self._walk(base.value, base.uri, base.pointer, pointer)
            except RefError:
                return self._walk(self._documents[base.uri], base.uri, "", pointer)
        return self._walk(value, uri, "", pointer)

    def _walk(self, value: Any, uri: str, start: str, pointer: str) -> Located:
        if pointer in ("", "/"):
            return Located(value, uri, start)
        for raw in pointer.lstrip("/").split("/"):
            token = unescape(unquote(raw))
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                raise RefError(Problem(self.name(uri), pointer, "reference target does not exist"))
        return Located(value, uri, start + pointer)

    def target(self, base_uri: str, ref: str) -> tuple[str, str]:
        """The (document URI, pointer) a `$ref` written in ``base_uri`` points at."""
        if ref.startswith("#"):
            # Same-document references are most of them in big specs: skip urljoin.
            return base_uri.split("#", 1)[0], unquote(ref[1:])
        absolute = urljoin(base_uri, ref)
        uri, fragment = urldefrag(absolute)
        return uri, unquote(fragment)

    def follow(self, node: Located) -> Located:
        """Follow a chain of `$ref`s from a non-schema object (parameter, response, ...)."""
        seen: set[str] = set()
        while isinstance(node.value, dict) and isinstance(node.value.get("$ref"), str):
            if node.address in seen or len(seen) > MAX_REF_CHAIN:
                raise RefError(Problem(self.name(node.uri), node.pointer, "circular $ref chain"))
            seen.add(node.address)
            uri, pointer = self.target(node.uri, node.value["$ref"])
            node = self.lookup(uri, pointer)
        return node
