"""`apitwin listen`: a local webhook receiver that verifies, answers and prints each delivery.

For people whose own service is not running yet: it checks every delivery's signature with the
scheme's verifier from :mod:`apitwin.webhooks.signing`, answers a chosen status (or forwards the
delivery and answers what the target answered), and prints one line (or one JSON object) per
delivery. Given a server and a connection it registers itself as one of the connection's webhook
endpoints, so it learns the signing secret the only legitimate way, when the endpoint is
created, and removes that endpoint again when it stops.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

import httpx2
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from apitwin.errors import ApitwinError, ConfigError
from apitwin.webhooks.signing import (
    DEFAULT_TOLERANCE,
    STALE,
    HmacSigner,
    Signer,
    SigningInput,
    mask_secret,
    signer_for,
)

# Hop-by-hop and framing headers are the forwarding client's own business.
_NOT_FORWARDED = frozenset(
    {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade"}
)
_TIMESTAMP_HEADERS = ("webhook-timestamp", "x-slack-request-timestamp")
_STRIPE_T = re.compile(r"(?:^|,)t=([0-9]{1,19})(?:,|$)")
MAX_BODY = 1024 * 1024  # far above the twin's 256 KiB payload limit


@dataclass(slots=True)
class Options:
    scheme: str = "standard-webhooks"
    secret: str | None = None
    status: int = 200
    reject_status: int = 400
    forward: str | None = None
    tolerance: int = DEFAULT_TOLERANCE
    json: bool = False
    show_body: bool = False


@dataclass(slots=True)
class Delivery:
    """What the receiver saw and did; one printed line or JSON object."""

    at: float
    method: str
    path: str
    event: str | None
    message_id: str | None
    attempt: int
    verified: bool | None  # None: no secret to verify with
    reason: str | None
    status: int
    forwarded: str | None = None
    payload: Any = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(self.at).astimezone().isoformat(timespec="seconds"),
            "method": self.method,
            "path": self.path,
            "event": self.event,
            "message_id": self.message_id,
            "attempt": self.attempt,
            "verified": self.verified,
            "reason": self.reason,
            "status": self.status,
        }
        if self.forwarded is not None:
            data["forwarded"] = self.forwarded
        data["payload"] = self.payload
        return data

    def as_text(self, show_body: bool) -> str:
        clock = datetime.fromtimestamp(self.at).strftime("%H:%M:%S")
        if self.verified is None:
            check = "? not verified (no secret)"
        elif self.verified:
            check = "✓ verified"
        else:
            check = f"✗ {self.reason}"
        line = (
            f"{clock}  {self.event or '(no event type)'}  {self.message_id or '(no id)'}  "
            f"attempt {self.attempt}  {check}  → {self.status}"
        )
        if self.forwarded:
            line += f" ({self.forwarded})"
        if show_body and self.payload is not None:
            pretty = orjson.dumps(self.payload, option=orjson.OPT_INDENT_2).decode()
            line += "\n" + "\n".join("    " + part for part in pretty.splitlines())
        return line


class Listener:
    """The receiving side: verification, the answer and the printed record of each delivery."""

    def __init__(self, options: Options, out: TextIO | None = None) -> None:
        self.options = options
        self.signer: Signer = signer_for(options.scheme)
        self.out = out if out is not None else sys.stdout
        self.seen: Counter[str] = Counter()
        self.client = httpx2.AsyncClient(follow_redirects=False, trust_env=False, timeout=30.0)
        self.app = Starlette(
            routes=[Route("/{path:path}", self.receive, methods=_METHODS)],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.client.aclose()

    async def receive(self, request: Request) -> Response:
        if request.method in ("GET", "HEAD"):
            return PlainTextResponse("apitwin listen: send webhook deliveries here\n")
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("payload too large\n", status_code=413)
        headers = {k.lower(): v for k, v in request.headers.items()}
        now = time.time()
        payload = _payload(body)
        message_id = self._message_id(headers, payload)
        self.seen[message_id or ""] += 1
        verified, reason = self._verify(headers, body, int(now))
        forwarded: str | None = None
        if self.options.forward:
            status, forwarded = await self._forward(request, headers, body)
        else:
            status = self.options.status if verified is not False else self.options.reject_status
        delivery = Delivery(
            at=now,
            method=request.method,
            path=request.url.path,
            event=self._event(headers, payload),
            message_id=message_id,
            attempt=self.seen[message_id or ""],
            verified=verified,
            reason=reason,
            status=status,
            forwarded=forwarded,
            payload=payload,
        )
        self._print(delivery)
        text = "ok\n" if status < 400 else f"{reason or 'rejected'}\n"
        return PlainTextResponse(text, status_code=status)

    def _verify(
        self, headers: Mapping[str, str], body: bytes, now: int
    ) -> tuple[bool | None, str | None]:
        secret = self.options.secret
        if not secret:
            return None, None
        # The verifier reads id and timestamp from the headers; the message carries the body.
        message = SigningInput(msg_id="", timestamp=0, body=body)
        reason = self.signer.explain(
            message, headers, secret, now=now, tolerance=self.options.tolerance
        )
        if reason == STALE:
            reason += _skew(headers, now, self.options.tolerance)
        return reason is None, reason

    def _message_id(self, headers: Mapping[str, str], payload: Any) -> str | None:
        names = ["webhook-id"]
        if isinstance(self.signer, HmacSigner) and self.signer.template.id_header:
            names.insert(0, self.signer.template.id_header.lower())
        for name in names:
            if headers.get(name):
                return headers[name]
        if isinstance(payload, dict) and isinstance(payload.get("id"), str):
            return str(payload["id"])
        return None

    def _event(self, headers: Mapping[str, str], payload: Any) -> str | None:
        if isinstance(self.signer, HmacSigner) and self.signer.template.event_header:
            found = headers.get(self.signer.template.event_header.lower())
            if found:
                return found
        if isinstance(payload, dict):
            for key in ("type", "event", "event_type"):
                if isinstance(payload.get(key), str):
                    return str(payload[key])
        return None

    async def _forward(
        self, request: Request, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str]:
        target = str(self.options.forward)
        sent = {k: v for k, v in headers.items() if k not in _NOT_FORWARDED}
        try:
            response = await self.client.request(request.method, target, content=body, headers=sent)
        except httpx2.HTTPError as exc:
            return 502, f"forward to {target} failed: {type(exc).__name__}"
        return response.status_code, f"forwarded to {target}: {response.status_code}"

    def _print(self, delivery: Delivery) -> None:
        if self.options.json:
            line = orjson.dumps(delivery.as_json()).decode()
        else:
            line = delivery.as_text(self.options.show_body)
        print(line, file=self.out, flush=True)


_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def _payload(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return body[:2000].decode("utf-8", "replace")


def _skew(headers: Mapping[str, str], now: int, tolerance: int) -> str:
    """How far the delivery's timestamp is from this machine's clock, and what to do about it."""
    sent: int | None = None
    for name in _TIMESTAMP_HEADERS:
        value = headers.get(name, "")
        if value.isdigit():
            sent = int(value)
    found = _STRIPE_T.search(headers.get("stripe-signature", ""))
    if found:
        sent = int(found.group(1))
    if sent is None:
        return ""
    offset = sent - now
    side = "ahead of" if offset > 0 else "behind"
    hint = (
        "; the twin's clock was advanced? widen --tolerance"
        if offset > 0
        else "; a replayed or delayed delivery?"
    )
    return f" ({_span(abs(offset))} {side} this machine's clock, tolerance {tolerance} s{hint})"


def _span(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def check_secret(signer: Signer, secret: str) -> None:
    """Refuses, before listening, a secret the scheme's verifier cannot use at all."""
    sample = SigningInput(msg_id="msg_check", timestamp=0, body=b"{}")
    signed = signer.headers(sample, [signer.new_secret()])
    try:
        signer.explain(sample, signed, secret, now=0)
    except ValueError as exc:
        raise ConfigError(f"the secret does not fit the {signer.name} scheme: {exc}") from None


# -- registering with a twin ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    connection_id: str
    endpoint_id: str
    scheme: str
    secret: str


async def register(
    server: str, token: str | None, connection_id: str, url: str, scheme: str | None
) -> Registration:
    """Adds ``url`` as an endpoint of the connection; the answer carries its secret in full."""
    from apitwin.remote import RemoteControl

    control = RemoteControl(server, token)
    try:
        created = await control.add_endpoint(connection_id, url, scheme=scheme)
    finally:
        await control.client.aclose()
    return Registration(
        connection_id, str(created["id"]), str(created["scheme"]), str(created["secret"])
    )


async def unregister(server: str, token: str | None, registration: Registration) -> None:
    from apitwin.remote import RemoteControl

    control = RemoteControl(server, token, timeout=10.0)
    try:
        await control.remove_endpoint(registration.connection_id, registration.endpoint_id)
    finally:
        await control.client.aclose()


# -- running ------------------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is registered (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str, path: str) -> str:
    """The URL the twin should deliver to (a wildcard bind is reached over loopback)."""
    port = sock.getsockname()[1]
    bare = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host.strip("[]"), host.strip("[]"))
    shown = f"[{bare}]" if ":" in bare else bare
    return f"http://{shown}:{port}{path}"


def serve(listener: Listener, sock: socket.socket, on_started: Callable[[], None]) -> None:
    """Runs until Ctrl+C or SIGTERM; returns normally either way, so callers can clean up."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_started()

    config = uvicorn.Config(
        listener.app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        ws="none",
    )
    # uvicorn re-raises the signal that stopped it once it has shut down; SIGTERM's default
    # action would then end the process before the endpoint is removed.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def describe(
    url: str, options: Options, registration: Registration | None, server: str | None
) -> str:
    answer = (
        f"forwarding to {options.forward}"
        if options.forward
        else f"answering {options.status} (rejected signatures {options.reject_status})"
    )
    lines = [f"apitwin listen: receiving webhooks at {url}, {answer}"]
    if registration is not None:
        lines.append(
            f"  registered as endpoint {registration.endpoint_id} of "
            f"{registration.connection_id} on {server} "
            f"({registration.scheme}, secret {mask_secret(registration.secret)}); "
            "removed again on exit"
        )
    elif options.secret:
        lines.append(f"  verifying {options.scheme} signatures with {mask_secret(options.secret)}")
    else:
        lines.append("  no secret given: deliveries are shown but not verified")
    lines.append("  press Ctrl+C to stop")
    return "\n".join(lines)


def run(
    *,
    host: str,
    port: int,
    path: str,
    options: Options,
    scheme: str | None,
    server: str | None,
    connection_id: str | None,
    token: str | None,
) -> int:
    """Serves until stopped. ``scheme`` None: the twin's own (with a server) or Standard
    Webhooks (with ``--secret``)."""
    if (server is None) != (connection_id is None):
        raise ConfigError("--server and --connection go together")
    if server is not None and options.secret:
        raise ConfigError(
            "give either --secret, or --server and --connection (listen then gets its own secret)"
        )
    if not path.startswith("/"):
        raise ConfigError("--path must start with '/'")
    options.scheme = scheme or "standard-webhooks"
    try:
        signer = signer_for(options.scheme)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if options.secret:
        check_secret(signer, options.secret)
    sock = bind(host, port)
    try:
        url = url_of(sock, host, path)
        registration = None
        if server is not None and connection_id is not None:
            registration = asyncio.run(register(server, token, connection_id, url, scheme))
            options.scheme, options.secret = registration.scheme, registration.secret
        listener = Listener(options)
        banner = describe(url, options, registration, server)
        try:
            serve(listener, sock, lambda: print(banner, file=sys.stderr, flush=True))
        finally:
            if registration is not None and server is not None:
                try:
                    asyncio.run(unregister(server, token, registration))
                except ApitwinError as exc:
                    print(
                        f"apitwin listen: could not remove endpoint {registration.endpoint_id}: "
                        f"{exc.message}",
                        file=sys.stderr,
                    )
                else:
                    print(
                        f"apitwin listen: removed endpoint {registration.endpoint_id}",
                        file=sys.stderr,
                    )
    finally:
        sock.close()
    return 0
