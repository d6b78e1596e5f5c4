"""The file inputs of a Run (inputs of type `fileinput`/`file`), as the hosted docs and the
official client send them.

A file input `inputImage` arrives in `inputImage` or in `inputImageUrl` (multipart clients
send both, one empty). Its value is one of:
- an upload of the calling project: its id, or its URL as File/Upload gave it;
- any other http(s) URL, kept as given.
An upload becomes its URL in the task's parameters and is linked to the task, so that
Task/InputOutputDelete removes it. Another project's upload is "not found", exactly like an
id that does not exist. Files sent inside the Run body itself are not read: upload them
with File/Upload first.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from toonforge.api.envelope import GENERAL, ApiError
from toonforge.catalog.manifest import Manifest
from toonforge.tasks.uploads import find_for_input, upload_url


def _message(name: str, text: str) -> dict[str, Any]:
    return {"code": GENERAL, "message": f"Request parameter [{name}] {text}"}


def resolve_file_inputs(
    session: Session, project_id: int, manifest: Manifest, body: dict[str, Any], public_url: str
) -> tuple[dict[str, Any], set[str]]:
    """The body with each file input's value in `{id}` (the `{id}Url` field consumed), and
    the ids of the uploads used."""
    out = dict(body)
    used: set[str] = set()
    errors: list[dict[str, Any]] = []
    for spec in manifest.inputs:
        if not spec.is_file:
            continue
        url_field = f"{spec.name}Url"
        direct = str(out.get(spec.name) or "").strip()
        via_url = str(out.pop(url_field, None) or "").strip()
        if direct and via_url and direct != via_url:
            errors.append(
                _message(spec.name, f"is given twice: send it in [{spec.name}] or [{url_field}]")
            )
            continue
        value = direct or via_url
        if not value:
            out.pop(spec.name, None)  # absent: required check or default, as any input
            continue
        upload = find_for_input(session, value)
        if upload is not None and upload.project_id == project_id:
            used.add(upload.id)
            out[spec.name] = upload_url(public_url, upload)
        elif upload is not None or _looks_like_upload_id(value):
            errors.append(_message(spec.name, f"file {value!r} not found in this project"))
        elif urlsplit(value).scheme in ("http", "https") and urlsplit(value).netloc:
            out[spec.name] = value
        else:
            errors.append(
                _message(
                    spec.name,
                    "must be the id or URL of a file sent to File/Upload, or an http(s) URL",
                )
            )
    if errors:
        raise ApiError(errors[0]["message"], errors=errors)
    return out, used


def _looks_like_upload_id(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)
