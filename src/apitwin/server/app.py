"""Composition root: build the ASGI application that serves twins and the control surfaces."""

from __future__ import annotations

from typing import Any

import orjson

from apitwin.server.mock import MockApp, Receive, Scope, Send
from apitwin.service.twin import TwinService

CONTROL_PREFIX = "/_apitwin"


class App:
    """Top-level ASGI app: reserved control paths first, everything else goes to the twins."""

    def __init__(self, twins: list[TwinService], *, control_prefix: str = CONTROL_PREFIX) -> None:
        self.twins = twins
        self.mock = MockApp(twins)
        self.control_prefix = control_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        path: str = scope["path"]
        if path.startswith(self.control_prefix + "/") or path == self.control_prefix:
            await self._control(scope, receive, send)
            return
        await self.mock(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = scope["path"][len(self.control_prefix) :]
        if sub in ("/health", "/health/"):
            body: dict[str, Any] = {
                "status": "ok",
                "twins": [
                    {"title": t.spec.title, "base_path": t.base_path or "/",
                     "operations": len(t.spec.operations)}
                    for t in self.twins
                ],
            }
            await _json(send, 200, body)
            return
        await _json(send, 404, {"type": "about:blank", "title": "Not Found", "status": 404,
                                "detail": f"no control endpoint {scope['path']}"})


async def _json(send: Send, status: int, body: Any) -> None:
    data = orjson.dumps(body)
    content_type = b"application/problem+json" if status >= 400 else b"application/json"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def create_app(twins: list[TwinService]) -> App:
    return App(twins)
