"""The reference docs are generated from the code; the committed copies must be current."""

from __future__ import annotations

import pytest

from apitwin.reference import DOCS

from conftest import REPO


@pytest.mark.parametrize("name", sorted(DOCS))
def test_reference_doc_is_current(name: str) -> None:
    committed = (REPO / "docs" / name).read_text(encoding="utf-8")
    assert committed == DOCS[name](), f"run: python -m apitwin.reference docs  ({name} is stale)"
