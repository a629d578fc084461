"""Documents by URI, and `$ref` resolution across them.

Every document is keyed by an absolute ``file://`` URI, so relative references in multi-file specs
resolve with ``urljoin`` exactly as the specs intend. References that leave the root spec's folder,
or point at the network, are refused unless explicitly allowed.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import re
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
# Values YAML aliases may add once expanded ("billion laughs" documents are refused), and how
# deeply a document may nest (the reader and the model builders recurse).
MAX_ALIAS_EXPANSION = 1_000_000
MAX_NESTING = 256


@dataclass(frozen=True, slots=True)
class SpecLimits:
    """What a spec document may cost to read; each refusal names the limit it hit."""

    max_bytes: int = MAX_DOCUMENT_BYTES
    max_nesting: int = MAX_NESTING
    max_alias_expansion: int = MAX_ALIAS_EXPANSION
    max_ref_chain: int = MAX_REF_CHAIN


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
            token = key if type(key) is str else str(key)
            pointer = f"{pointer}/{escape(token) if '/' in token or '~' in token else token}"
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


class BoundedMerges:
    """Mixin for a YAML loader: merge keys (``<<: *anchor``) copy entries, so nested merges grow
    exponentially while the node graph is flattened; count the copies and stop at a budget."""

    merge_budget: int = MAX_ALIAS_EXPANSION
    _merged: int = 0

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        before = len(node.value)
        super().flatten_mapping(node)  # type: ignore[misc]
        self._merged += max(0, len(node.value) - before) + 1
        if self._merged > self.merge_budget:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"YAML merge keys (<<) copy more than {self.merge_budget} entries (a YAML bomb?)",
                node.start_mark,
            )


class _Loader(
    BoundedMerges,
    yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader,  # type: ignore[misc]
):
    """Safe YAML with string keys (status codes stay "200") and bounded merges."""


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


def parse_document(data: bytes, name: str, limits: SpecLimits | None = None) -> Any:
    """Parse JSON or YAML bytes; raises ValueError with a plain reason."""
    return _parse(data, limits or SpecLimits())[0]


def _parse(data: bytes, limits: SpecLimits) -> tuple[Any, bool]:
    """The document, and whether it was read as JSON."""
    if len(data) > limits.max_bytes:
        raise ValueError(f"file is larger than the {_size(limits.max_bytes)} limit")
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    if body.lstrip()[:1] in (b"{", b"["):
        # orjson reads (and checks) UTF-8 bytes itself: no decoded copy of the text. Anything
        # it refuses takes the path below, which names the reason.
        with contextlib.suppress(orjson.JSONDecodeError):
            document = orjson.loads(body)
            # JSON has no aliases: every value is its own object, none contains itself. Only
            # the depth needs checking, level by level (a tenth of check_shape's cost).
            check_depth(document, limits.max_nesting)
            return document, True
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"not valid UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line})"
        ) from None
    # YAML is a superset of JSON in practice: for JSON orjson refused, it gives the reason.
    _check_yaml_nesting(text, limits.max_nesting)
    loader = _Loader(text)
    loader.merge_budget = limits.max_alias_expansion
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise ValueError(f"document nests deeper than {limits.max_nesting} levels") from None
    finally:
        loader.dispose()
    check_shape(document, limits)
    return document, False


def check_depth(document: Any, limit: int) -> None:
    """Refuse a document (with no shared values) nested deeper than ``limit``."""
    if _dumps_refuses(limit + 1):
        # orjson.dumps stops at a fixed depth: when that is within the limit, its success (in
        # C, a fifth of the walk below on a 10 MB spec) proves the document is within it too.
        with contextlib.suppress(orjson.JSONEncodeError):
            orjson.dumps(document)
            return
    level = [document] if isinstance(document, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            raise ValueError(f"document nests deeper than {limit} levels")
        deeper = []
        for node in level:
            for child in node.values() if isinstance(node, dict) else node:
                if isinstance(child, (dict, list)):
                    deeper.append(child)
        level = deeper


@functools.cache
def _dumps_refuses(depth: int) -> bool:
    """Whether orjson.dumps refuses lists and mappings nested ``depth`` deep."""
    for wrap in (_in_list, _in_mapping):
        value: Any = wrap(None)
        for _ in range(depth - 1):
            value = wrap(value)
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError:
            continue
        return False
    return True


def _in_list(value: Any) -> Any:
    return [value]


def _in_mapping(value: Any) -> Any:
    return {"": value}


def _check_yaml_nesting(text: str, limit: int) -> None:
    """Refuse YAML nested deeper than ``limit`` before it is composed: the C composer recurses
    without a guard, and tens of thousands of levels crash the process.

    Each flow level opens a bracket and each block level indents (or adds "- " or "? "), so a text
    with few of both cannot nest deeply; only other texts pay for the exact scan of events.
    """
    wide = 4 * limit
    if text.count("[") + text.count("{") <= wide and not re.search(
        rf"^[ ?-]{{{wide},}}", text, re.MULTILINE
    ):
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_EventLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > limit:
                    raise ValueError(f"document nests deeper than {limit} levels{_at(event)}")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        # PyYAML 6.0.4 on stops deep flow nesting itself (its own limit, which may be above
        # ours); any other broken YAML is left for the loader to explain.
        if "nesting depth" in str(getattr(exc, "problem", "")):
            raise ValueError(f"document nests deeper than {limit} levels{_at(exc)}") from None


def _at(found: Any) -> str:
    mark = getattr(found, "problem_mark", None) or getattr(found, "start_mark", None)
    return f" (at line {mark.line + 1})" if mark is not None else ""


_EventLoader: Any = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else yaml.SafeLoader


def _size(count: int) -> str:
    mib = count / (1024 * 1024)
    return f"{mib:g} MiB" if count >= 1024 * 1024 else f"{count}-byte"


def check_shape(document: Any, limits: SpecLimits) -> None:
    """Refuse documents that nest too deeply, refer to themselves, or whose YAML aliases expand
    beyond the limit; counts each shared value once, so the check itself stays cheap."""
    if not isinstance(document, (dict, list)):
        return
    measured: dict[int, tuple[int, int]] = {}  # id -> (values once expanded, nesting depth)
    path: set[int] = set()
    unique = 0
    stack: list[tuple[Any, bool]] = [(document, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        children = node.values() if isinstance(node, dict) else node
        if finished:
            size, depth = 1, 0
            for child in children:
                if isinstance(child, (dict, list)):
                    child_size, child_depth = measured[id(child)]
                    size += child_size
                    depth = max(depth, child_depth)
                else:
                    size += 1
            path.discard(key)
            measured[key] = (size, depth + 1)
            if depth + 1 > limits.max_nesting:
                raise ValueError(f"document nests deeper than {limits.max_nesting} levels")
            if size - unique > limits.max_alias_expansion:
                raise ValueError(
                    f"YAML aliases expand to more than {limits.max_alias_expansion} extra values "
                    "(a YAML bomb?)"
                )
            continue
        if key in measured:
            continue
        if key in path:
            raise ValueError("a YAML alias refers to a value that contains it (recursive)")
        path.add(key)
        unique += 1 + sum(1 for child in children if not isinstance(child, (dict, list)))
        if len(path) > limits.max_nesting:
            raise ValueError(f"document nests deeper than {limits.max_nesting} levels")
        stack.append((node, True))
        stack.extend((child, False) for child in children if isinstance(child, (dict, list)))


class DocumentRegistry:
    """Loads documents on demand and resolves references between them."""

    def __init__(
        self, root: Path, *, spec_root: Path | None = None, limits: SpecLimits | None = None
    ) -> None:
        self.root_uri = path_to_uri(root)
        self.limits = limits or SpecLimits()
        self._base_dir = (spec_root or root.parent).resolve()
        self._documents: dict[str, Any] = {}
        self._found: dict[tuple[str, str], Located] = {}
        # The text of each document read as JSON, while the spec loads (see json_text).
        self._json_texts: dict[str, bytes] = {}
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
        if path.exists() and not path.is_file():
            # A FIFO or a device would block or never end; a folder cannot be read.
            raise RefError(Problem(self.name(uri), "", "not a regular file"))
        try:
            # Never more than one byte past the limit, however large the file.
            with path.open("rb") as file:
                data = file.read(self.limits.max_bytes + 1)
        except OSError as exc:
            raise RefError(
                Problem(self.name(uri), "", f"cannot read file: {exc.strerror}")
            ) from None
        if self.on_read is not None:
            self.on_read(uri, len(data))
        try:
            document, is_json = _parse(data, self.limits)
        except ValueError as exc:
            raise RefError(Problem(self.name(uri), "", str(exc))) from None
        self._documents[uri] = document
        if is_json:
            self._json_texts[uri] = data
        return document

    def json_text(self, uri: str) -> bytes | None:
        """The bytes of a document read as JSON (None for YAML, or once forgotten)."""
        return self._json_texts.get(uri)

    def forget_texts(self) -> None:
        self._json_texts.clear()

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
        found = self._found.get((uri, pointer))
        if found is not None:
            return found
        value = self.document(uri)
        base = self._ids.get(uri) if uri not in self._documents else None
        if base is None and uri in self._documents:
            # A document's own pointers always name the same value: big specs point at the
            # same few hundred components thousands of times.
            found = self._found[uri, pointer] = self._walk(value, uri, "", pointer)
            return found
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
            if node.address in seen:
                raise RefError(Problem(self.name(node.uri), node.pointer, "circular $ref chain"))
            if len(seen) >= self.limits.max_ref_chain:
                reason = f"$ref chain longer than {self.limits.max_ref_chain} references"
                raise RefError(Problem(self.name(node.uri), node.pointer, reason))
            seen.add(node.address)
            uri, pointer = self.target(node.uri, node.value["$ref"])
            node = self.lookup(uri, pointer)
        return node
