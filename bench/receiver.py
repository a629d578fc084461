"""Loopback webhook receiver for scenario F: verifies each Standard Webhooks signature.

Raw ASGI under uvicorn (uvloop, httptools), so the receiver is not what limits the rate.

    POST /hook           a delivery: verified, its arrival time (CLOCK_MONOTONIC) kept by id
    POST /_config        {"secret": "whsec_..."}: the endpoint's signing secret
    GET  /_seen/{id}     {"t": arrival} or 404
    GET  /_stats         {"count", "verified", "rejected", "first", "last"}
    POST /_reset         forget every arrival

    python bench/receiver.py --port 8200
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import orjson
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self) -> None:
        self.webhook: Webhook | None = None
        self.seen: dict[str, float] = {}
        self.verified = 0
        self.rejected = 0
        self.first = 0.0
        self.last = 0.0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        if path == "/hook":
            arrived = time.monotonic()
            await self.delivery(scope, body, arrived)
            await reply(send, 204, b"")
        elif path == "/_config":
            self.webhook = Webhook(orjson.loads(body)["secret"])
            await reply(send, 204, b"")
        elif path.startswith("/_seen/"):
            found = self.seen.get(path[len("/_seen/") :])
            if found is None:
                await reply(send, 404, b"{}")
            else:
                await reply(send, 200, orjson.dumps({"t": found}))
        elif path == "/_stats":
            stats = {
                "count": len(self.seen),
                "verified": self.verified,
                "rejected": self.rejected,
                "first": self.first,
                "last": self.last,
            }
            await reply(send, 200, orjson.dumps(stats))
        elif path == "/_reset":
            self.seen.clear()
            self.verified = self.rejected = 0
            self.first = self.last = 0.0
            await reply(send, 204, b"")
        else:
            await reply(send, 404, b"{}")

    async def delivery(self, scope: dict[str, Any], body: bytes, arrived: float) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            if self.webhook is None:
                raise WebhookVerificationError("no secret configured")
            self.webhook.verify(body, headers)
        except WebhookVerificationError:
            self.rejected += 1
            return
        self.verified += 1
        self.seen.setdefault(headers.get("webhook-id", ""), arrived)
        self.first = self.first or arrived
        self.last = arrived


async def reply(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        Receiver(),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


if __name__ == "__main__":
    main()
