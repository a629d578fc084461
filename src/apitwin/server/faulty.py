"""Performing an inbound fault plan on the wire, with raw ASGI messages.

What a client sees under uvicorn (httptools or h11; checked against both):

* ``latency``: the normal response, after a seeded delay (at most 30 s).
* ``reset``: the connection closes with no response bytes at all; httpx raises
  ``RemoteProtocolError("Server disconnected without sending a response.")``. It is a FIN, not a
  TCP RST: ASGI gives no access to the socket (an RST needs ``SO_LINGER`` 0), and a server turns an
  app that raises or returns before ``http.response.start`` into a 500. The trick: uvicorn marks the
  response started *before* it serialises the start message, so a start message it refuses (a NUL
  byte in a header value) leaves nothing written; the app then returns, and uvicorn closes the
  transport ("ASGI callable returned without completing response", logged at error level).
* ``empty``: a 2xx status, the response's headers, ``content-length: 0``.
* ``truncate``: ``mode: abort`` declares the full ``content-length``, sends ``bytes`` (default
  half) and closes: httpx raises ``RemoteProtocolError`` (incomplete body). ``mode: complete``
  sends the cut body with a matching length: a well-framed response whose JSON does not parse.
* ``malformed_json``: the body with its last character replaced by ``,}`` — never valid JSON.
* ``wrong_content_type``: the body unchanged under another ``content-type``.
* ``chunk_garbage``: chunked framing (no ``content-length``), half the body, then a chunk of seeded
  garbage bytes, then the connection closes without the terminating chunk: httpx raises
  ``RemoteProtocolError`` (incomplete chunked read). The server writes the chunk sizes itself, so
  they are always well formed; the garbage is in the content and the stream never ends.

Any other kind is the pipeline's business (it shaped ``response`` already); it is sent as is.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Final

from apitwin.faults import FaultPlan, latency_ms
from apitwin.http import MockResponse

Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})
_NO_BODY_STATUSES: Final = frozenset({204, 304})


async def perform(send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random) -> None:
    """Answer with ``response`` as ``plan`` breaks it. Returns once the connection is done with."""
    handler = _HANDLERS.get(plan.kind)
    if handler is None:
        await send_whole(send, response)
    else:
        await handler(send, plan, response, rng)


async def send_whole(send: Send, response: MockResponse, status: int | None = None) -> None:
    """The response as it is (``status`` overrides), with a correct ``content-length``."""
    status = response.status if status is None else status
    headers = _headers(response)
    if status not in _NO_BODY_STATUSES and status >= 200:
        headers.append((b"content-length", str(len(response.body)).encode()))
    await _start(send, status, headers)
    await send({"type": "http.response.body", "body": response.body})


async def drop_connection(send: Send) -> None:
    """Close the connection without sending a response (see the module docstring)."""
    refused = [(b"x-apitwin-abort", b"\x00")]
    try:
        await send({"type": "http.response.start", "status": 502, "headers": refused})
    except Exception:
        return  # uvicorn refused it after marking the response started: nothing was written
    # A server that wrote it anyway sent a status line; leave the body unfinished so the client
    # still sees a broken exchange rather than a clean 502.
    await send({"type": "http.response.body", "body": b"", "more_body": True})


async def _latency(send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random) -> None:
    await asyncio.sleep(latency_ms(plan.params, rng) / 1000)
    await send_whole(send, response)


async def _reset(send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random) -> None:
    await drop_connection(send)


async def _empty(send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random) -> None:
    status = plan.params.get("status") or (response.status if 200 <= response.status < 300 else 200)
    await _start(send, status, [*_headers(response), (b"content-length", b"0")])
    await send({"type": "http.response.body", "body": b""})


async def _truncate(
    send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random
) -> None:
    body = response.body
    cut = body[: min(int(plan.params.get("bytes", len(body) // 2)), len(body))]
    if plan.params.get("mode", "abort") == "complete":
        await send_whole(send, _with(response, body=cut))
        return
    await _start(send, response.status, [*_headers(response), _length(len(body))])
    # more_body with fewer bytes than declared; returning now makes the server close the socket.
    await send({"type": "http.response.body", "body": cut, "more_body": True})


async def _malformed(
    send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random
) -> None:
    await send_whole(send, _with(response, body=malformed_json(response.body), json=True))


async def _content_type(
    send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random
) -> None:
    content_type = str(plan.params.get("content_type") or "text/html; charset=utf-8")
    await send_whole(send, _with(response, content_type=content_type))


async def _garbage(send: Send, plan: FaultPlan, response: MockResponse, rng: random.Random) -> None:
    # No content-length, so the server frames the body as chunked.
    await _start(send, response.status, _headers(response))
    half = response.body[: len(response.body) // 2]
    if half:
        await send({"type": "http.response.body", "body": half, "more_body": True})
    noise = b"\r\n0x;zz\r\n" + bytes(rng.getrandbits(8) for _ in range(32))
    await send({"type": "http.response.body", "body": noise, "more_body": True})


Handler = Callable[[Send, FaultPlan, MockResponse, random.Random], Awaitable[None]]
_HANDLERS: Final[dict[str, Handler]] = {
    "latency": _latency,
    "reset": _reset,
    "empty": _empty,
    "truncate": _truncate,
    "malformed_json": _malformed,
    "wrong_content_type": _content_type,
    "chunk_garbage": _garbage,
}


def malformed_json(body: bytes) -> bytes:
    """``body`` made unparseable: outside a string ``,}`` is a syntax error, inside one the string
    never ends, so no JSON text survives the edit."""
    stripped = body.rstrip()
    return stripped[:-1] + b",}" if stripped else b"{"


def _with(
    response: MockResponse,
    *,
    body: bytes | None = None,
    content_type: str | None = None,
    json: bool = False,
) -> MockResponse:
    headers = list(response.headers)
    current = response.header("content-type") or ""
    if json and "json" not in current.lower():
        content_type = "application/json"
    if content_type is not None:
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        headers.insert(0, ("content-type", content_type))
    return MockResponse(
        response.status,
        headers,
        response.body if body is None else body,
        response.operation_id,
        response.violations,
        response.note,
    )


def _headers(response: MockResponse) -> Headers:
    # Framing is ours to decide per fault; whatever the response carried is dropped.
    encoded = [
        (k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in response.headers
    ]
    return [(k, v) for k, v in encoded if k not in _FRAMING]


def _length(size: int) -> tuple[bytes, bytes]:
    return (b"content-length", str(size).encode())


async def _start(send: Send, status: int, headers: Headers) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
