"""stable_rng seeds on first use; its sequence must be exactly that of a seeded random.Random."""

from __future__ import annotations

import random
import zlib

import pytest

from apitwin.responses import stable_rng

PARTS = [(1, "getPet", 200, "/pets/1", ""), (42, "listPets", 200, "list"), ("x", None, 0.5)]


def reference(parts: tuple[object, ...]) -> random.Random:
    return random.Random(zlib.crc32(repr(parts).encode()))


@pytest.mark.parametrize("parts", PARTS)
def test_every_kind_of_draw_matches_a_seeded_random(parts: tuple[object, ...]) -> None:
    for draw in (
        lambda r: [r.randint(0, 10**9) for _ in range(5)],
        lambda r: r.random(),
        lambda r: r.choice("abcdefgh"),
        lambda r: r.gauss(0, 1),
        lambda r: r.getrandbits(64),
        lambda r: r.sample(range(99), 4),
        lambda r: r.uniform(1, 2),
    ):
        ours, theirs = stable_rng(*parts), reference(parts)
        assert draw(ours) == draw(theirs)
        assert draw(ours) == draw(theirs)  # and the draws after it


def test_state_is_the_seeded_state_before_any_draw() -> None:
    parts = PARTS[0]
    assert stable_rng(*parts).getstate() == reference(parts).getstate()
    reseeded = stable_rng(*parts)
    reseeded.seed(7)
    assert reseeded.random() == random.Random(7).random()
