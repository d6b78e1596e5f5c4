"""Reading a request body whatever it claims to be, and never more of it than allowed.

Clients send JSON, multipart and urlencoded bodies, and the seed pages' own curl examples
send a JSON text under `Content-Type: multipart/form-data` (with no boundary): a body that
is JSON is read as JSON whatever the header says.

The size limit is checked on Content-Length before anything is read, and again while the
body streams in (a chunked body has no length), so an oversized body is answered 413
without being held in memory. Routes that need a project read the body only after
authentication (see deps.py), so an unauthenticated upload is refused from its headers.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from toonforge.api.envelope import ApiError

INVALID = "Request parameters are invalid."
MAX_BODY_BYTES = 8 * 1024 * 1024


def too_large(limit: int) -> ApiError:
    return ApiError(f"Request body is larger than {limit} bytes.", status=413)


def check_content_length(request: Request, limit: int) -> None:
    length = request.headers.get("content-length", "").strip()
    if length and not (length.isascii() and length.isdigit()):
        raise ApiError("Content-Length must be a number of bytes.", status=400)
    if length and int(length) > limit:
        raise too_large(limit)


async def read_raw(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, at most `limit` bytes (413 past it). Kept on the request, so a later
    `request.form()` parses these bytes instead of the spent stream."""
    cached = getattr(request, "_body", None)
    if cached is not None:
        return bytes(cached)
    check_content_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    request._body = raw  # Starlette's own cache: request.stream()/form() read it from here
    return raw


def limited(request: Request, limit: int, error: ApiError | None = None) -> Request:
    """The same request, whose body raises 413 (or `error`) once more than `limit` bytes
    have streamed in: for bodies parsed while they arrive (multipart uploads)."""
    check_content_length(request, limit)
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise error or too_large(limit)
        return message

    return Request(request.scope, receive)


def body_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


# NUL, which PostgreSQL text cannot hold, and lone surrogates (JSON "\ud800"), which no
# encoding can store: no client sends them on purpose, so the whole body is refused.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable(value: Any) -> bool:
    if isinstance(value, str):
        return _UNSTORABLE.search(value) is None
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


async def read_body(request: Request) -> dict[str, Any]:
    data = await _parse_body(request)
    if not _storable(data):
        raise ApiError(INVALID)
    return data


async def _parse_body(request: Request) -> dict[str, Any]:
    raw = await read_raw(request)
    request.state.body_digest = body_digest(raw)
    text = raw.strip()
    if not text:
        return {}
    if text[:1] in (b"{", b"["):
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(INVALID) from exc
        if not isinstance(data, dict):
            raise ApiError(INVALID)
        return data
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data") and "boundary=" in ctype:
        try:
            form = await request.form()
        except Exception as exc:  # python-multipart raises several types for bad bodies
            raise ApiError(INVALID) from exc
        return {k: (v.filename if isinstance(v, UploadFile) else v) for k, v in form.items()}
    try:
        return dict(parse_qsl(text.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(INVALID) from exc


def str_field(body: dict[str, Any], *names: str) -> str:
    """The first non-empty of several accepted names (`tasktoken` / `socketaccesstoken`)."""
    for name in names:
        value = body.get(name)
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return ""
