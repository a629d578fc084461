"""Leaf values: strings by format or by property name, and numbers within bounds.

A small built-in vocabulary keeps values plausible without a data-faking dependency. Every
function takes the generator's `random.Random`, so output depends only on the seed.
"""

from __future__ import annotations

import base64
import functools
import math
import random
import re
import string
import uuid
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from apitwin.generation._errors import GenerationError
from apitwin.generation._merge import is_number

FIRST = ("Jane", "John", "Maria", "Wei", "Aisha", "Carlos", "Emma", "Liam", "Yuki", "Priya")
LAST = ("Doe", "Smith", "Garcia", "Chen", "Khan", "Muller", "Rossi", "Silva", "Kim", "Novak")
CITIES = ("Lisbon", "Toronto", "Osaka", "Berlin", "Austin", "Nairobi", "Melbourne", "Oslo")
COUNTRIES = (
    ("US", "United States"),
    ("GB", "United Kingdom"),
    ("DE", "Germany"),
    ("FR", "France"),
    ("JP", "Japan"),
    ("BR", "Brazil"),
    ("CA", "Canada"),
)
COMPANIES = ("Acme Corp", "Globex", "Initech", "Umbrella Labs", "Hooli", "Vandelay Industries")
INDUSTRIES = ("Software", "Retail", "Healthcare", "Finance", "Logistics", "Education")
STREETS = ("Main St", "Oak Ave", "Market St", "Maple Rd", "Elm St", "High St")
COLORS = ("red", "green", "blue", "black", "white", "orange", "purple")
TAGS = ("new", "featured", "sale", "popular", "limited", "classic")
STATUSES = ("active", "pending", "inactive", "completed", "archived")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CAD", "AUD")
# fmt: off
NOUNS = (
    "report", "team", "update", "customer", "order", "project", "service", "region", "record",
    "account", "invoice", "product", "event", "ticket", "item", "batch", "task", "plan",
)
ADJECTIVES = (
    "quick", "daily", "simple", "secure", "global", "new", "final", "shared", "primary", "open",
)
WORDS = (*NOUNS, *ADJECTIVES, "the", "a", "for", "with", "and", "every", "across", "each", "in")
# fmt: on


def phrase(rng: random.Random) -> str:
    """Two words, for strings whose name says nothing: "daily report"."""
    return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"


_ALNUM = string.ascii_lowercase + string.digits
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def tokens(name: str) -> list[str]:
    """`photoUrls` -> ['photo', 'urls']; `created_at` -> ['created', 'at']."""
    return list(_tokens(name))


@functools.lru_cache(maxsize=4096)
def _tokens(name: str) -> tuple[str, ...]:
    # Cached: the same property names come with every generated value.
    return tuple(t for t in re.split(r"[^a-z0-9]+", _CAMEL.sub(r"\1_\2", name).lower()) if t)


def singular(name: str) -> str:
    if name.endswith("ies") and len(name) > 4:
        return name[:-3] + "y"
    if name.endswith("s") and not name.endswith("ss") and len(name) > 3:
        return name[:-1]
    return name


def count(value: Any, default: int) -> int:
    return int(value) if is_number(value) and value >= 0 else default


def limit(value: Any) -> int | None:
    return int(value) if is_number(value) and value >= 0 else None


def fit(text: str, rng: random.Random, low: int, high: int | None) -> str:
    """Pad or cut `text` to the length bounds: bounds always win over realism."""
    if len(text) < low:
        text += "".join(rng.choice(_ALNUM) for _ in range(low - len(text)))
    if high is not None and len(text) > high:
        text = text[:high]
    return text


def sentence(rng: random.Random, words: int = 8) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def slug(rng: random.Random, size: int = 10) -> str:
    return "".join(rng.choice(_ALNUM) for _ in range(size))


def uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def date(rng: random.Random) -> str:
    return f"{rng.randint(2019, 2025):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def time(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"


def date_time(rng: random.Random) -> str:
    return f"{date(rng)}T{time(rng)}"


def full_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def username(rng: random.Random) -> str:
    return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}{rng.randint(1, 99)}"


def email(rng: random.Random) -> str:
    return f"{rng.choice(FIRST).lower()}.{rng.choice(LAST).lower()}@example.com"


def email_within(rng: random.Random, low: int, high: int | None) -> str:
    """An email address within the length bounds, shortening the domain if needed."""
    local, domain = email(rng).split("@")
    if high is not None and len(local) + len(domain) + 1 > high:
        domain = "ex.io"
    room = None if high is None else max(1, high - len(domain) - 1)
    return f"{fit(local, rng, max(1, low - len(domain) - 1), room)}@{domain}"


def url(rng: random.Random) -> str:
    return f"https://example.com/{rng.choice(NOUNS)}/{slug(rng, 8)}"


def phone(rng: random.Random) -> str:
    return f"+1555{rng.randint(1000000, 9999999)}"


def ipv6(rng: random.Random) -> str:
    return ":".join(f"{rng.getrandbits(16):x}" for _ in range(8))


def byte(rng: random.Random, low: int = 0, high: int | None = None) -> str:
    size = 12
    if high is not None:
        size = min(size, high // 4 * 3)
    size = max(size, math.ceil(low / 4) * 3)
    return base64.b64encode(bytes(rng.getrandbits(8) for _ in range(size))).decode()


def address(rng: random.Random) -> str:
    return f"{rng.randint(1, 999)} {rng.choice(STREETS)}"


FORMATS: dict[str, Callable[[random.Random], str]] = {
    "date-time": date_time,
    "date": date,
    "time": time,
    "uuid": uuid4,
    "guid": uuid4,
    "email": email,
    "idn-email": email,
    "uri": url,
    "url": url,
    "iri": url,
    "uri-reference": lambda rng: f"/{rng.choice(NOUNS)}/{slug(rng, 6)}",
    "iri-reference": lambda rng: f"/{rng.choice(NOUNS)}/{slug(rng, 6)}",
    "uri-template": lambda rng: f"https://example.com/{rng.choice(NOUNS)}/{{id}}",
    "hostname": lambda rng: f"{rng.choice(NOUNS)}.example.com",
    "idn-hostname": lambda rng: f"{rng.choice(NOUNS)}.example.com",
    "ipv4": lambda rng: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
    "ipv6": ipv6,
    "duration": lambda rng: f"P{rng.randint(1, 30)}DT{rng.randint(1, 23)}H",
    "phone": phone,
    "json-pointer": lambda rng: f"/{rng.choice(NOUNS)}/{rng.randint(0, 9)}",
    "relative-json-pointer": lambda rng: f"{rng.randint(0, 3)}/{rng.choice(NOUNS)}",
    "regex": lambda rng: "^[a-z]+$",
    "byte": byte,
    "base64": byte,
    "binary": lambda rng: slug(rng, 16),
    "password": lambda rng: slug(rng, 16),
}


def by_name(name: str, rng: random.Random, high: int | None) -> str | None:
    """A plausible string for a property called `name`, or None when the name says nothing."""
    parts = tokens(name)
    if not parts:
        return None
    for rule in _RULES:
        found = rule(parts, parts[-1], rng, high)
        if found is not None:
            return found
    return None


_Rule = Callable[[list[str], str, random.Random, int | None], str | None]
_NOT_IDS = {"country", "currency", "language", "postal", "zip", "area", "phone"}


def _contact(parts: list[str], last: str, rng: random.Random, high: int | None) -> str | None:
    if "email" in parts or last == "mail":
        return email(rng)
    if "phone" in parts or last in ("mobile", "tel", "fax"):
        return phone(rng)
    if last in ("url", "uri", "href", "link", "website", "homepage", "avatar", "image", "icon"):
        return url(rng)
    if last in ("at", "timestamp", "datetime") or (last == "date" and len(parts) > 1):
        return date_time(rng)
    if parts == ["date"]:
        return date(rng)
    return None


def _ident(parts: list[str], last: str, rng: random.Random, high: int | None) -> str | None:
    if _NOT_IDS.intersection(parts):
        return None
    if last in ("id", "uuid", "guid") and (high is None or high >= 36):
        return uuid4(rng)
    if last in ("id", "slug", "token", "key", "reference", "ref"):
        return slug(rng, 12)
    if last == "code":
        return slug(rng, 8).upper()
    return None


def _person(parts: list[str], last: str, rng: random.Random, high: int | None) -> str | None:
    joined = "_".join(parts)
    if joined in ("first_name", "given_name", "firstname", "forename"):
        return rng.choice(FIRST)
    if joined in ("last_name", "family_name", "surname", "lastname"):
        return rng.choice(LAST)
    if last in ("username", "login", "handle", "nickname") or joined == "user_name":
        return username(rng)
    if {"company", "organization", "organisation", "publisher"}.intersection(parts):
        return rng.choice(COMPANIES)
    if last in ("name", "fullname", "author", "owner"):
        return full_name(rng)
    if last in ("title", "headline", "subject", "label"):
        return f"{phrase(rng)} {rng.choice(NOUNS)}".title()
    if last in ("description", "summary", "bio", "comment", "note", "notes", "message", "text"):
        return sentence(rng)
    return None


def _place(parts: list[str], last: str, rng: random.Random, high: int | None) -> str | None:
    if last in ("city", "town", "location"):
        return rng.choice(CITIES)
    if "country" in parts or last in ("market", "region"):
        code, country = rng.choice(COUNTRIES)
        return code if (high is not None and high < 4) or last in ("code", "market") else country
    if "street" in parts or last in ("address", "line1", "address1"):
        return address(rng)
    if "postal" in parts or last in ("zip", "zipcode", "postcode"):
        return f"{rng.randint(10000, 99999)}"
    if last in ("currency", "currencies"):
        return rng.choice(CURRENCIES)
    if last in ("language", "locale", "lang"):
        return rng.choice(("en", "de", "fr", "ja", "pt"))
    return None


def _misc(parts: list[str], last: str, rng: random.Random, high: int | None) -> str | None:
    if last == "industry":
        return rng.choice(INDUSTRIES)
    if last in ("status", "state"):
        return rng.choice(STATUSES)
    if last in ("color", "colour"):
        return rng.choice(COLORS)
    if last in ("tag", "tags", "category", "keyword", "genre"):
        return rng.choice(TAGS)
    if last == "version":
        return f"{rng.randint(1, 3)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}"
    if last in ("password", "secret"):
        return slug(rng, 16)
    return None


_RULES: tuple[_Rule, ...] = (_contact, _place, _ident, _person, _misc)

_INT_RANGES: tuple[tuple[tuple[str, ...], int, int], ...] = (
    (("age",), 18, 90),
    (("year",), 1990, 2025),
    (("month",), 1, 12),
    (("day",), 1, 28),
    (("hour",), 0, 23),
    (("minute", "minutes", "second", "seconds"), 0, 59),
    (("rating", "stars"), 1, 5),
    (("percent", "percentage", "volume", "popularity", "progress"), 0, 100),
    (("limit", "per_page", "page_size", "size"), 10, 50),
    (("offset", "page", "index", "position"), 0, 20),
    (("width", "height"), 64, 1024),
    (("ms", "duration", "timeout"), 1000, 300000),
    (("port",), 1024, 65535),
    (("price", "amount", "cost", "balance", "fee", "salary", "total"), 1, 1000),
    (("count", "quantity", "qty", "number", "num"), 1, 100),
    (("id",), 1, 100000),
)
_FLOAT_RANGES: tuple[tuple[tuple[str, ...], float, float], ...] = (
    (("latitude", "lat"), -90.0, 90.0),
    (("longitude", "lng", "lon"), -180.0, 180.0),
    (("confidence", "probability", "ratio", "rate", "score"), 0.0, 1.0),
    (("price", "amount", "cost", "balance", "fee", "total"), 1.0, 500.0),
)


@functools.lru_cache(maxsize=4096)
def number_window(name: str, integer: bool) -> tuple[float, float]:
    """A plausible range for a number named `name` (before the schema's bounds apply)."""
    parts = tokens(name)
    if not integer:
        for words, low, high in _FLOAT_RANGES:
            if any(p in words for p in parts):
                return low, high
    for words, ilow, ihigh in _INT_RANGES:
        if any(p in words for p in parts):
            return ilow, ihigh
    return (1, 1000) if integer else (0.0, 1000.0)


Bound = tuple[float, bool]  # (limit, exclusive)


def int_bounds(schema: dict[str, Any]) -> tuple[float, float]:
    low, high = -math.inf, math.inf
    if is_number(schema.get("minimum")):
        low = math.ceil(schema["minimum"])
    if is_number(schema.get("exclusiveMinimum")):
        low = max(low, math.floor(schema["exclusiveMinimum"]) + 1)
    if is_number(schema.get("maximum")):
        high = math.floor(schema["maximum"])
    if is_number(schema.get("exclusiveMaximum")):
        high = min(high, math.ceil(schema["exclusiveMaximum"]) - 1)
    return low, high


def float_bounds(schema: dict[str, Any]) -> tuple[Bound, Bound]:
    low: Bound = (-math.inf, False)
    high: Bound = (math.inf, False)
    if is_number(schema.get("minimum")):
        low = (schema["minimum"], False)
    if is_number(schema.get("exclusiveMinimum")) and schema["exclusiveMinimum"] >= low[0]:
        low = (schema["exclusiveMinimum"], True)
    if is_number(schema.get("maximum")):
        high = (schema["maximum"], False)
    if is_number(schema.get("exclusiveMaximum")) and schema["exclusiveMaximum"] <= high[0]:
        high = (schema["exclusiveMaximum"], True)
    return low, high


def near(low: float, high: float, window: tuple[float, float]) -> tuple[float, float]:
    """The part of [low, high] inside the plausible `window`, or a short span at a bound."""
    a, b = max(low, window[0]), min(high, window[1])
    if a <= b:
        return a, b
    if low > window[1]:
        return low, min(high, low + 100)
    return max(low, high - 100), high


def pick_int(rng: random.Random, low: float, high: float, window: tuple[float, float]) -> int:
    if low > high:
        raise GenerationError(f"no integer lies between {low} and {high}")
    a, b = near(low, high, window)
    return rng.randint(int(a), int(b))


def pick_float(rng: random.Random, low: Bound, high: Bound, window: tuple[float, float]) -> float:
    a, b = near(low[0], high[0], window)
    for value in (round(rng.uniform(a, b), 2), rng.uniform(a, b), (a + b) / 2, a, b):
        if _inside(value, low, high):
            return value
    raise GenerationError(f"no number lies between {low[0]} and {high[0]}")


def pick_multiple(low: Bound, high: Bound, step: float, target: float) -> int | float:
    """The multiple of `step` within the bounds nearest to `target` (exact for decimal steps)."""
    exact = Fraction(str(step))
    k_low, k_high = _k_bound(low, exact, up=True), _k_bound(high, exact, up=False)
    if k_low > k_high:
        raise GenerationError(f"no multiple of {step} lies between {low[0]} and {high[0]}")
    k = min(max(round(Fraction(str(target)) / exact), k_low), k_high)
    for candidate in dict.fromkeys((k, k + 1, k - 1, 0, k_low, k_high)):
        if k_low <= candidate <= k_high and abs(candidate) < 10**300:
            value = exact * int(candidate)
            if isinstance(step, int):
                return int(value)
            if (float(value) / step).is_integer():
                return float(value)  # a float the validator's division also sees as a multiple
    raise GenerationError(f"no multiple of {step} between the bounds is exact in floating point")


def _k_bound(bound: Bound, exact: Fraction, *, up: bool) -> float:
    value, exclusive = bound
    if not math.isfinite(value):
        return -math.inf if up else math.inf
    quotient = Fraction(str(value)) / exact
    k = math.ceil(quotient) if up else math.floor(quotient)
    if exclusive and k == quotient:
        k += 1 if up else -1
    return k


def _inside(value: float, low: Bound, high: Bound) -> bool:
    above = value > low[0] if low[1] else value >= low[0]
    below = value < high[0] if high[1] else value <= high[0]
    return above and below and math.isfinite(value)
