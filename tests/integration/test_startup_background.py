"""What start-up leaves for later: the MCP endpoint and the events catalogue are built in the
background from half a second after start-up, so the first API requests do not wait on them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from apitwin.config import Settings, twin_for_spec
from apitwin.server.app import MCP_BUILD_AFTER, App, create_app

EXAMPLE = Path(__file__).parents[2] / "src/apitwin/examples/expert-network/openapi.yaml"


def _app() -> App:
    return create_app(Settings(twins=(twin_for_spec(EXAMPLE),), db=":memory:"))


@pytest.mark.anyio
async def test_nothing_is_built_right_after_start_and_a_quick_stop_builds_nothing() -> None:
    app = _app()
    await app.startup()
    try:
        await asyncio.sleep(MCP_BUILD_AFTER / 5)
        assert app.mcp.app is None and not app.mcp.ready.is_set()
        assert app.twins[0].events._found == {}
    finally:
        started = time.monotonic()
        await app.shutdown()
    assert time.monotonic() - started < MCP_BUILD_AFTER  # did not wait for either build
    assert app.mcp.app is None


@pytest.mark.anyio
async def test_both_are_built_after_the_delay() -> None:
    app = _app()
    await app.startup()
    try:
        await asyncio.wait_for(app.mcp.ready.wait(), 30)
        assert app.mcp.app is not None
        for _ in range(200):
            if app.twins[0].events._steps is None:
                break
            await asyncio.sleep(0.05)
        assert app.twins[0].events._steps is None  # catalogue complete
    finally:
        await app.shutdown()
