"""Project authentication, from the headers alone: signature (HMAC) or key-only, the IP
allow-list, and the replay guard of state-changing calls.

x-signature = hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE)), as the hosted
service documents. Keys and secrets are never logged.

Replays. The hosted service's own client makes its nonce from the clock in milliseconds, so
parallel calls share nonces: a nonce alone cannot be "accepted once". toonforge refuses a
repeated nonce only where a replay could do harm: a state-changing call (Run, Kill, Cancel,
InputOutputDelete, uploads, private models) whose nonce, method, path and body all repeat
within `nonce_window_seconds`. Reads (Detail, lists) store nothing; with
`nonce_max_skew_seconds` set, every signed call must also carry a unix-time nonce close to
now, which bounds how long any captured request can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request
from sqlalchemy.orm import Session

from toonforge.api.envelope import ApiError
from toonforge.settings import Settings
from toonforge.tasks.projects import (
    ProjectInfo,
    forget_requests_before,
    ip_allowed,
    remember_request,
)

NOT_FOUND = "Project authorization is not founded."
NEEDS_SIGNATURE = (
    "Project requires signature authentication. x-signature and x-nonce headers are required."
)
NOT_VALID = "Project authorization is not valid."
NONCE_REUSED = "Project authorization is not valid: this request was already made with this nonce."
NONCE_SKEW = "Project authorization is not valid: the nonce is too far from the current time."
# Header values longer than this are not keys, nonces or signatures.
MAX_HEADER_CHARS = 512


def _unauthorized(message: str) -> ApiError:
    return ApiError(message, status=401)


def signature_for(api_key: str, api_secret: str, nonce: str) -> str:
    return hmac.new(api_key.encode(), (api_secret + nonce).encode(), hashlib.sha256).hexdigest()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _header(request: Request, name: str) -> str:
    value = request.headers.get(name, "").strip()
    return value if len(value) <= MAX_HEADER_CHARS else ""


def check_headers(request: Request, project: ProjectInfo | None, settings: Settings) -> ProjectInfo:
    """Everything authentication decides from the headers; `project` is the key's project
    (None for an unknown key)."""
    if project is None:
        raise _unauthorized(NOT_FOUND)
    if project.auth_mode == "signature":
        nonce = _header(request, "x-nonce")
        # The hosted pages' shell snippet sends openssl's whole line ("SHA2-256(stdin)= hex"
        # on OpenSSL 3, "(stdin)= hex" before): the hex digest is what follows "= ".
        signature = _header(request, "x-signature").rsplit("= ", 1)[-1].strip().lower()
        if not nonce or not signature:
            raise _unauthorized(NEEDS_SIGNATURE)
        expected = signature_for(project.api_key, project.api_secret, nonce)
        if not hmac.compare_digest(expected.encode(), signature.encode(errors="replace")):
            raise _unauthorized(NOT_VALID)
        if settings.nonce_max_skew_seconds > 0 and not _nonce_in_time(
            nonce, settings.nonce_max_skew_seconds
        ):
            raise _unauthorized(NONCE_SKEW)
    ip = client_ip(request)
    if not ip_allowed(project.allowed_ips, ip):
        raise _unauthorized(f"Requested ip {ip} is not allowed.")
    return project


def api_key_of(request: Request) -> str:
    return _header(request, "x-api-key")


def request_fingerprint(request: Request, body_digest: str) -> str:
    nonce = _header(request, "x-nonce")
    parts = (nonce, request.method, request.url.path, body_digest)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class ReplayGuard:
    """Refuses an exact repeat of a state-changing signed request (see the module's note);
    old fingerprints are dropped now and then, in a writer's own transaction."""

    PRUNE_EVERY_SECONDS = 60.0

    def __init__(self, settings: Settings) -> None:
        self.window = settings.nonce_window_seconds
        self._pruned = 0.0

    def check(
        self, session: Session, request: Request, project: ProjectInfo, body_digest: str
    ) -> None:
        if project.auth_mode != "signature":
            return
        now = time.monotonic()
        if now - self._pruned > self.PRUNE_EVERY_SECONDS:
            self._pruned = now
            forget_requests_before(session, time.time() - self.window)
        if not remember_request(session, project.id, request_fingerprint(request, body_digest)):
            raise _unauthorized(NONCE_REUSED)


def _nonce_in_time(nonce: str, skew: int) -> bool:
    if not (nonce.isascii() and nonce.isdigit()) or len(nonce) > 20:
        return False
    value = int(nonce)
    if value > 10**11:  # milliseconds, as JavaScript clients send Date.now()
        value //= 1000
    return abs(value - time.time()) <= skew
