"""Project authentication: signature (HMAC) or key-only, IP allow-list, nonce replay guard.

x-signature = hex(HMAC_SHA256(key=API_KEY, message=API_SECRET + NONCE)), as the hosted
service documents. Keys and secrets are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from fastapi import Request
from sqlalchemy.orm import Session

from toonforge.api.envelope import ApiError
from toonforge.settings import Settings
from toonforge.tasks.models import Project
from toonforge.tasks.projects import find_by_key, ip_allowed, remember_nonce

NOT_FOUND = "Project authorization is not founded."
NEEDS_SIGNATURE = (
    "Project requires signature authentication. x-signature and x-nonce headers are required."
)
NOT_VALID = "Project authorization is not valid."
NONCE_REUSED = "Project authorization is not valid: this nonce was already used."
NONCE_SKEW = "Project authorization is not valid: the nonce is too far from the current time."


def _unauthorized(message: str) -> ApiError:
    return ApiError(message, status=401)


def signature_for(api_key: str, api_secret: str, nonce: str) -> str:
    return hmac.new(api_key.encode(), (api_secret + nonce).encode(), hashlib.sha256).hexdigest()


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def authenticate(request: Request, session: Session, settings: Settings) -> Project:
    api_key = request.headers.get("x-api-key", "").strip()
    project = find_by_key(session, api_key) if api_key else None
    if project is None:
        raise _unauthorized(NOT_FOUND)
    if project.auth_mode == "signature":
        nonce = request.headers.get("x-nonce", "").strip()
        # The hosted pages' shell snippet sends openssl's whole line ("SHA2-256(stdin)= hex"
        # on OpenSSL 3, "(stdin)= hex" before): the hex digest is what follows "= ".
        signature = request.headers.get("x-signature", "").rsplit("= ", 1)[-1].strip().lower()
        if not nonce or not signature:
            raise _unauthorized(NEEDS_SIGNATURE)
        expected = signature_for(project.api_key, project.api_secret, nonce)
        if not hmac.compare_digest(expected, signature):
            raise _unauthorized(NOT_VALID)
        if settings.nonce_max_skew_seconds > 0 and not _nonce_in_time(
            nonce, settings.nonce_max_skew_seconds
        ):
            raise _unauthorized(NONCE_SKEW)
    ip = client_ip(request)
    if not ip_allowed(project.allowed_ips, ip):
        raise _unauthorized(f"Requested ip {ip} is not allowed.")
    if project.auth_mode == "signature":
        if not remember_nonce(session, project.id, nonce, settings.nonce_window_seconds):
            session.rollback()
            raise _unauthorized(NONCE_REUSED)
        session.commit()
    return project


def _nonce_in_time(nonce: str, skew: int) -> bool:
    if not nonce.isdigit():
        return False
    value = int(nonce)
    if value > 10**11:  # milliseconds, as JavaScript clients send Date.now()
        value //= 1000
    return abs(value - time.time()) <= skew
