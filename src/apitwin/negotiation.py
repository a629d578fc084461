"""Pick the response: status, media type and example, from the spec, `Accept` and `Prefer`.

Default is the lowest declared 2xx. ``Prefer: code=404, example=NAME, dynamic=true`` selects
another, as Prism users expect.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from apitwin.spec.model import Example, MediaType, Operation, Response, is_json_media


@dataclass(frozen=True, slots=True)
class Preferences:
    code: str | None = None
    example: str | None = None
    dynamic: bool = False


@dataclass(frozen=True, slots=True)
class Choice:
    status: int
    response: Response | None
    media: MediaType | None  # None: no body
    example: Example | None


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 406, or 400 for a Prefer the operation cannot honour
    message: str


def parse_prefer(header: str | None) -> Preferences:
    if not header:
        return Preferences()
    values: dict[str, str] = {}
    for part in header.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        values[key.strip().lower()] = value.strip().strip('"')
    return Preferences(
        code=values.get("code") or None,
        example=values.get("example") or None,
        dynamic=values.get("dynamic", "").lower() == "true",
    )


def status_number(key: str, fallback: int = 200) -> int:
    if key.isdigit():
        return int(key)
    if len(key) == 3 and key[0].isdigit() and key[1:].upper() == "XX":
        return int(key[0]) * 100
    return fallback


def response_for_status(op: Operation, code: int) -> Response | None:
    """The declared response an actual status code falls under (exact, then 4XX, then default)."""
    return (
        op.responses.get(str(code))
        or op.responses.get(f"{code // 100}XX")
        or op.responses.get("default")
    )


def default_response(op: Operation) -> tuple[int, Response | None]:
    found: tuple[int, Response | None] | None = op.memo.get("default_response")
    if found is None:
        found = op.memo["default_response"] = _default_response(op)
    return found


def _default_response(op: Operation) -> tuple[int, Response | None]:
    keys = list(op.responses)
    exact = sorted(int(k) for k in keys if k.isdigit() and 200 <= int(k) < 300)
    if exact:
        return exact[0], op.responses[str(exact[0])]
    if "2XX" in op.responses:
        return 200, op.responses["2XX"]
    if "default" in op.responses:
        return 200, op.responses["default"]
    others = sorted((status_number(k), k) for k in keys if k != "default")
    if others:
        return others[0][0], op.responses[others[0][1]]
    return 204, None


def _accepts(accept: str | None) -> tuple[tuple[str, float], ...]:
    # Clients send a handful of distinct headers; only short ones are kept.
    if accept is not None and len(accept) > 200:
        return _parse_accepts(accept)
    return _known_accepts(accept)


def _parse_accepts(accept: str | None) -> tuple[tuple[str, float], ...]:
    if not accept:
        return (("*/*", 1.0),)
    ranges = []
    for part in accept.split(","):
        media, *params = [p.strip() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if media and q > 0:
            ranges.append((media.lower(), q))
    ranges.sort(key=lambda r: r[1], reverse=True)
    return tuple(ranges)


_known_accepts = functools.lru_cache(maxsize=256)(_parse_accepts)


def _acceptable(media: str, wanted: str) -> bool:
    base = media.split(";", 1)[0].strip().lower()
    if wanted in ("*/*", base) or base in ("*/*",):
        return True
    major = base.split("/", 1)[0]
    return wanted == f"{major}/*"


def pick_media(response: Response, accept: str | None) -> MediaType | Refusal | None:
    if not response.media:
        return None
    candidates: list[MediaType] | None = response.memo.get("candidates")
    if candidates is None:  # JSON first
        candidates = sorted(response.media.values(), key=lambda m: not is_json_media(m.name))
        response.memo["candidates"] = candidates
    for wanted, _ in _accepts(accept):
        for media in candidates:
            if _acceptable(media.name, wanted):
                return media
    offered = ", ".join(response.media)
    return Refusal(406, f"cannot produce any of Accept '{accept}'; this response offers: {offered}")


def choose(op: Operation, prefs: Preferences, accept: str | None) -> Choice | Refusal:
    if prefs.code:
        if (
            not prefs.code.isdigit()
            or (response := response_for_status(op, int(prefs.code))) is None
        ):
            declared = ", ".join(op.responses) or "none"
            return Refusal(
                400, f"Prefer code={prefs.code} is not declared for {op.key}; declared: {declared}"
            )
        status = int(prefs.code)
    else:
        status, response = default_response(op)
    if response is None:
        return Choice(status, None, None, None)
    media = pick_media(response, accept)
    if isinstance(media, Refusal):
        return media
    example = None
    if media is not None and not prefs.dynamic:
        if prefs.example:
            example = next((e for e in media.examples if e.name == prefs.example), None)
            if example is None:
                names = ", ".join(e.name for e in media.examples) or "none"
                return Refusal(
                    400,
                    f"Prefer example={prefs.example} is not declared for "
                    f"{op.key} {status}; declared: {names}",
                )
        elif media.examples:
            example = media.examples[0]
    return Choice(status, response, media, example)
