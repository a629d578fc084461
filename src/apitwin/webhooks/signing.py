"""Webhook signers that reproduce partner platforms' signing schemes byte for byte.

Everything here is pure: no I/O and no clock. The sender passes the attempt's timestamp (from the
twin's virtual clock) in :class:`SigningInput`; a receiver passes ``now`` to ``verify``/``explain``.

What each scheme sends (``signer_for(name).headers(...)``):

* ``standard-webhooks`` (alias ``standard``): ``webhook-id``, ``webhook-timestamp`` and
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``; the key is the
  base64 after ``whsec_``.
* ``standard-webhooks-v1a``: the same headers with ``v1a,<base64 ed25519 signature>``; signs with a
  ``whsk_`` key, verifies with its ``whpk_`` public key (``Ed25519Signer.public_key``).
* ``stripe``: ``Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">``; the key is the
  whole ``whsec_...`` string as UTF-8 (same prefix as Standard Webhooks, different key).
* ``github``: ``X-Hub-Signature-256: sha256=<hex>``, the legacy ``X-Hub-Signature: sha1=<hex>`` that
  GitHub still sends, ``X-GitHub-Event`` and ``X-GitHub-Delivery``; no timestamp.
* ``slack``: ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature: v0=<hex of "v0:{ts}:{body}">``.
* ``shopify``: ``X-Shopify-Hmac-Sha256: <base64 HMAC-SHA256 of body>``, ``X-Shopify-Topic``,
  ``X-Shopify-Webhook-Id``; no timestamp.
* ``custom``: any :class:`CustomHmac` template (the built-in HMAC schemes are presets of it).

Rotation: where the scheme carries a list of signatures (``multi_signature``) ``headers`` signs with
every secret given; GitHub, Slack and Shopify send exactly one, so they sign with ``secrets[0]``:
callers list the current secret first.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from secrets import choice, token_bytes, token_hex
from typing import Any, Final, Literal, Protocol, get_args

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "DEFAULT_TOLERANCE",
    "SCHEMES",
    "CustomHmac",
    "Ed25519Signer",
    "HmacSigner",
    "Signer",
    "SigningInput",
    "mask_secret",
    "signer_for",
]

Algorithm = Literal["sha1", "sha256", "sha512"]
KeyEncoding = Literal["utf8", "base64", "hex", "whsec-base64"]
SignatureEncoding = Literal["hex", "base64", "base64url"]
TimestampUnit = Literal["s", "ms"]

# Every reference verifier (standardwebhooks, stripe, slack_sdk) hard-codes five minutes.
DEFAULT_TOLERANCE: Final = 300

# Reasons returned by ``explain``; short and stable so a receiver can show or match them.
NO_SIGNATURE: Final = "no signature header"
NO_ID: Final = "no message id header"
NO_TIMESTAMP: Final = "no timestamp header"
BAD_TIMESTAMP: Final = "malformed timestamp"
MISMATCH: Final = "signature mismatch"
STALE: Final = "timestamp outside tolerance"

_WHSEC: Final = "whsec_"
_WHSK: Final = "whsk_"
_WHPK: Final = "whpk_"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_CONTENT_FIELDS: Final = frozenset({"id", "timestamp", "body", "event"})
_HEADER_FIELDS: Final = frozenset({"id", "timestamp", "event", "signature"})
_SIGNATURE_CHARS = re.compile(r"[A-Za-z0-9+/=_-]")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Bounded so a hostile header cannot make int() chew on a huge number.
_DIGITS = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class SigningInput:
    """One delivery attempt as the signature sees it."""

    msg_id: str
    timestamp: int  # unix seconds, from the twin's virtual clock
    body: bytes  # the exact bytes sent; never re-serialised
    event_type: str = ""


class Signer(Protocol):
    """A webhook signing scheme, usable by the sender and by the ``apitwin listen`` receiver."""

    @property
    def name(self) -> str: ...

    @property
    def multi_signature(self) -> bool:
        """True if one delivery carries a signature per secret (zero-downtime rotation)."""
        ...

    def headers(self, message: SigningInput, secrets: Sequence[str]) -> dict[str, str]:
        """All headers the scheme sends: signature(s) plus its id/timestamp/event headers."""
        ...

    def verify(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> bool: ...

    def explain(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> str | None:
        """None if the delivery verifies, else a short reason such as ``"signature mismatch"``."""
        ...

    def new_secret(self) -> str:
        """A fresh random secret in the scheme's own format."""
        ...


# --------------------------------------------------------------------------- custom HMAC template


@dataclass(frozen=True, slots=True, kw_only=True)
class CustomHmac:
    """A declarative HMAC scheme.

    ``content_template`` is the signed content, e.g. ``"{timestamp}.{body}"``; placeholders are
    ``{id}``, ``{timestamp}``, ``{body}`` (raw body bytes) and ``{event}``; other text is literal.
    ``header_template`` renders the signature header, e.g. ``"t={timestamp},v1={signature}"``.
    With several secrets, the ``signature_separator``-delimited pieces of ``header_template`` that
    hold ``{signature}`` repeat once per signature: ``t=1,v1=a,v1=b`` (Stripe), ``v1,a v1,b``
    (Standard Webhooks, separator ``" "``).

    On verification only authenticated values matter: the timestamp tolerance is checked only if
    ``{timestamp}`` is in the signed content. Id and timestamp are read from their headers (or, for
    the timestamp, from the signature header) when the scheme sends them, else from the message.
    """

    content_template: str
    header_name: str
    header_template: str = "{signature}"
    algorithm: Algorithm = "sha256"
    key_encoding: KeyEncoding = "utf8"
    signature_encoding: SignatureEncoding = "hex"
    timestamp_header: str | None = None
    id_header: str | None = None
    event_header: str | None = None
    timestamp_unit: TimestampUnit = "s"
    signature_separator: str = ","

    def __post_init__(self) -> None:
        for name, allowed in (
            ("algorithm", Algorithm),
            ("key_encoding", KeyEncoding),
            ("signature_encoding", SignatureEncoding),
            ("timestamp_unit", TimestampUnit),
        ):
            value = getattr(self, name)
            if value not in get_args(allowed):
                raise ValueError(f"{name} must be one of {get_args(allowed)}, not {value!r}")
        _check_template("content_template", self.content_template, _CONTENT_FIELDS)
        _check_template("header_template", self.header_template, _HEADER_FIELDS)
        if "{body}" not in self.content_template:
            raise ValueError("content_template must include {body}: the signature has to cover it")
        if "{signature}" not in self.header_template:
            raise ValueError("header_template must include {signature}")
        sep = self.signature_separator
        # The separator splits received headers back into entries, so it must never occur inside
        # a hex/base64/base64url signature.
        if not isinstance(sep, str) or not sep or _SIGNATURE_CHARS.search(sep):
            raise ValueError(
                "signature_separator must be non-empty and not use signature characters"
            )
        names = [
            n
            for n in (self.header_name, self.timestamp_header, self.id_header, self.event_header)
            if n is not None
        ]
        for header in names:
            if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
                raise ValueError(f"not a valid HTTP header name: {header!r}")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError("signature, timestamp, id and event headers must be distinct")


def _check_template(field: str, template: object, allowed: frozenset[str]) -> None:
    if not isinstance(template, str):
        raise ValueError(f"{field} must be a string")
    unknown = {m.group(1) for m in _PLACEHOLDER.finditer(template)} - allowed
    if unknown:
        raise ValueError(
            f"{field} has unknown placeholder(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )


def _render(template: str, values: Mapping[str, bytes]) -> bytes:
    # Built by hand rather than str.format so the body stays raw bytes and templates cannot
    # reach attributes ("{body.__class__}").
    out = bytearray()
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        out += template[pos : m.start()].encode()
        out += values[m.group(1)]
        pos = m.end()
    out += template[pos:].encode()
    return bytes(out)


def _render_text(template: str, values: Mapping[str, str]) -> str:
    return _render(template, {k: v.encode() for k, v in values.items()}).decode()


def _b64decode(text: str, what: str) -> bytes:
    try:
        # Unpadded input is accepted, as the standard-webhooks libraries do.
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{what} is not valid base64") from exc


def _hmac_key(secret: str, encoding: KeyEncoding) -> bytes:
    if encoding == "utf8":
        key = secret.encode()
    elif encoding == "hex":
        try:
            key = bytes.fromhex(secret)
        except ValueError as exc:
            raise ValueError("secret is not valid hex") from exc
    elif encoding == "base64":
        key = _b64decode(secret, "secret")
    else:
        key = _b64decode(secret.removeprefix(_WHSEC), "whsec_ secret")
    if not key:
        raise ValueError("empty signing secret")
    return key


def _encode_signature(digest: bytes, encoding: SignatureEncoding) -> str:
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64":
        return base64.b64encode(digest).decode("ascii")
    return base64.urlsafe_b64encode(digest).decode("ascii")  # padded, URL-safe alphabet


def _timestamp_text(timestamp: int, unit: TimestampUnit) -> str:
    return str(timestamp * 1000 if unit == "ms" else timestamp)


def _secret_list(secrets: Sequence[str], multi: bool) -> Sequence[str]:
    # A bare str is a Sequence[str] too; signing with each character would be a silent disaster.
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of secrets, not a single string")
    if not secrets:
        raise ValueError("at least one signing secret is required")
    return secrets if multi else secrets[:1]


def _check_header_values(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if any(c in value for c in "\r\n\0"):
            raise ValueError(f"header {name} would contain a control character")
    return headers


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def _same(a: str, b: str) -> bool:
    # compare_digest rejects non-ASCII str, and received headers can hold anything.
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _outside(ts: int, now: int, tolerance: int, *, future_ok: bool) -> bool:
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")
    if ts < now - tolerance:
        return True
    return not future_ok and ts > now + tolerance


def _chunk_pattern(chunk: str) -> re.Pattern[str]:
    # Literal text must match exactly; the first {timestamp} is captured, other fields match any.
    parts: list[str] = []
    pos = 0
    captured = False
    for m in _PLACEHOLDER.finditer(chunk):
        parts.append(re.escape(chunk[pos : m.start()]))
        if m.group(1) == "timestamp" and not captured:
            parts.append("(?P<timestamp>.*?)")
            captured = True
        else:
            parts.append(".*?")
        pos = m.end()
    parts.append(re.escape(chunk[pos:]))
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class HmacSigner:
    """Signer for any :class:`CustomHmac` template (all built-in HMAC schemes use this)."""

    name: str
    template: CustomHmac
    multi_signature: bool = True
    # Stripe's verifier only rejects old timestamps; the others reject both directions.
    accepts_future_timestamps: bool = False
    # Extra signature headers the vendor also sends (GitHub's legacy SHA-1); never verified.
    compat_headers: tuple[CustomHmac, ...] = ()
    secret_factory: Callable[[], str] | None = None

    def headers(self, message: SigningInput, secrets: Sequence[str]) -> dict[str, str]:
        t = self.template
        keys = _secret_list(secrets, self.multi_signature)
        values = {
            "id": message.msg_id,
            "timestamp": _timestamp_text(message.timestamp, t.timestamp_unit),
            "event": message.event_type,
        }
        out: dict[str, str] = {}
        if t.id_header:
            out[t.id_header] = message.msg_id
        if t.timestamp_header:
            out[t.timestamp_header] = values["timestamp"]
        if t.event_header and message.event_type:
            out[t.event_header] = message.event_type
        for spec in (t, *self.compat_headers):
            signatures = [_sign(spec, secret, message.body, values) for secret in keys]
            out[spec.header_name] = _signature_header(spec, signatures, values)
        return _check_header_values(out)

    def verify(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> bool:
        return self.explain(message, headers, secret, now=now, tolerance=tolerance) is None

    def explain(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> str | None:
        t = self.template
        received = _lower(headers)
        signature_header = received.get(t.header_name.lower())
        if not signature_header:
            return NO_SIGNATURE
        chunks = signature_header.split(t.signature_separator)
        both = t.content_template + t.header_template

        msg_id = message.msg_id
        if "{id}" in both and t.id_header:
            found = received.get(t.id_header.lower())
            if not found:
                return NO_ID
            msg_id = found

        ts_text = _timestamp_text(message.timestamp, t.timestamp_unit)
        if "{timestamp}" in both:
            found_ts: str | None = ts_text
            if t.timestamp_header:
                found_ts = received.get(t.timestamp_header.lower())
            elif "{timestamp}" in t.header_template:
                found_ts = _timestamp_from_header(t, chunks)
            if found_ts is None:
                return NO_TIMESTAMP
            if not _DIGITS.fullmatch(found_ts):
                return BAD_TIMESTAMP
            ts_text = found_ts

        event = message.event_type
        if t.event_header:
            event = received.get(t.event_header.lower(), event)

        values = {"id": msg_id, "timestamp": ts_text, "event": event}
        expected = _sign(t, secret, message.body, values)
        wanted = [
            _render_text(piece, {**values, "signature": expected})
            for piece in t.header_template.split(t.signature_separator)
            if "{signature}" in piece
        ]
        if not all(any(_same(w, c) for c in chunks) for w in wanted):
            return MISMATCH

        if "{timestamp}" in t.content_template:
            ts = int(ts_text) // (1000 if t.timestamp_unit == "ms" else 1)
            if _outside(ts, now, tolerance, future_ok=self.accepts_future_timestamps):
                return STALE
        return None

    def new_secret(self) -> str:
        if self.secret_factory is not None:
            return self.secret_factory()
        encoding = self.template.key_encoding
        if encoding == "whsec-base64":
            return _new_whsec()
        if encoding == "base64":
            return base64.b64encode(token_bytes(32)).decode("ascii")
        return token_hex(32)


def _sign(spec: CustomHmac, secret: str, body: bytes, values: Mapping[str, str]) -> str:
    content = _render(
        spec.content_template,
        {
            "id": values["id"].encode(),
            "timestamp": values["timestamp"].encode(),
            "event": values["event"].encode(),
            "body": body,
        },
    )
    digest = hmac.new(_hmac_key(secret, spec.key_encoding), content, spec.algorithm).digest()
    return _encode_signature(digest, spec.signature_encoding)


def _signature_header(
    spec: CustomHmac, signatures: Sequence[str], values: Mapping[str, str]
) -> str:
    pieces: list[str] = []
    for piece in spec.header_template.split(spec.signature_separator):
        if "{signature}" in piece:
            pieces.extend(_render_text(piece, {**values, "signature": s}) for s in signatures)
        else:
            pieces.append(_render_text(piece, values))
    return spec.signature_separator.join(pieces)


def _timestamp_from_header(spec: CustomHmac, chunks: Sequence[str]) -> str | None:
    for piece in spec.header_template.split(spec.signature_separator):
        if "{timestamp}" in piece:
            pattern = _chunk_pattern(piece)
            for chunk in chunks:  # first match wins, as in Stripe's parser
                m = pattern.fullmatch(chunk)
                if m:
                    return m.group("timestamp")
            return None
    return None


# --------------------------------------------------------------------------- ed25519 (v1a)


def _new_whsec() -> str:
    # Svix generates 24-byte keys, the spec's minimum.
    return _WHSEC + base64.b64encode(token_bytes(24)).decode("ascii")


def _private_key(secret: str) -> Ed25519PrivateKey:
    if not secret.startswith(_WHSK):
        raise ValueError("v1a signs with an ed25519 secret key starting with whsk_")
    raw = _b64decode(secret.removeprefix(_WHSK), "whsk_ key")
    # Svix serialises seed || public key (64 bytes); a bare 32-byte seed is accepted as well.
    if len(raw) not in (32, 64):
        raise ValueError("a whsk_ key holds a 32-byte seed or a 64-byte seed+public key")
    key = Ed25519PrivateKey.from_private_bytes(raw[:32])
    if len(raw) == 64 and not hmac.compare_digest(raw[32:], key.public_key().public_bytes_raw()):
        raise ValueError("the whsk_ key's public half does not match its seed")
    return key


def _public_key(secret: str) -> Ed25519PublicKey:
    if secret.startswith(_WHPK):
        raw = _b64decode(secret.removeprefix(_WHPK), "whpk_ key")
        if len(raw) != 32:
            raise ValueError("a whpk_ key holds a 32-byte ed25519 public key")
        return Ed25519PublicKey.from_public_bytes(raw)
    return _private_key(secret).public_key()


@dataclass(frozen=True, slots=True)
class Ed25519Signer:
    """Standard Webhooks ``v1a``: ed25519 over ``"{id}.{timestamp}.{body}"``.

    Secrets are ``whsk_`` + base64(seed || public key). The receiver only needs the public key,
    ``public_key(secret)`` = ``whpk_`` + base64(32-byte public key), derived from the seed; that is
    what the twin exposes to the system under test. ``verify``/``explain`` accept either form.
    """

    name: str = "standard-webhooks-v1a"
    multi_signature: bool = True

    def public_key(self, secret: str) -> str:
        raw = _public_key(secret).public_bytes_raw()
        return _WHPK + base64.b64encode(raw).decode("ascii")

    def headers(self, message: SigningInput, secrets: Sequence[str]) -> dict[str, str]:
        keys = [_private_key(s) for s in _secret_list(secrets, self.multi_signature)]
        ts = str(message.timestamp)
        content = f"{message.msg_id}.{ts}.".encode() + message.body
        signatures = " ".join(
            "v1a," + base64.b64encode(key.sign(content)).decode("ascii") for key in keys
        )
        return _check_header_values(
            {"webhook-id": message.msg_id, "webhook-timestamp": ts, "webhook-signature": signatures}
        )

    def verify(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> bool:
        return self.explain(message, headers, secret, now=now, tolerance=tolerance) is None

    def explain(
        self,
        message: SigningInput,
        headers: Mapping[str, str],
        secret: str,
        *,
        now: int,
        tolerance: int = DEFAULT_TOLERANCE,
    ) -> str | None:
        received = _lower(headers)
        signature_header = received.get("webhook-signature")
        if not signature_header:
            return NO_SIGNATURE
        msg_id = received.get("webhook-id")
        if not msg_id:
            return NO_ID
        ts_text = received.get("webhook-timestamp")
        if ts_text is None:
            return NO_TIMESTAMP
        if not _DIGITS.fullmatch(ts_text):
            return BAD_TIMESTAMP
        key = _public_key(secret)
        content = f"{msg_id}.{ts_text}.".encode() + message.body
        if not any(_ed25519_ok(key, entry, content) for entry in signature_header.split(" ")):
            return MISMATCH
        if _outside(int(ts_text), now, tolerance, future_ok=False):
            return STALE
        return None

    def new_secret(self) -> str:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes_raw() + key.public_key().public_bytes_raw()
        return _WHSK + base64.b64encode(raw).decode("ascii")


def _ed25519_ok(key: Ed25519PublicKey, entry: str, content: bytes) -> bool:
    version, _, value = entry.partition(",")
    if version != "v1a":  # v1 entries may share the header; they are not ours to check
        return False
    try:
        key.verify(base64.b64decode(value, validate=True), content)
    except (binascii.Error, InvalidSignature):
        return False
    return True


# --------------------------------------------------------------------------- presets and lookup

_ALNUM: Final = string.ascii_letters + string.digits

STANDARD_WEBHOOKS: Final = CustomHmac(
    content_template="{id}.{timestamp}.{body}",
    key_encoding="whsec-base64",
    signature_encoding="base64",
    header_name="webhook-signature",
    header_template="v1,{signature}",
    timestamp_header="webhook-timestamp",
    id_header="webhook-id",
    signature_separator=" ",
)
STRIPE: Final = CustomHmac(
    content_template="{timestamp}.{body}",
    header_name="Stripe-Signature",
    header_template="t={timestamp},v1={signature}",
)
GITHUB: Final = CustomHmac(
    content_template="{body}",
    header_name="X-Hub-Signature-256",
    header_template="sha256={signature}",
    id_header="X-GitHub-Delivery",
    event_header="X-GitHub-Event",
)
GITHUB_LEGACY_SHA1: Final = CustomHmac(
    content_template="{body}",
    algorithm="sha1",
    header_name="X-Hub-Signature",
    header_template="sha1={signature}",
)
SLACK: Final = CustomHmac(
    content_template="v0:{timestamp}:{body}",
    header_name="X-Slack-Signature",
    header_template="v0={signature}",
    timestamp_header="X-Slack-Request-Timestamp",
)
SHOPIFY: Final = CustomHmac(
    content_template="{body}",
    signature_encoding="base64",
    header_name="X-Shopify-Hmac-Sha256",
    id_header="X-Shopify-Webhook-Id",
    event_header="X-Shopify-Topic",
)


def _new_stripe_secret() -> str:
    # Dashboard endpoint secrets look like whsec_ + 32 alphanumerics.
    return _WHSEC + "".join(choice(_ALNUM) for _ in range(32))


def _new_slack_secret() -> str:
    return token_hex(16)  # Slack signing secrets are 32 hex characters


_BUILTIN: Final[dict[str, Signer]] = {
    "standard-webhooks": HmacSigner("standard-webhooks", STANDARD_WEBHOOKS),
    "standard-webhooks-v1a": Ed25519Signer(),
    "stripe": HmacSigner(
        "stripe", STRIPE, accepts_future_timestamps=True, secret_factory=_new_stripe_secret
    ),
    "github": HmacSigner(
        "github", GITHUB, multi_signature=False, compat_headers=(GITHUB_LEGACY_SHA1,)
    ),
    "slack": HmacSigner("slack", SLACK, multi_signature=False, secret_factory=_new_slack_secret),
    "shopify": HmacSigner("shopify", SHOPIFY, multi_signature=False),
}
_ALIASES: Final = {"standard": "standard-webhooks"}

SCHEMES: Final[tuple[str, ...]] = (*_BUILTIN, "custom")
"""Canonical scheme names accepted by :func:`signer_for` (plus the alias ``standard``)."""


def signer_for(name: str, options: Mapping[str, Any] | None = None) -> Signer:
    """The signer for a scheme name; ``custom`` takes :class:`CustomHmac` fields as ``options``."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key == "custom":
        allowed = sorted(f.name for f in fields(CustomHmac))
        unknown = sorted(set(options or {}) - set(allowed))
        if unknown:
            raise ValueError(f"unknown custom signing option(s) {unknown}; allowed: {allowed}")
        try:
            return HmacSigner("custom", CustomHmac(**dict(options or {})))
        except TypeError as exc:  # a required field is missing
            raise ValueError(
                f"custom signing needs content_template and header_name: {exc}"
            ) from exc
    if key not in _BUILTIN:
        aliases = ", ".join(f"{a} (= {target})" for a, target in _ALIASES.items())
        raise ValueError(
            f"unknown signing scheme {name!r}; known: {', '.join(SCHEMES)}; aliases: {aliases}"
        )
    if options:
        raise ValueError(f"signing scheme {key!r} takes no options")
    return _BUILTIN[key]


# --------------------------------------------------------------------------- masking

# Only well-known format prefixes are kept verbatim: guessing one in a random secret could leak it.
_KNOWN_PREFIXES: Final = (_WHSEC, _WHSK, _WHPK)


def mask_secret(secret: str) -> str:
    """``whsec_MfKQ…Sw``: the format prefix, then at most 6 characters of the secret body.

    Reveals at most a quarter of the body (4 leading + 2 trailing characters from 24 characters
    on, the last 2 from 12 on, nothing below), enough to tell secrets apart in logs.
    """
    prefix = next((p for p in _KNOWN_PREFIXES if secret.startswith(p)), "")
    body = secret[len(prefix) :]
    if len(body) >= 24:
        return f"{prefix}{body[:4]}…{body[-2:]}"
    if len(body) >= 12:
        return f"{prefix}…{body[-2:]}"
    return f"{prefix}…"
