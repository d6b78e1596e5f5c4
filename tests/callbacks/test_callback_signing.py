"""Standard Webhooks signing: our `sign`/`verify` against the spec and the official library."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from toonforge.callbacks import SignatureError, new_webhook_secret, sign, verify

BODY = json.dumps({"id": "2221", "status": "task_postprocess_end", "pexit": "0"}).encode()


def test_known_vector_from_the_standard_webhooks_spec() -> None:
    # The example the Standard Webhooks / Svix documentation gives for its reference code.
    headers = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert headers == {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }


def test_new_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secrets = {new_webhook_secret() for _ in range(20)}
    assert len(secrets) == 20
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret[len("whsec_") :], validate=True)) == 32
        assert len(secret) <= 128  # fits projects.webhook_secret


def test_signature_verifies_with_our_verify_and_with_the_library() -> None:
    secret = new_webhook_secret()
    headers = sign(secret, "msg_task-1", int(time.time()), BODY)
    verify(secret, headers, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


def test_header_names_are_case_insensitive() -> None:
    secret = new_webhook_secret()
    headers = {k.title(): v for k, v in sign(secret, "msg_1", int(time.time()), BODY).items()}
    verify(secret, headers, BODY)


def test_verify_accepts_any_of_several_signatures_for_secret_rotation() -> None:
    old, new = new_webhook_secret(), new_webhook_secret()
    now = int(time.time())
    headers = sign(new, "msg_1", now, BODY)
    headers["webhook-signature"] = (
        f"{sign(old, 'msg_1', now, BODY)['webhook-signature']} {headers['webhook-signature']}"
    )
    verify(new, headers, BODY)
    verify(old, headers, BODY)


def _tampered(name: str) -> tuple[str, dict[str, str], bytes]:
    secret = new_webhook_secret()
    now = int(time.time())
    headers = sign(secret, "msg_1", now, BODY)
    body = BODY
    if name == "body":
        body = BODY.replace(b'"0"', b'"1"')
    elif name == "secret":
        secret = new_webhook_secret()
    elif name == "msg_id":
        headers["webhook-id"] = "msg_2"
    elif name == "timestamp":
        headers["webhook-timestamp"] = str(now + 1)
    elif name == "stale":
        headers = sign(secret, "msg_1", now - 600, BODY)
    elif name == "future":
        headers = sign(secret, "msg_1", now + 600, BODY)
    elif name.startswith("missing-"):
        del headers[name.removeprefix("missing-")]
    elif name == "no-comma":
        headers["webhook-signature"] = "v1"
    elif name == "bad-base64":
        headers["webhook-signature"] = "v1,%%%not-base64%%%"
    elif name == "other-version":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif name == "not-utf8":
        body = b"\xff\xfe"
    return secret, headers, body


@pytest.mark.parametrize(
    "tamper",
    [
        "body",
        "secret",
        "msg_id",
        "timestamp",
        "stale",
        "future",
        "missing-webhook-id",
        "missing-webhook-timestamp",
        "missing-webhook-signature",
        "no-comma",
        "bad-base64",
        "other-version",
        "not-utf8",
    ],
)
def test_verify_rejects(tamper: str) -> None:
    secret, headers, body = _tampered(tamper)
    with pytest.raises(SignatureError):
        verify(secret, headers, body)


def test_library_also_rejects_a_tampered_body() -> None:
    secret = new_webhook_secret()
    headers = sign(secret, "msg_1", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers)


@pytest.mark.parametrize(
    "secret",
    ["", "whsec_", "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()],
)
def test_sign_rejects_a_bad_secret(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(secret, "msg_1", int(time.time()), BODY)


@pytest.mark.parametrize("msg_id", ["", "msg 1", "msg_1\r\nX-Evil: 1", "msg_é"])
def test_sign_rejects_a_bad_message_id(msg_id: str) -> None:
    with pytest.raises(ValueError, match="message id"):
        sign(new_webhook_secret(), msg_id, int(time.time()), BODY)


def test_sign_rejects_negative_timestamp_and_non_utf8_body() -> None:
    secret = new_webhook_secret()
    with pytest.raises(ValueError):
        sign(secret, "msg_1", -1, BODY)
    with pytest.raises(ValueError):
        sign(secret, "msg_1", int(time.time()), b"\xff")
