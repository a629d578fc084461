"""ASGI adapter: HTTP request → InboundRequest → TwinService → HTTP response.

Written against raw ASGI rather than Starlette's Request/Response: this is the hot path.
"""

from __future__ import annotations

import logging
from typing import Any

from apitwin.http import InboundRequest, MockResponse
from apitwin.logs import log_request, request_log
from apitwin.responses import problem
from apitwin.server.faulty import perform
from apitwin.service.twin import TwinService

Scope = dict[str, Any]
Receive = Any
Send = Any

DEFAULT_MAX_BODY = 10 * 1024 * 1024
log = logging.getLogger("apitwin")


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def to_request(scope: Scope, body: bytes) -> InboundRequest:
    headers: dict[str, str] = {}
    for raw_key, raw_value in scope["headers"]:
        key = raw_key.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    client = scope.get("client")
    return InboundRequest(
        method=scope["method"].upper(),
        path=path.split("?", 1)[0],
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        client=f"{client[0]}:{client[1]}" if client else "",
    )


async def send_response(send: Send, response: MockResponse) -> None:
    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in response.headers
    ]
    if response.status not in (204, 304) and response.status >= 200:
        headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


class MockApp:
    """Serves one or more twins, each under its own path prefix (longest prefix wins)."""

    def __init__(self, twins: list[TwinService], *, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.twins = sorted(twins, key=lambda t: len(t.base_path), reverse=True)
        self.max_body = max_body

    def twin_for(self, path: str) -> TwinService | None:
        for twin in self.twins:
            if twin.relative_path(path) is not None:
                return twin
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_body(receive, self.max_body)
        except BodyTooLarge:
            detail = f"request body exceeds the {self.max_body}-byte limit"
            await send_response(send, problem(413, detail))
            _log_unserved(scope["method"], scope["path"], 413)
            return
        request = to_request(scope, body)
        twin = self.twin_for(request.path)
        if twin is None:
            prefixes = ", ".join(t.base_path or "/" for t in self.twins)
            response = problem(
                404, f"{request.path} is not served here; twins live under: {prefixes}"
            )
            _log_unserved(request.method, request.path, 404)
        else:
            try:
                response = await twin.handle(request)
            except Exception:
                # A bug in the twin must not look like the partner's behaviour, nor kill the server.
                log.exception("internal error on %s %s", request.method, request.path)
                detail = "internal error in apitwin (not an injected fault); see the server log"
                response = problem(500, detail)
        if response.fault is not None:
            await perform(send, response.fault, response, response.fault.rng())
            return
        await send_response(send, response)


def _log_unserved(method: str, path: str, status: int) -> None:
    """Requests no twin answers get a log line too (the twins log their own)."""
    if request_log.isEnabledFor(logging.INFO):
        log_request(
            "",
            connection="-",
            operation=None,
            method=method,
            path=path,
            status=status,
            latency_ms=0.0,
        )
