"""Leaf values: strings (by pattern, format or property name), numbers and untyped values."""

from __future__ import annotations

import random
import re
import string
from fractions import Fraction
from itertools import chain
from typing import Any

import rstr

from apitwin.generation import _values as values
from apitwin.generation._errors import GenerationError
from apitwin.generation._merge import is_number

_PATTERN_TRIES = 12

# Printable without control whitespace, whose matching differs between regex engines.
_PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


class _Xeger(rstr.Rstr):
    """rstr with short repeats and an order that does not depend on string hashing."""

    def __init__(self, rng: random.Random) -> None:
        nonword = "".join(c for c in _PRINTABLE if not (c.isalnum() or c == "_"))
        super().__init__(rng, nonword=nonword)
        self._cases = {**self._cases, "any": lambda _: self._random.choice(_PRINTABLE)}

    def _handle_repeat(self, start_range: int, end_range: int, value: str) -> str:
        # rstr repeats `*` and `+` up to 100 times; short strings read better and fit maxLength.
        return str(super()._handle_repeat(start_range, min(end_range, start_range + 6), value))

    def _handle_in(self, value: Any) -> Any:
        # rstr builds negated classes from a set, whose order changes with string hashing.
        candidates = list(chain(*(self._handle_state(i) for i in value)))
        if candidates and candidates[0] is False:
            excluded = set(candidates[1:])
            candidates = [c for c in _PRINTABLE if c not in excluded]
        return self._random.choice(candidates)


class Leaves:
    """Makes leaf values from one random source."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._xeger: _Xeger | None = None

    def simple(self, name: str) -> Any:
        text = values.by_name(name, self.rng, None) if name else None
        if text is not None:
            return text
        pick = self.rng.randrange(3)
        if pick == 0:
            return self.rng.randint(1, 1000)
        return self.rng.random() < 0.5 if pick == 1 else self.rng.choice(values.NOUNS)

    def string(self, merged: dict[str, Any], name: str) -> str:
        low = values.count(merged.get("minLength"), 0)
        high = values.limit(merged.get("maxLength"))
        if high is not None and low > high:
            raise GenerationError(f"minLength {low} is more than maxLength {high}")
        pattern = merged.get("pattern")
        if isinstance(pattern, str):
            return self.patterned(pattern, low, high, name)
        fmt = merged.get("format")
        if fmt in ("byte", "base64"):
            return values.byte(self.rng, low, high)
        if fmt in ("email", "idn-email"):
            return values.email_within(self.rng, low, high)
        if isinstance(fmt, str) and fmt in values.FORMATS:
            return values.fit(values.FORMATS[fmt](self.rng), self.rng, low, high)
        text = values.by_name(name, self.rng, high) if name else None
        if text is None or not _fits(text, low, high):
            text = values.phrase(self.rng)
        return values.fit(text, self.rng, low, high)

    def patterned(self, pattern: str, low: int, high: int | None, name: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error:
            return values.fit(self.rng.choice(values.NOUNS), self.rng, low, high)
        guess = values.by_name(name, self.rng, high) if name else None
        if guess is not None and compiled.search(guess) and _fits(guess, low, high):
            return guess
        if self._xeger is None:
            self._xeger = _Xeger(self.rng)
        for _ in range(_PATTERN_TRIES):
            try:
                text = str(self._xeger.xeger(pattern))
            except Exception:  # constructs rstr cannot reverse (lookbehind, ...)
                break
            if compiled.search(text) and _fits(text, low, high):
                return text
        return values.fit(self.rng.choice(values.NOUNS), self.rng, low, high)

    def number(self, merged: dict[str, Any], name: str, *, integer: bool) -> int | float:
        window = values.number_window(name, integer)
        step = merged.get("multipleOf")
        if integer:
            low, high = values.int_bounds(merged)
            if not (is_number(step) and step > 0):
                return values.pick_int(self.rng, low, high, window)
            target = values.pick_int(self.rng, low, high, window)
            # An integer is a multiple of p/q exactly when it is a multiple of p.
            whole = step if isinstance(step, int) else Fraction(str(step)).numerator
            return int(values.pick_multiple((low, False), (high, False), whole, target))
        bounds = values.float_bounds(merged)
        if not (is_number(step) and step > 0):
            return values.pick_float(self.rng, *bounds, window)
        a, b = values.near(bounds[0][0], bounds[1][0], window)
        return values.pick_multiple(*bounds, step, self.rng.uniform(a, b))


def _fits(text: str, low: int, high: int | None) -> bool:
    return len(text) >= low and (high is None or len(text) <= high)
