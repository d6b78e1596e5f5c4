"""Standard Webhooks signatures for task callbacks.

The HMAC itself is computed by the official `standardwebhooks` library so that a receiver
using any Standard Webhooks implementation verifies what we send. This module adds strict
input checks the library does not do (it silently drops non-base64 characters from a secret,
and raises assorted exceptions on malformed headers).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_PREFIX = "whsec_"
# The spec recommends 24..64 bytes of key material; we generate 32.
_MIN_KEY_BYTES = 24
_MAX_KEY_BYTES = 64
_NEW_KEY_BYTES = 32
# The receiver-side tolerance of the library (not configurable there): 5 minutes.
TIMESTAMP_TOLERANCE_SECONDS = 300


class SignatureError(Exception):
    """A callback's signature headers are missing, malformed, stale or do not match."""


def new_webhook_secret() -> str:
    """A fresh project secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_NEW_KEY_BYTES)).decode("ascii")


def _webhook(secret: str) -> Webhook:
    """Validate `secret` strictly, then hand it to the library."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 (expected whsec_<base64>)") from exc
    if not _MIN_KEY_BYTES <= len(key) <= _MAX_KEY_BYTES:
        raise ValueError(
            f"webhook secret must hold {_MIN_KEY_BYTES} to {_MAX_KEY_BYTES} bytes, not {len(key)}"
        )
    return Webhook(key)


def _check_msg_id(msg_id: str) -> None:
    # The id goes into a header and into the signed content `id.timestamp.body`; whitespace or
    # control characters would break the header or make the signed content ambiguous to read.
    if not msg_id or not msg_id.isascii() or not msg_id.isprintable() or " " in msg_id:
        raise ValueError("webhook message id must be non-empty printable ASCII without spaces")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, sent at unix time `timestamp`.

    Use the same `msg_id` for every retry of one callback (receivers deduplicate on it) and a
    fresh `timestamp` per attempt (receivers reject timestamps older than 5 minutes).
    """
    _check_msg_id(msg_id)
    if timestamp < 0:
        raise ValueError("timestamp must be a non-negative unix time")
    # The library signs text; our bodies are JSON, hence UTF-8 (strict: no silent mangling).
    text = body.decode("utf-8")
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    signature = _webhook(secret).sign(msg_id=msg_id, timestamp=when, data=text)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> None:
    """Check a callback as a receiver would; raise `SignatureError` if it does not verify.

    Accepts several space-separated signatures (secret rotation) and rejects timestamps more
    than 5 minutes from now, as the Standard Webhooks spec asks.
    """
    webhook = _webhook(secret)
    try:
        webhook.verify(body, dict(headers.items()), json_parse=False)
    except WebhookVerificationError as exc:
        raise SignatureError(str(exc)) from exc
    except (ValueError, binascii.Error) as exc:
        # Malformed signature header ("v1" without a comma, bad base64) or a non-UTF-8 body:
        # the library lets these escape as generic errors.
        raise SignatureError(f"malformed webhook headers or body: {exc}") from exc
