"""Composition root: build the ASGI application that serves twins and the control surfaces."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson

from apitwin.config import Limits, Settings
from apitwin.errors import ConfigError
from apitwin.server.mock import BodyTooLarge, MockApp, Receive, Scope, Send, read_body
from apitwin.service.control import ControlService
from apitwin.service.twin import TwinService
from apitwin.spec.loader import Phase, Progress, load_spec
from apitwin.spec.refs import SpecLimits
from apitwin.state.store import Store

if TYPE_CHECKING:
    from apitwin.server.admin_api import AdminApi

CONTROL_PREFIX = "/_apitwin"
MCP_PATH = "/mcp"
MCP_READY_TIMEOUT = 30.0
MCP_BUILD_AFTER = 0.5  # seconds after start-up


class McpRunner:
    """The MCP endpoint, built in the background shortly after start-up.

    Importing the MCP SDK costs about a second; the twin answers its API meanwhile. The build
    starts half a second after start-up (the first API requests, a test suite's or a health
    probe's, need not share the process with it) or at the first MCP request, which waits
    until it is ready.
    """

    def __init__(self, control: ControlService, host: str) -> None:
        self.control = control
        self.host = host
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.app: Any = None
        self.task: asyncio.Task[None] | None = None
        self._go = asyncio.Event()

    def start(self, after: float = MCP_BUILD_AFTER) -> None:
        self.task = asyncio.create_task(self._run())
        asyncio.get_running_loop().call_later(after, self._go.set)

    async def _run(self) -> None:
        await self._go.wait()
        build_server = await asyncio.to_thread(_import_mcp)
        server = build_server(self.control)
        self.app = server.streamable_http_app(streamable_http_path=MCP_PATH, host=self.host)
        async with server.session_manager.run():
            self.ready.set()
            # The spec model and MCP's schemas live as long as the server: keep them out of the
            # collector's full passes, which otherwise stall every request for ~100 ms now and then.
            gc.freeze()
            await self.stopping.wait()

    async def stop(self) -> None:
        self.stopping.set()
        if self.task is None:
            return
        if not self._go.is_set():
            self.task.cancel()  # not begun: nothing to build now
        await asyncio.wait([self.task])
        if not self.task.cancelled():
            self.task.result()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._go.set()  # an MCP client is here: build it now if not yet begun
        await asyncio.wait_for(self.ready.wait(), MCP_READY_TIMEOUT)
        await self.app(scope, receive, send)


def _import_mcp() -> Any:
    # The webhook sender's HTTP client and the admin API too, while at it: not at start-up, nor
    # on the first webhook or control call.
    import aiohttp  # noqa: F401

    import apitwin.server.admin_api  # noqa: F401
    from apitwin.mcp_tools import build_server

    return build_server


class App:
    """Top-level ASGI app: reserved control paths first, everything else goes to the twins."""

    def __init__(
        self,
        twins: list[TwinService],
        store: Store,
        *,
        control_prefix: str = CONTROL_PREFIX,
        admin_token: str | None = None,
        origin: str | None = None,
        host: str = "127.0.0.1",
        limits: Limits | None = None,
    ) -> None:
        check_prefixes(twins)
        self.twins = twins
        self.store = store
        self.limits = limits or Limits()
        for twin in twins:
            apply_limits(twin, self.limits)
        if store.shared:
            for twin in twins:
                twin.clock.share(store, twin.name)
        self.started = False
        self.mock = MockApp(twins, max_body=self.limits.request_body_bytes)
        self.control_prefix = control_prefix
        self.control = ControlService(twins, origin or "http://127.0.0.1:8000")
        self._origin_known = origin is not None
        self._admin_token = admin_token
        self._admin: AdminApi | None = None
        self.mcp = McpRunner(self.control, host)

    @property
    def admin(self) -> AdminApi:
        """The admin API, built on first use: serving the twins needs none of its imports
        (Starlette's routing among them), and start-up need not wait for them."""
        if self._admin is None:
            from apitwin.server.admin_api import AdminApi

            self._admin = AdminApi(
                self.control,
                self._admin_token,
                self.control_prefix + "/api",
                max_body=self.limits.request_body_bytes,
            )
        return self._admin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if _declared_length(scope) > self.limits.request_body_bytes:
            # Refused before a byte of it is read, whichever surface it was meant for.
            await self._too_large(send)
            return
        if self.store.shared:
            await self._sync()
        path: str = scope["path"]
        if path.startswith(self.control_prefix + "/") or path == self.control_prefix:
            self._learn_origin(scope)
            await self._control(scope, receive, send)
            return
        if path == MCP_PATH or path.startswith(MCP_PATH + "/"):
            self._learn_origin(scope)
            if not self.admin.authorized_scope(scope):
                await _json(
                    send,
                    401,
                    {
                        "type": "urn:apitwin:unauthorized",
                        "status": 401,
                        "title": "unauthorized",
                        "detail": "MCP needs 'Authorization: Bearer <admin token>'",
                    },
                )
                return
            if scope["method"] == "POST":
                # JSON-RPC messages are small: read them here, so the body limit holds for MCP.
                try:
                    body = await read_body(receive, self.limits.request_body_bytes)
                except BodyTooLarge:
                    await self._too_large(send)
                    return
                receive = _replay(body, receive)
            await self.mcp(scope, receive, send)
            return
        await self.mock(scope, receive, send)

    async def _too_large(self, send: Send) -> None:
        detail = f"the request body exceeds the {self.limits.request_body_bytes}-byte limit"
        await _json(
            send,
            413,
            {
                "type": "urn:apitwin:payload_too_large",
                "title": "payload too large",
                "status": 413,
                "detail": detail,
            },
        )

    async def _sync(self) -> None:
        """Replicas on one database: catch up with the clock and the connections another
        replica changed, before serving (two small reads per twin, side by side)."""
        await asyncio.gather(
            *(twin.clock.sync() for twin in self.twins),
            *(twin.connections.refresh() for twin in self.twins),
        )

    def _learn_origin(self, scope: Scope) -> None:
        """Base URLs handed to agents use the address this server really listens on."""
        server = scope.get("server")
        if not self._origin_known and server:
            host, port = server[0], server[1]
            host = f"[{host}]" if ":" in str(host) else host
            self.control.origin = f"{scope.get('scheme', 'http')}://{host}:{port}"
            self._origin_known = True

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self.started:
            return
        self.started = True
        await self.store.open()
        # Replicas starting together on one database take turns: each finds what the one
        # before it created (default connection, seed data, configured endpoints).
        async with self.store.lock("startup"):
            for twin in self.twins:
                await twin.start()
        self.mcp.start()

    async def shutdown(self) -> None:
        await self.mcp.stop()
        for twin in self.twins:
            await twin.stop()
        await self.store.close()

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = scope["path"][len(self.control_prefix) :]
        if sub == "/api" or sub.startswith("/api/"):
            await self.admin(
                {**scope, "root_path": scope.get("root_path", "") + self.control_prefix + "/api"},
                receive,
                send,
            )
            return
        if sub == "/openapi.json":
            from apitwin.server.admin_api import openapi_document

            await _json(send, 200, openapi_document(self.control_prefix + "/api"))
            return
        if sub in ("/health", "/health/"):
            body: dict[str, Any] = {
                "status": "ok",
                "twins": [
                    {
                        "name": t.name,
                        "title": t.spec.title,
                        "base_path": t.base_path or "/",
                        "operations": len(t.spec.operations),
                    }
                    for t in self.twins
                ],
            }
            await _json(send, 200, body)
            return
        await _json(
            send,
            404,
            {
                "type": "about:blank",
                "title": "Not Found",
                "status": 404,
                "detail": f"no control endpoint {scope['path']}",
            },
        )


async def _json(send: Send, status: int, body: Any) -> None:
    data = orjson.dumps(body)
    content_type = b"application/problem+json" if status >= 400 else b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def check_prefixes(twins: list[TwinService]) -> None:
    seen: dict[str, str] = {}
    names: set[str] = set()
    for twin in twins:
        prefix = twin.base_path or "/"
        if prefix in seen:
            raise ConfigError(
                f"twins {seen[prefix]!r} and {twin.name!r} are both served under {prefix}; "
                "give one of them another base_path"
            )
        if twin.name in names:
            raise ConfigError(f"two twins are named {twin.name!r}; names must be unique")
        seen[prefix] = twin.name
        names.add(twin.name)


def db_label(db: str) -> str:
    """``db`` as banners and logs may show it: a database URL without its password."""
    if "://" not in db:
        return db
    parts = urlsplit(db)
    if parts.password is None:
        return db
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def open_store(db: str) -> Store:
    if db.startswith(("postgres://", "postgresql://")):
        try:
            from apitwin.state.postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"PostgreSQL storage needs its driver ({exc.name or 'psycopg'} is missing): "
                "pip install 'apitwin[postgres]'",
                field="db",
            ) from None
        return PostgresStore(db)
    from apitwin.state.sqlite import SQLiteStore

    return SQLiteStore(db)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over an already read body once, then waits as ``receive`` does."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        message: dict[str, Any] = await receive()
        return message

    return replay


def apply_limits(twin: TwinService, limits: Limits) -> None:
    """The server's limits on one twin's journal, webhook queue and connections."""
    twin.journal.ring_size = limits.journal_entries
    twin.journal.prune_every = max(1, min(100, limits.journal_entries // 10))
    twin.journal.body_limit = limits.journal_body_bytes
    twin.outbox.max_pending = limits.pending_deliveries
    twin.connections.max_connections = limits.connections
    twin.faults.max_rules = limits.fault_rules
    twin.outbox.keep = limits.deliveries_kept


def _declared_length(scope: Scope) -> int:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def build_twins(
    settings: Settings, store: Store, progress: Progress | None = None
) -> list[TwinService]:
    with _collector_paused():
        return _build_twins(settings, store, progress)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Loading a spec allocates hundreds of thousands of objects that all stay: the cyclic
    collector's passes over them free nothing and cost a tenth of the load. Paused meanwhile;
    then what was built is frozen out of its later passes (a load leaves no cyclic garbage)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _build_twins(
    settings: Settings, store: Store, progress: Progress | None = None
) -> list[TwinService]:
    twins = []
    spec_limits = SpecLimits(max_bytes=settings.limits.spec_bytes)
    for config in settings.twins:
        spec = load_spec(
            config.spec, spec_root=config.spec_root, progress=progress, limits=spec_limits
        )
        if progress is not None:
            progress(Phase("inferring resources"))
        twin = TwinService(spec, store, config)
        if progress is not None:
            progress(Phase("inferring resources", True, len(twin.resource_map.resources)))
        twins.append(twin)
    return twins


def create_app(settings: Settings, progress: Progress | None = None) -> App:
    """``progress`` is told each loading phase of each twin (see apitwin.spec.loader.PHASES)."""
    store = open_store(settings.db)
    return App(
        build_twins(settings, store, progress),
        store,
        admin_token=settings.admin_token,
        host=settings.host,
        limits=settings.limits,
    )
