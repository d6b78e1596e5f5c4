"""Reading a request body whatever it claims to be.

Clients send JSON, multipart and urlencoded bodies, and the seed pages' own curl examples
send a JSON text under `Content-Type: multipart/form-data` (with no boundary): a body that
is JSON is read as JSON whatever the header says.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request

from toonforge.api.envelope import ApiError

INVALID = "Request parameters are invalid."
MAX_BODY_BYTES = 8 * 1024 * 1024


async def read_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(f"Request body is larger than {MAX_BODY_BYTES} bytes.")
    text = raw.strip()
    if not text:
        return {}
    if text[:1] in (b"{", b"["):
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
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
