from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import uvicorn

from apitwin.clock import VirtualClock
from apitwin.config import twin_for_spec
from apitwin.server.app import App
from apitwin.server.transport import uvicorn_http_options
from apitwin.service.twin import TwinService
from apitwin.spec.loader import load_spec
from apitwin.spec.model import Spec
from apitwin.state.sqlite import SQLiteStore

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SPECS = SHARED / "specs"
EXAMPLE = REPO / "src" / "apitwin" / "examples" / "expert-network" / "openapi.yaml"

# Bodies the system under test sends to the bundled example, valid against its schemas.
PROJECT = {
    "title": "Grid-scale storage in Germany",
    "brief": "Speak with operators of grid batteries about procurement.",
    "industry": "energy_resources",
    "geographies": ["DE"],
}
EXPERT = {
    "name": "Mara Quillfeather",
    "headline": "Former VP Procurement at a cell manufacturer",
    "employment_history": [
        {
            "company": "Cellco",
            "title": "VP Procurement",
            "start_date": "2018-01-01",
            "end_date": None,
            "current": True,
        }
    ],
    "hourly_rate": {"amount": 900, "currency": "USD"},
    "compliance": {
        "attested": True,
        "attested_at": "2026-11-01T10:00:00Z",
        "conflicts_declared": False,
    },
}


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio (the server's loop)."""
    return "asyncio"


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock frozen at a fixed instant (tests advance it explicitly)."""
    return VirtualClock(source=lambda: 1_700_000_000.0)


@pytest.fixture
async def store() -> AsyncIterator[SQLiteStore]:
    """An open in-memory store; modules needing another backend define their own."""
    backend = SQLiteStore(":memory:")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def shared_specs() -> list[Path]:
    """Every root spec in the shared corpus (multi-file specs by their root file)."""
    if not SPECS.is_dir():
        return []
    found = sorted(p for p in SPECS.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    found += sorted(SPECS.glob("*/spec/swagger.yaml"))
    return found


def need_specs() -> None:
    if not SPECS.is_dir():
        pytest.skip(f"the shared spec corpus is not at {SPECS}")


@dataclass
class Running:
    """A twin served on loopback, with what a client of it needs."""

    origin: str
    app: App

    @property
    def twin(self) -> TwinService:
        return self.app.twins[0]

    @property
    def url(self) -> str:
        return self.origin + self.twin.base_path

    @property
    def api_key(self) -> str:
        return self.twin.connections.get("default").api_key


def twin_app(spec: Path | Spec, db: str | Path = ":memory:", **options: Any) -> App:
    loaded = (
        spec
        if isinstance(spec, Spec)
        else load_spec(spec, spec_root=options.pop("spec_root", None))
    )
    config = twin_for_spec(_spec_file(loaded), **options)
    store = SQLiteStore(db)
    return App([TwinService(loaded, store, config)], store)


def _spec_file(spec: Spec) -> Path:
    return Path(unquote(urlsplit(spec.source).path))


@contextmanager
def serve_twin(spec: Path | Spec, **options: Any) -> Iterator[Running]:
    app = twin_app(spec, **options)
    with serve(app) as origin:
        yield Running(origin, app)


@contextmanager
def serve(app: Any, **options: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free loopback port; yields the base URL.

    ``options`` go to ``uvicorn.Config`` (the HTTP protocol, say), over the options
    ``apitwin serve`` uses."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {**uvicorn_http_options(), **options}
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


class Receiver:
    """A webhook receiver on loopback that answers from a status script and records requests."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.paths: list[str] = []
        self.answered: dict[str, int] = {}  # webhook-id/attempt marker -> status answered
        self.statuses: list[int] = []
        self.arrived = threading.Condition()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the sender died mid-request (a killed server): nothing was delivered
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        status = self.statuses.pop(0) if self.statuses else 200
        headers["x-receiver-status"] = str(status)
        with self.arrived:
            self.paths.append(scope["path"])
            self.received.append((headers, body))
            self.arrived.notify_all()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    @staticmethod
    def status_of(headers: dict[str, str]) -> int:
        return int(headers["x-receiver-status"])

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
