"""Task callbacks: signed (Standard Webhooks) POSTs of the task record to `callbackUrl`.

- `signing`: project secrets (`whsec_...`), `sign` and `verify`.
- `address_guard`: refuses callback URLs that reach private, loopback, link-local, metadata
  and other non-public addresses unless the operator allows them, and pins the checked IP.
- `sender`: one attempt (`send_once`), its classification, and the retry delay schedule.

The retry loop and the attempt log live with the task store; this package keeps no state.
"""

from toonforge.callbacks.address_guard import (
    ALLOW_PRIVATE_ENV,
    CallbackRefused,
    ResolvedTarget,
    check_url,
)
from toonforge.callbacks.sender import (
    MAX_BACKOFF_SECONDS,
    AttemptResult,
    backoff_seconds,
    send_once,
)
from toonforge.callbacks.signing import SignatureError, new_webhook_secret, sign, verify

__all__ = [
    "ALLOW_PRIVATE_ENV",
    "MAX_BACKOFF_SECONDS",
    "AttemptResult",
    "CallbackRefused",
    "ResolvedTarget",
    "SignatureError",
    "backoff_seconds",
    "check_url",
    "new_webhook_secret",
    "send_once",
    "sign",
    "verify",
]
