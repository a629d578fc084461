"""The one error generation raises."""

from __future__ import annotations


class GenerationError(ValueError):
    """The schema cannot be satisfied (or not by this generator)."""
