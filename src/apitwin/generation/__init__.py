"""Generate JSON values from bundled JSON Schema 2020-12 documents.

Used on the request path to build mock response bodies, so everything derived from a schema
(merged `allOf`s, compiled validators, checked examples) is cached per schema object. Schemas
are treated as immutable once passed in.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from apitwin.generation._build import Builder
from apitwin.generation._errors import GenerationError
from apitwin.generation._index import SchemaIndex

__all__ = ["GenerationError", "Generator"]

_ATTEMPTS = 4
_MAX_CACHED = 1024
_NO_ROOT: dict[str, Any] = {}  # the index shared by boolean schemas


class Generator:
    """Deterministic: the same seed and schema give the same value."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._indexes: dict[int, SchemaIndex] = {}

    def generate(
        self,
        schema: dict[str, Any] | bool,
        *,
        direction: Literal["request", "response"] = "response",
        rng: random.Random | None = None,
        use_examples: bool = True,
    ) -> Any:
        """A value valid against `schema`; GenerationError if none can be found."""
        source = self._rng if rng is None else rng
        index = self._index(schema)
        error: GenerationError | None = None
        for attempt in range(_ATTEMPTS):
            # Later attempts leave optional parts out, and the last one ignores examples too
            # (a valid example can still clash with its context).
            builder = Builder(
                index,
                source,
                direction,
                use_examples=use_examples and attempt < _ATTEMPTS - 1,
                lean=attempt >= _ATTEMPTS - 2,
            )
            try:
                value = builder.value(schema, 0, "")
            except GenerationError as exc:
                if builder.exhausted:
                    raise
                error = exc
                continue
            if index.is_valid(schema, value):
                return value
            reason = index.explain(schema, value)
            error = GenerationError(
                f"could not generate a value valid against the schema: {reason}"
            )
        raise error or GenerationError("could not generate a value")

    def _index(self, schema: dict[str, Any] | bool) -> SchemaIndex:
        root = schema if isinstance(schema, dict) else _NO_ROOT
        index = self._indexes.get(id(root))
        if index is None or index.root is not root:
            if len(self._indexes) >= _MAX_CACHED:
                self._indexes.clear()
            index = SchemaIndex(root)
            self._indexes[id(root)] = index
        return index
