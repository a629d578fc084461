"""Building twins pauses the cyclic collector and leaves it as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from apitwin.config import Settings, twin_for_spec
from apitwin.server.app import build_twins
from apitwin.state.sqlite import SQLiteStore

EXAMPLE = Path(__file__).parents[2] / "src/apitwin/examples/expert-network/openapi.yaml"


@pytest.fixture
def collector() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector")
@pytest.mark.parametrize("enabled", [True, False])
def test_collector_is_paused_while_building_and_restored(enabled: bool) -> None:
    seen: list[bool] = []
    gc.enable() if enabled else gc.disable()
    twins = build_twins(
        Settings(twins=(twin_for_spec(EXAMPLE),), db=":memory:"),
        SQLiteStore(),
        progress=lambda phase: seen.append(gc.isenabled()),
    )
    assert twins and seen
    assert not any(seen), "the collector ran while the spec loaded"
    assert gc.isenabled() is enabled


@pytest.mark.usefixtures("collector")
def test_what_was_built_is_frozen_out_of_later_collections() -> None:
    gc.enable()
    frozen = gc.get_freeze_count()
    twins = build_twins(Settings(twins=(twin_for_spec(EXAMPLE),), db=":memory:"), SQLiteStore())
    assert gc.get_freeze_count() > frozen
    assert all(obj is not twins[0] for obj in gc.get_objects())  # the collector's view
