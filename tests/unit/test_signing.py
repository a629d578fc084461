"""Webhook signers: published vectors, independent verifiers, rotation, failures, masking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stripe
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.signature import Clock, SignatureVerifier
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from apitwin.webhooks.signing import (
    BAD_TIMESTAMP,
    DEFAULT_TOLERANCE,
    MISMATCH,
    NO_ID,
    NO_SIGNATURE,
    NO_TIMESTAMP,
    SCHEMES,
    STALE,
    CustomHmac,
    Ed25519Signer,
    HmacSigner,
    Signer,
    SigningInput,
    mask_secret,
    signer_for,
)

VECTORS_PATH = (
    Path(__file__).resolve().parents[3] / "shared" / "webhooks" / "signature-vectors.yaml"
)
MISSING = "published vectors shared/webhooks/signature-vectors.yaml (beside the repo) not found"
VECTORS: dict[str, Any] = (
    yaml.safe_load(VECTORS_PATH.read_text("utf-8")) if VECTORS_PATH.is_file() else {}
)
# Sections of the vector file and where each is exercised; a new section must be added here.
VECTOR_SECTIONS = {
    "standard_webhooks",
    "standard_webhooks_negative_sigs_for_vector_1",
    "stripe",
    "github",
    "shopify",
    "slack",
    "zoom",
    "convoy",
    "hubspot",
    "twilio",
}


def vectors(section: str, keep: Callable[[Any], bool] = lambda _: True) -> list[Any]:
    if not VECTORS:
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING), id="no-vectors")]
    entries = VECTORS.get(section) or []
    return [pytest.param(e, id=f"{section}-{i}") for i, e in enumerate(entries) if keep(e)]


def whsk(seed: bytes) -> str:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return "whsk_" + base64.b64encode(seed + key.public_key().public_bytes_raw()).decode()


V1A_KEY = (
    "whsk_6Xb/dCcHpPea21PS1N9VY/NZW723CEc77N4rJCubMbfVKIDij2HKpMKkioLlX0dRqSKJp4AJ6p9lMicMFs6Kvg=="
)
V1A_KEY_2 = whsk(bytes(range(32)))

# Two secrets per scheme: the first is "current", the second the one being rotated in or out.
SECRETS: dict[str, tuple[str, str]] = {
    "standard-webhooks": (
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
    ),
    "standard-webhooks-v1a": (V1A_KEY, V1A_KEY_2),
    "stripe": ("whsec_test_secret", "whsec_rotated_secret"),
    "github": ("It's a Secret to Everybody", "a different secret"),
    "slack": ("8f742231b10e8888abcd99yyyzzz85a5", "0123456789abcdef0123456789abcdef"),
    "shopify": ("shop-secret", "shop-secret-2"),
    "custom": ("custom-secret-one", "custom-secret-two"),
}
# Exercises every template feature at once: id/event headers, a timestamp read back out of the
# signature header, milliseconds, SHA-512, base64url and a non-default separator.
CUSTOM_OPTIONS: dict[str, Any] = {
    "content_template": "{id}:{timestamp}:{event}:{body}",
    "algorithm": "sha512",
    "key_encoding": "utf8",
    "signature_encoding": "base64url",
    "header_name": "X-Twin-Signature",
    "header_template": "ts={timestamp};sig={signature}",
    "signature_separator": ";",
    "id_header": "X-Twin-Id",
    "event_header": "X-Twin-Event",
    "timestamp_unit": "ms",
}
TIMESTAMPED = ("standard-webhooks", "standard-webhooks-v1a", "stripe", "slack", "custom")
UNTIMED = ("github", "shopify")
MULTI = ("standard-webhooks", "standard-webhooks-v1a", "stripe", "custom")
SINGLE = ("github", "slack", "shopify")

MSG = SigningInput(
    msg_id="msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    timestamp=1674087231,
    body=b'{"type":"invoice.paid","data":{"id":"in_1","amount":1200}}',
    event_type="invoice.paid",
)


def make_signer(name: str) -> Signer:
    return signer_for(name, CUSTOM_OPTIONS if name == "custom" else None)


def custom(**options: Any) -> Signer:
    return signer_for("custom", options)


def now_message(body: bytes = b'{"type":"ping","n":1}') -> SigningInput:
    # The reference libraries check against the real clock, so these messages use it.
    return SigningInput("msg_live", int(time.time()), body, "ping")


class FrozenClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


# --------------------------------------------------------------------------- published vectors


def test_every_section_of_the_vector_file_is_exercised() -> None:
    if not VECTORS:
        pytest.skip(MISSING)
    assert set(VECTORS) == VECTOR_SECTIONS


@pytest.mark.parametrize(
    "vector", vectors("standard_webhooks", lambda e: e.get("scheme", "v1") == "v1")
)
def test_standard_webhooks_signer_reproduces_the_published_v1_vectors(vector: Any) -> None:
    signer = signer_for("standard-webhooks")
    msg = SigningInput(vector["id"], vector["ts"], vector["body"].encode())

    headers = signer.headers(msg, [vector["secret"]])

    assert headers == {
        "webhook-id": vector["id"],
        "webhook-timestamp": str(vector["ts"]),
        "webhook-signature": vector["sig"],
    }
    assert signer.explain(msg, headers, vector["secret"], now=vector["ts"]) is None


@pytest.mark.parametrize(
    "vector", vectors("standard_webhooks", lambda e: e.get("scheme", "v1") == "v1a")
)
def test_v1a_signer_reproduces_the_published_ed25519_vector_and_public_key(vector: Any) -> None:
    signer = Ed25519Signer()
    msg = SigningInput(vector["id"], vector["ts"], vector["body"].encode())

    headers = signer.headers(msg, [vector["secret_key"]])

    assert headers["webhook-signature"] == vector["sig"]
    assert signer.public_key(vector["secret_key"]) == vector["public_key"]
    assert signer.explain(msg, headers, vector["public_key"], now=vector["ts"]) is None


@pytest.mark.parametrize(
    "vector", vectors("standard_webhooks", lambda e: e.get("scheme", "v1") == "v1a")
)
def test_v1a_verification_skips_v1_entries_sharing_the_signature_header(vector: Any) -> None:
    # The spec's example header carries a v1 and a v1a entry side by side.
    msg = SigningInput(vector["id"], vector["ts"], vector["body"].encode())
    headers = {
        "webhook-id": vector["id"],
        "webhook-timestamp": str(vector["ts"]),
        "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= " + vector["sig"],
    }
    assert Ed25519Signer().verify(msg, headers, vector["public_key"], now=vector["ts"])


@pytest.mark.parametrize("bad_sig", vectors("standard_webhooks_negative_sigs_for_vector_1"))
def test_standard_webhooks_rejects_the_published_negative_signatures(bad_sig: Any) -> None:
    vector = VECTORS["standard_webhooks"][0]
    msg = SigningInput(vector["id"], vector["ts"], vector["body"].encode())
    headers = {
        "webhook-id": vector["id"],
        "webhook-timestamp": str(vector["ts"]),
        "webhook-signature": bad_sig,
    }
    signer = signer_for("standard-webhooks")

    assert not signer.verify(msg, headers, vector["secret"], now=vector["ts"])
    assert signer.explain(msg, headers, vector["secret"], now=vector["ts"]) == MISMATCH
    # Published positive case: wrong and unknown-version entries around the right one still pass.
    headers["webhook-signature"] = f"{bad_sig} v2,Zm9v {vector['sig']}"
    assert signer.verify(msg, headers, vector["secret"], now=vector["ts"])


@pytest.mark.parametrize("vector", vectors("stripe"))
def test_stripe_signer_reproduces_the_derived_vector(vector: Any) -> None:
    msg = SigningInput("evt_test_webhook", vector["ts"], vector["body"].encode())

    headers = signer_for("stripe").headers(msg, [vector["secret"]])

    assert headers == {"Stripe-Signature": vector["header"]}
    assert stripe.WebhookSignature.verify_header(
        vector["body"], headers["Stripe-Signature"], vector["secret"], tolerance=None
    )


@pytest.mark.parametrize("vector", vectors("github"))
def test_github_signer_reproduces_the_published_vector(vector: Any) -> None:
    msg = SigningInput("72d3162e-cc78-11e3-81ab-4c9367dc0958", 0, vector["body"].encode(), "push")

    headers = signer_for("github").headers(msg, [vector["secret"]])

    assert headers["X-Hub-Signature-256"] == vector["header"]
    assert headers["X-GitHub-Event"] == "push"
    assert headers["X-GitHub-Delivery"] == msg.msg_id


@pytest.mark.parametrize("vector", vectors("shopify"))
def test_shopify_signer_reproduces_the_vector(vector: Any) -> None:
    msg = SigningInput("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", 0, vector["body"].encode())

    headers = signer_for("shopify").headers(msg, [vector["secret"]])

    assert headers["X-Shopify-Hmac-Sha256"] == vector["header"]


@pytest.mark.parametrize("vector", vectors("slack"))
def test_slack_signer_reproduces_the_published_vector(vector: Any) -> None:
    msg = SigningInput("", int(vector["ts"]), vector["body"].encode())

    headers = signer_for("slack").headers(msg, [vector["secret"]])

    assert headers == {
        "X-Slack-Request-Timestamp": vector["ts"],
        "X-Slack-Signature": vector["header"],
    }
    verifier = SignatureVerifier(vector["secret"], clock=FrozenClock(int(vector["ts"])))
    assert verifier.is_valid_request(msg.body, headers)


@pytest.mark.parametrize("vector", vectors("zoom"))
def test_custom_template_reproduces_zoom_signature_and_url_validation_token(vector: Any) -> None:
    zoom = custom(
        content_template="v0:{timestamp}:{body}",
        header_name="x-zm-signature",
        header_template="v0={signature}",
        timestamp_header="x-zm-request-timestamp",
    )
    msg = SigningInput("", int(vector["ts"]), vector["body"].encode())
    assert zoom.headers(msg, [vector["secret"]]) == {
        "x-zm-request-timestamp": vector["ts"],
        "x-zm-signature": vector["header"],
    }
    # The endpoint.url_validation answer is the same HMAC, hex, over the plainToken alone.
    token = custom(content_template="{body}", header_name="X-Token")
    plain = SigningInput("", 0, vector["plainToken"].encode())
    assert token.headers(plain, [vector["secret"]])["X-Token"] == vector["encryptedToken"]


@pytest.mark.parametrize("vector", vectors("convoy"))
def test_custom_template_reproduces_convoy_simple_and_advanced_signatures(vector: Any) -> None:
    secret = vector["secret"]
    body = vector["body"].encode()
    for encoding in ("hex", "base64"):
        simple = custom(
            content_template="{body}",
            signature_encoding=encoding,
            header_name="X-Convoy-Signature",
        )
        headers = simple.headers(SigningInput("", 0, body), [secret])
        assert headers["X-Convoy-Signature"] == vector[f"simple_sha256_{encoding}"]

        expected = vector[f"advanced_sha256_{encoding}"]
        match = re.match(r"t=(\d+),", expected)
        assert match is not None
        advanced = custom(
            content_template="{timestamp},{body}",  # Convoy joins with a comma, not a dot
            signature_encoding=encoding,
            header_name="X-Convoy-Signature",
            header_template="t={timestamp},v1={signature}",
        )
        msg = SigningInput("", int(match.group(1)), body)
        assert advanced.headers(msg, [secret])["X-Convoy-Signature"] == expected


@pytest.mark.parametrize("vector", vectors("hubspot"))
def test_custom_template_reproduces_hubspot_v3_with_millisecond_timestamps(vector: Any) -> None:
    if vector["version"] != "v3":
        pytest.skip(
            f"HubSpot {vector['version']} is a plain SHA-256 of secret + content, not an HMAC; "
            "apitwin has no signer for it"
        )
    seconds, millis = divmod(int(vector["ts_ms"]), 1000)
    assert millis == 0  # the twin's clock has whole seconds
    hubspot = custom(
        # Method and URI are fixed per endpoint, so they are literal text in the template.
        content_template=vector["method"] + vector["uri"] + "{body}{timestamp}",
        signature_encoding="base64",
        header_name="X-HubSpot-Signature-v3",
        timestamp_header="X-HubSpot-Request-Timestamp",
        timestamp_unit="ms",
    )
    msg = SigningInput("", seconds, vector["body"].encode())

    headers = hubspot.headers(msg, [vector["secret"]])

    assert headers == {
        "X-HubSpot-Request-Timestamp": vector["ts_ms"],
        "X-HubSpot-Signature-v3": vector["sig"],
    }
    assert hubspot.verify(msg, headers, vector["secret"], now=seconds)


@pytest.mark.parametrize("vector", vectors("twilio"))
def test_custom_template_mac_matches_twilio_over_its_canonical_string(vector: Any) -> None:
    # apitwin has no Twilio signer (SigningInput carries no URL); these vectors pin the custom
    # template's SHA-1/SHA-256 + base64 path over Twilio's canonical string, built here.
    first = VECTORS["twilio"][0]
    source = first if vector.get("same_as") == "first" else vector
    if "json_body" in source:
        body_hash = hashlib.sha256(source["json_body"].encode()).hexdigest()
        assert body_hash == source["bodySHA256"]
        assert source["uri"].endswith("bodySHA256=" + body_hash)
        canonical = source["uri"]
    else:
        params = sorted(source["params"].items())
        canonical = source["uri"] + "".join(f"{k}{v}" for k, v in params)
    algorithm = "sha256" if vector.get("algorithm") == "HMAC_SHA256" else "sha1"
    twilio = custom(
        content_template="{body}",
        algorithm=algorithm,
        signature_encoding="base64",
        header_name="X-Twilio-Signature",
    )
    msg = SigningInput("", 0, canonical.encode())

    # The JSON-body vector comes from the same test module as the first, so shares its token.
    token = source.get("token", first["token"])

    signature = twilio.headers(msg, [token])["X-Twilio-Signature"]

    assert signature == vector.get("sig", vector.get("sha1"))


# --------------------------------------------------------------------------- independent verifiers


def test_standard_webhooks_library_accepts_our_headers_for_each_rotated_secret() -> None:
    msg = now_message()
    first, second = SECRETS["standard-webhooks"]
    headers = signer_for("standard-webhooks").headers(msg, [first, second])

    for secret in (first, second):
        assert Webhook(secret).verify(msg.body, headers) == {"type": "ping", "n": 1}


def test_standard_webhooks_library_rejects_our_headers_for_a_tampered_body() -> None:
    msg = now_message()
    secret = SECRETS["standard-webhooks"][0]
    headers = signer_for("standard-webhooks").headers(msg, [secret])

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"type":"ping","n":2}', headers)


def test_stripe_library_accepts_our_header_for_each_rotated_secret() -> None:
    msg = now_message()
    first, second = SECRETS["stripe"]
    header = signer_for("stripe").headers(msg, [first, second])["Stripe-Signature"]

    for secret in (first, second):
        assert stripe.WebhookSignature.verify_header(msg.body, header, secret, tolerance=300)


def test_stripe_library_and_our_verifier_agree_that_an_old_timestamp_is_stale() -> None:
    msg = SigningInput("evt_1", int(time.time()) - DEFAULT_TOLERANCE - 5, b'{"id":"evt_1"}')
    secret = SECRETS["stripe"][0]
    headers = signer_for("stripe").headers(msg, [secret])

    with pytest.raises(stripe.SignatureVerificationError, match="tolerance"):
        stripe.WebhookSignature.verify_header(
            msg.body, headers["Stripe-Signature"], secret, tolerance=DEFAULT_TOLERANCE
        )
    now = int(time.time())
    assert signer_for("stripe").explain(msg, headers, secret, now=now) == STALE


def test_slack_sdk_accepts_our_headers_and_rejects_a_tampered_body() -> None:
    msg = now_message(b"token=abc&team_id=T1&command=%2Ftwin&text=hello")
    secret = SECRETS["slack"][0]
    headers = signer_for("slack").headers(msg, [secret])
    verifier = SignatureVerifier(secret, clock=FrozenClock(msg.timestamp))

    assert verifier.is_valid_request(msg.body, headers)
    assert not verifier.is_valid_request(msg.body + b"&x=1", headers)


def test_github_headers_verify_with_stdlib_hmac_for_both_signature_headers() -> None:
    msg = SigningInput(
        "d1f6c3a0-0000-11ef-8000-000000000001", 0, b'{"zen":"Keep it logical."}', "ping"
    )
    secret = SECRETS["github"][0]

    headers = signer_for("github").headers(msg, [secret])

    sha256 = hmac.new(secret.encode(), msg.body, hashlib.sha256).hexdigest()
    sha1 = hmac.new(secret.encode(), msg.body, hashlib.sha1).hexdigest()
    assert hmac.compare_digest(headers["X-Hub-Signature-256"], f"sha256={sha256}")
    assert hmac.compare_digest(headers["X-Hub-Signature"], f"sha1={sha1}")
    assert headers["X-GitHub-Event"] == "ping"
    assert headers["X-GitHub-Delivery"] == msg.msg_id


def test_shopify_headers_verify_with_stdlib_hmac_and_carry_topic_and_webhook_id() -> None:
    msg = SigningInput(
        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043", 0, b'{"id":820982911946154500}', "orders/create"
    )
    secret = SECRETS["shopify"][0]

    headers = signer_for("shopify").headers(msg, [secret])

    digest = base64.b64encode(hmac.new(secret.encode(), msg.body, hashlib.sha256).digest())
    assert hmac.compare_digest(headers["X-Shopify-Hmac-Sha256"].encode(), digest)
    assert headers["X-Shopify-Topic"] == "orders/create"
    assert headers["X-Shopify-Webhook-Id"] == msg.msg_id


def test_v1a_headers_verify_with_cryptography_for_each_rotated_key() -> None:
    signer = Ed25519Signer()
    first, second = SECRETS["standard-webhooks-v1a"]
    headers = signer.headers(MSG, [first, second])
    content = f"{MSG.msg_id}.{MSG.timestamp}.".encode() + MSG.body

    entries = headers["webhook-signature"].split(" ")
    assert len(entries) == 2
    for secret, entry in zip((first, second), entries, strict=True):
        version, _, value = entry.partition(",")
        assert version == "v1a"
        public = base64.b64decode(signer.public_key(secret).removeprefix("whpk_"))
        Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(value), content)


# --------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("name", MULTI)
def test_rotation_sends_one_signature_per_secret_and_each_secret_verifies(name: str) -> None:
    signer = make_signer(name)
    first, second = SECRETS[name]

    both = signer.headers(MSG, [first, second])

    assert signer.multi_signature
    for secret in (first, second):
        assert signer.explain(MSG, both, secret, now=MSG.timestamp) is None
        assert both != signer.headers(MSG, [secret])


def test_rotated_headers_have_the_vendor_list_shapes() -> None:
    v1a = Ed25519Signer().headers(MSG, SECRETS["standard-webhooks-v1a"])
    assert re.fullmatch(r"v1a,\S+ v1a,\S+", v1a["webhook-signature"])
    sw = signer_for("standard-webhooks").headers(MSG, SECRETS["standard-webhooks"])
    assert re.fullmatch(r"v1,\S+ v1,\S+", sw["webhook-signature"])
    st_header = signer_for("stripe").headers(MSG, SECRETS["stripe"])["Stripe-Signature"]
    assert re.fullmatch(rf"t={MSG.timestamp},v1=[0-9a-f]{{64}},v1=[0-9a-f]{{64}}", st_header)
    twin = make_signer("custom").headers(MSG, SECRETS["custom"])["X-Twin-Signature"]
    assert re.fullmatch(rf"ts={MSG.timestamp}000;sig=[\w-]+=*;sig=[\w-]+=*", twin)


@pytest.mark.parametrize("name", SINGLE)
def test_single_signature_schemes_sign_with_the_first_secret_only(name: str) -> None:
    signer = make_signer(name)
    current, previous = SECRETS[name]

    headers = signer.headers(MSG, [current, previous])

    assert not signer.multi_signature
    assert headers == signer.headers(MSG, [current])
    assert signer.explain(MSG, headers, current, now=MSG.timestamp) is None
    assert signer.explain(MSG, headers, previous, now=MSG.timestamp) == MISMATCH


# --------------------------------------------------------------------------- failure reasons


@pytest.mark.parametrize("name", SCHEMES)
def test_tampered_body_fails_with_signature_mismatch(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = signer.headers(MSG, [secret])
    tampered = SigningInput(MSG.msg_id, MSG.timestamp, MSG.body.replace(b"1200", b"9999"))

    assert not signer.verify(tampered, headers, secret, now=MSG.timestamp)
    assert signer.explain(tampered, headers, secret, now=MSG.timestamp) == MISMATCH


@pytest.mark.parametrize("name", SCHEMES)
def test_wrong_secret_fails_with_signature_mismatch(name: str) -> None:
    signer = make_signer(name)
    right, wrong = SECRETS[name]
    headers = signer.headers(MSG, [right])

    assert not signer.verify(MSG, headers, wrong, now=MSG.timestamp)
    assert signer.explain(MSG, headers, wrong, now=MSG.timestamp) == MISMATCH


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_timestamp_older_than_the_tolerance_fails_as_outside_tolerance(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = signer.headers(MSG, [secret])
    edge = MSG.timestamp + DEFAULT_TOLERANCE

    assert signer.verify(MSG, headers, secret, now=edge)
    assert not signer.verify(MSG, headers, secret, now=edge + 1)
    assert signer.explain(MSG, headers, secret, now=edge + 1) == STALE
    assert signer.explain(MSG, headers, secret, now=MSG.timestamp + 60, tolerance=30) == STALE


@pytest.mark.parametrize("name", TIMESTAMPED)
def test_timestamp_too_far_in_the_future_fails_except_for_stripe(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = signer.headers(MSG, [secret])
    now = MSG.timestamp - DEFAULT_TOLERANCE - 1

    # stripe-python only rejects old timestamps; the receiver mirrors each vendor's verifier.
    expected = None if name == "stripe" else STALE
    assert signer.explain(MSG, headers, secret, now=now) == expected


@pytest.mark.parametrize("name", UNTIMED)
def test_schemes_without_a_timestamp_verify_regardless_of_the_clock(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = signer.headers(MSG, [secret])

    assert signer.verify(MSG, headers, secret, now=MSG.timestamp + 10 * 365 * 86400)


@pytest.mark.parametrize("name", SCHEMES)
def test_missing_signature_header_is_reported(name: str) -> None:
    signer = make_signer(name)

    assert not signer.verify(MSG, {}, SECRETS[name][0], now=MSG.timestamp)
    assert signer.explain(MSG, {}, SECRETS[name][0], now=MSG.timestamp) == NO_SIGNATURE


@pytest.mark.parametrize("name", ["standard-webhooks", "standard-webhooks-v1a"])
def test_missing_or_malformed_standard_webhooks_metadata_is_reported(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = signer.headers(MSG, [secret])

    def without(header: str) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k != header}

    assert signer.explain(MSG, without("webhook-id"), secret, now=MSG.timestamp) == NO_ID
    assert signer.explain(MSG, without("webhook-timestamp"), secret, now=MSG.timestamp) == (
        NO_TIMESTAMP
    )
    bad = {**headers, "webhook-timestamp": "1674087231.5"}
    assert signer.explain(MSG, bad, secret, now=MSG.timestamp) == BAD_TIMESTAMP


def test_stripe_header_without_a_usable_timestamp_is_reported() -> None:
    signer = signer_for("stripe")
    secret = SECRETS["stripe"][0]
    v1 = signer.headers(MSG, [secret])["Stripe-Signature"].split(",")[1]

    no_t = {"Stripe-Signature": v1}
    infinite = {"Stripe-Signature": f"t=Infinity,{v1}"}
    assert signer.explain(MSG, no_t, secret, now=MSG.timestamp) == NO_TIMESTAMP
    assert signer.explain(MSG, infinite, secret, now=MSG.timestamp) == BAD_TIMESTAMP


@pytest.mark.parametrize("name", SCHEMES)
def test_received_header_names_are_matched_case_insensitively(name: str) -> None:
    signer = make_signer(name)
    secret = SECRETS[name][0]
    headers = {k.upper(): v for k, v in signer.headers(MSG, [secret]).items()}

    assert signer.verify(MSG, headers, secret, now=MSG.timestamp)


def test_non_ascii_garbage_in_a_signature_header_is_a_mismatch_not_a_crash() -> None:
    signer = signer_for("standard-webhooks")
    secret = SECRETS["standard-webhooks"][0]
    headers = {**signer.headers(MSG, [secret]), "webhook-signature": "v1,é\udc80 v1a,%%%"}

    assert signer.explain(MSG, headers, secret, now=MSG.timestamp) == MISMATCH
    assert Ed25519Signer().explain(MSG, headers, V1A_KEY, now=MSG.timestamp) == MISMATCH


# --------------------------------------------------------------------------- scheme lookup, options


def test_signer_for_knows_every_advertised_scheme_and_the_standard_alias() -> None:
    assert SCHEMES == (
        "standard-webhooks",
        "standard-webhooks-v1a",
        "stripe",
        "github",
        "slack",
        "shopify",
        "custom",
    )
    assert [make_signer(name).name for name in SCHEMES] == list(SCHEMES)
    assert signer_for("standard") is signer_for("standard-webhooks")


def test_signer_for_rejects_an_unknown_name_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown signing scheme 'svix'") as raised:
        signer_for("svix")
    for name in (*SCHEMES, "standard"):
        assert name in str(raised.value)


def test_builtin_schemes_refuse_options() -> None:
    with pytest.raises(ValueError, match="takes no options"):
        signer_for("stripe", {"header_name": "X-Other"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({**CUSTOM_OPTIONS, "hash": "md5"}, "unknown custom signing option"),
        ({**CUSTOM_OPTIONS, "algorithm": "md5"}, "algorithm must be one of"),
        ({**CUSTOM_OPTIONS, "key_encoding": "latin1"}, "key_encoding must be one of"),
        ({**CUSTOM_OPTIONS, "timestamp_unit": "us"}, "timestamp_unit must be one of"),
        ({**CUSTOM_OPTIONS, "content_template": "{ts}.{body}"}, "unknown placeholder"),
        ({**CUSTOM_OPTIONS, "content_template": "{timestamp}"}, "must include {body}"),
        ({**CUSTOM_OPTIONS, "header_template": "t={timestamp}"}, "must include {signature}"),
        ({**CUSTOM_OPTIONS, "header_name": "X Bad"}, "not a valid HTTP header name"),
        ({**CUSTOM_OPTIONS, "id_header": "x-twin-signature"}, "must be distinct"),
        ({**CUSTOM_OPTIONS, "signature_separator": "="}, "signature_separator must be"),
        ({"content_template": "{body}"}, "needs content_template and header_name"),
    ],
)
def test_custom_options_are_validated(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        signer_for("custom", options)


def test_custom_template_keeps_literal_text_and_signs_the_raw_body_bytes() -> None:
    # Braces that are not placeholders are literal; a non-UTF-8 body is signed as-is.
    signer = custom(content_template='{"v":1}|{body}', header_name="X-Sig", key_encoding="hex")
    msg = SigningInput("m", 1, b"\xff\x00raw")

    headers = signer.headers(msg, ["00ff10"])

    expected = hmac.new(bytes.fromhex("00ff10"), b'{"v":1}|\xff\x00raw', hashlib.sha256).hexdigest()
    assert headers == {"X-Sig": expected}


def test_custom_template_read_from_its_own_headers_verifies_with_ids_and_events_in_content() -> (
    None
):
    signer = make_signer("custom")
    secret = SECRETS["custom"][0]
    headers = signer.headers(MSG, [secret])
    # The receiver knows only the body; id, event and timestamp come from the headers.
    received = SigningInput("", 0, MSG.body)

    assert headers["X-Twin-Id"] == MSG.msg_id
    assert headers["X-Twin-Event"] == MSG.event_type
    assert signer.explain(received, headers, secret, now=MSG.timestamp) is None
    swapped = {**headers, "X-Twin-Event": "invoice.voided"}
    assert signer.explain(received, swapped, secret, now=MSG.timestamp) == MISMATCH


# --------------------------------------------------------------------------- secrets


SECRET_FORMATS = {
    "standard-webhooks": r"whsec_[A-Za-z0-9+/]{32}",  # 24 bytes, base64
    "standard-webhooks-v1a": r"whsk_[A-Za-z0-9+/]{86}==",  # 64 bytes: seed || public key
    "stripe": r"whsec_[A-Za-z0-9]{32}",
    "github": r"[0-9a-f]{64}",
    "slack": r"[0-9a-f]{32}",
    "shopify": r"[0-9a-f]{64}",
    "custom": r"[0-9a-f]{64}",
}


@pytest.mark.parametrize("name", SCHEMES)
def test_new_secrets_are_fresh_in_the_scheme_format_and_usable(name: str) -> None:
    signer = make_signer(name)

    first, second = signer.new_secret(), signer.new_secret()

    assert first != second
    assert re.fullmatch(SECRET_FORMATS[name], first)
    headers = signer.headers(MSG, [first])
    assert signer.verify(MSG, headers, first, now=MSG.timestamp)


def test_generated_standard_webhooks_secret_is_accepted_by_the_reference_library() -> None:
    signer = signer_for("standard-webhooks")
    secret = signer.new_secret()
    msg = now_message()

    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    Webhook(secret).verify(msg.body, signer.headers(msg, [secret]))


def test_v1a_public_key_is_derived_from_the_secret_key_and_cannot_sign() -> None:
    signer = Ed25519Signer()
    secret = signer.new_secret()
    public = signer.public_key(secret)

    assert re.fullmatch(r"whpk_[A-Za-z0-9+/]{43}=", public)
    assert signer.public_key(public) == public
    assert signer.verify(MSG, signer.headers(MSG, [secret]), public, now=MSG.timestamp)
    with pytest.raises(ValueError, match="whsk_"):
        signer.headers(MSG, [public])


def test_v1a_secret_whose_public_half_does_not_match_its_seed_is_refused() -> None:
    seed_part = base64.b64decode(V1A_KEY.removeprefix("whsk_"))[:32]
    other_public = base64.b64decode(V1A_KEY_2.removeprefix("whsk_"))[32:]
    forged = "whsk_" + base64.b64encode(seed_part + other_public).decode()

    with pytest.raises(ValueError, match="does not match"):
        Ed25519Signer().headers(MSG, [forged])


def test_secret_list_must_be_a_non_empty_sequence_not_a_bare_string() -> None:
    signer = signer_for("stripe")

    with pytest.raises(TypeError, match="not a single string"):
        signer.headers(MSG, "whsec_test_secret")
    with pytest.raises(ValueError, match="at least one"):
        signer.headers(MSG, [])


def test_undecodable_standard_webhooks_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="not valid base64"):
        signer_for("standard-webhooks").headers(MSG, ["whsec_not*base64!"])


def test_header_values_with_line_breaks_are_refused() -> None:
    injected = SigningInput("msg_1\r\nX-Evil: 1", MSG.timestamp, MSG.body, MSG.event_type)

    with pytest.raises(ValueError, match="control character"):
        signer_for("standard-webhooks").headers(injected, [SECRETS["standard-webhooks"][0]])


def test_hmac_signer_can_be_built_directly_from_a_template() -> None:
    template = CustomHmac(content_template="{body}", header_name="X-Sig")
    signer = HmacSigner("plain", template)

    assert signer.headers(MSG, ["k"]) == {
        "X-Sig": hmac.new(b"k", MSG.body, hashlib.sha256).hexdigest()
    }


# --------------------------------------------------------------------------- masking


def test_mask_secret_keeps_the_format_prefix_and_a_short_tail() -> None:
    assert mask_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == "whsec_MfKQ…Sw"
    assert mask_secret(V1A_KEY).startswith("whsk_6Xb/…")
    assert mask_secret("8f742231b10e8888abcd99yyyzzz85a5") == "8f74…a5"
    assert mask_secret("It's a Secret") == "…et"
    assert mask_secret("whsec_test_secret") == "whsec_…"
    assert mask_secret("shop-secret") == "…"
    assert mask_secret("") == "…"


@settings(max_examples=300, database=None, deadline=None)
@given(
    prefix=st.sampled_from(["", "whsec_", "whsk_", "whpk_"]),
    body=st.text(alphabet=st.characters(blacklist_characters="…"), min_size=1, max_size=80),
)
def test_mask_secret_never_reveals_more_than_six_characters_or_a_quarter_of_the_secret(
    prefix: str, body: str
) -> None:
    secret = prefix + body
    masked = mask_secret(secret)

    kept_prefix = next((p for p in ("whsec_", "whsk_", "whpk_") if secret.startswith(p)), "")
    revealed = masked.removeprefix(kept_prefix).replace("…", "")
    assert masked.startswith(kept_prefix)
    assert len(revealed) <= min(6, len(secret[len(kept_prefix) :]) // 4)
    assert secret not in masked
