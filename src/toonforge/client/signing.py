"""The hosted service's request signature, computed exactly as the server checks it:
x-signature = hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE)).

Nonces are unix time in milliseconds, made strictly increasing in this process, so that a
server requiring clock-close nonces accepts them and no two state-changing calls of this
process share one (the server refuses an exact repeat of nonce, path and body).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time


def signature(api_key: str, api_secret: str, nonce: str) -> str:
    return hmac.new(api_key.encode(), (api_secret + nonce).encode(), hashlib.sha256).hexdigest()


class NonceSource:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            self._last = max(int(time.time() * 1000), self._last + 1)
            return str(self._last)


NONCES = NonceSource()


def auth_headers(api_key: str, api_secret: str | None) -> dict[str, str]:
    """The key alone for a key-only project (no secret), else key, nonce and signature."""
    headers = {"x-api-key": api_key}
    if api_secret:
        nonce = NONCES.next()
        headers["x-nonce"] = nonce
        headers["x-signature"] = signature(api_key, api_secret, nonce)
    return headers
