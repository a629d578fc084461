"""Transport-neutral request and response values passed through the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl

from apitwin.params import split_query


@dataclass(slots=True)
class InboundRequest:
    method: str  # upper case
    path: str  # full path, still percent-encoded
    query: str  # raw query string
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    client: str = ""
    _query_pairs: list[tuple[str, str]] | None = field(default=None, repr=False)
    _raw_pairs: list[tuple[str, str]] | None = field(default=None, repr=False)
    _cookies: dict[str, str] | None = field(default=None, repr=False)

    @property
    def query_pairs(self) -> list[tuple[str, str]]:
        if self._query_pairs is None:
            self._query_pairs = parse_qsl(self.query, keep_blank_values=True)
        return self._query_pairs

    @property
    def raw_query_pairs(self) -> list[tuple[str, str]]:
        """Query pairs still percent-encoded, for style-aware decoding of parameters."""
        if self._raw_pairs is None:
            self._raw_pairs = split_query(self.query)
        return self._raw_pairs

    @property
    def cookies(self) -> dict[str, str]:
        if self._cookies is None:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(self.headers.get("cookie", ""))
            except Exception:
                jar = SimpleCookie()
            self._cookies = {k: m.value for k, m in jar.items()}
        return self._cookies

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class MockResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    # What the journal needs to know about how the answer came about.
    operation_id: str | None = None
    violations: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""
    fault: Any = None  # a transport-level fault plan the server adapter must perform

    def header(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None
