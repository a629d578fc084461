"""Real MCP clients of a running server, for the integration tests: the SDK's client over
Streamable HTTP (against `/mcp`) and over stdio (against `apitwin mcp --server URL`), in the
current protocol revision and the previous, session-based one."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from apitwin.config import load_config
from apitwin.server.app import create_app

from conftest import REPO, Running, serve

EXAMPLE_CONFIG = REPO / "src" / "apitwin" / "examples" / "expert-network" / "apitwin.yaml"
CURRENT = "2026-07-28"
PREVIOUS = "2025-11-25"
# (transport, SDK client mode, the protocol revision that mode negotiates)
VARIANTS = [
    ("http", "auto", CURRENT),
    ("http", "legacy", PREVIOUS),
    ("stdio", "auto", CURRENT),
    ("stdio", "legacy", PREVIOUS),
]
VARIANT_IDS = [f"{transport}-{revision}" for transport, _, revision in VARIANTS]


def stdio_params(origin: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "apitwin", "mcp", "--server", origin],
        cwd=str(Path(REPO)),
    )


@asynccontextmanager
async def mcp_client(
    origin: str, transport: str, mode: str, revision: str, **options: Any
) -> AsyncIterator[Client]:
    """A connected client; fails unless it negotiated ``revision``."""
    target: Any = f"{origin}/mcp" if transport == "http" else stdio_params(origin)
    async with Client(target, mode=mode, **options) as client:
        assert client.session.protocol_version == revision
        yield client


def data(result: Any) -> dict[str, Any]:
    """A tool result's structured output, which must be a successful dict."""
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def error_text(result: Any) -> str:
    """A tool result that must be an error; its message."""
    assert result.is_error, result.structured_content
    return str(result.content[0].text)


@contextmanager
def serve_example() -> Iterator[Running]:
    """The bundled example as `apitwin demo` serves it (its apitwin.yaml: connections, fixtures,
    rules, actions), on loopback with fresh in-memory state."""
    app = create_app(load_config(EXAMPLE_CONFIG))
    with serve(app) as origin:
        yield Running(origin, app)
