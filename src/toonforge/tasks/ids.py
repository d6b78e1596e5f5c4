"""Ids from client text. Every id column is a 32-bit integer in the database (PostgreSQL's
INTEGER), so a larger number, like anything that is not plain ASCII digits, is no id at all."""

from __future__ import annotations

MAX_ID = 2**31 - 1


def parse_id(text: str, maximum: int = MAX_ID) -> int | None:
    """A database id from client text: ASCII digits only (not "²" or "٣"), 1..maximum;
    anything else is no id at all, so it is simply not found."""
    text = text.strip()
    if not text or len(text) > 12 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if 0 < value <= maximum else None
