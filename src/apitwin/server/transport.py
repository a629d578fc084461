"""HTTP/1.1 transport options for uvicorn: a bound on the request line and headers.

httptools (uvicorn's fast parser) keeps every header it is sent, however many; the protocol here
counts their bytes as they arrive and, past the limit, answers 431 and closes the connection
before reading more. With h11 (when httptools is not installed) h11's own bound does the same.
"""

from __future__ import annotations

from typing import Any

import orjson

DEFAULT_MAX_HEADER_BYTES = 64 * 1024


class HeadersTooLarge(Exception):
    """Raised inside a parser callback; the parser stops and the answer is 431."""


def _too_large_response(limit: int) -> bytes:
    body = orjson.dumps(
        {
            "type": "urn:apitwin:headers_too_large",
            "title": "headers too large",
            "status": 431,
            "detail": f"the request line and headers exceed the {limit}-byte limit",
        }
    )
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/problem+json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    return head + body


def _limited_httptools(limit: int) -> type[Any]:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpTools(HttpToolsProtocol):
        max_header_bytes = limit
        _header_bytes = 0

        def on_message_begin(self) -> None:
            self._header_bytes = 0
            super().on_message_begin()

        def _count(self, size: int) -> None:
            self._header_bytes += size
            if self._header_bytes > self.max_header_bytes:
                raise HeadersTooLarge

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)  # ": " and CRLF
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            # The parser reports a callback's exception as a malformed request: say what it was.
            if self._header_bytes > self.max_header_bytes:
                self.transport.write(_too_large_response(self.max_header_bytes))
                self.transport.close()
                return
            super().send_400_response(msg)

    return LimitedHttpTools


def uvicorn_http_options(max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` that bound request headers.

    No WebSocket protocol: nothing apitwin serves speaks it, and loading one (uvicorn picks
    whichever library is installed) costs start-up imports.
    """
    try:
        import httptools  # noqa: F401
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": max_header_bytes, "ws": "none"}
    return {
        "http": _limited_httptools(max_header_bytes),
        "h11_max_incomplete_event_size": max_header_bytes,
        "ws": "none",
    }
