"""Random identifiers: socket tokens, access keys, output ids."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 30) -> str:
    """Letters and digits, like the hosted service's socket tokens and access keys."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def random_hex(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)
