"""Uploaded files (File/Upload): stored with the outputs, owned by one project, usable as
file inputs of that project's runs, removed with the inputs of a task that used them."""

from __future__ import annotations

import re
import time
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from toonforge.storage import Storage
from toonforge.storage.links import api_file_url
from toonforge.tasks.models import TaskUpload, Upload
from toonforge.tasks.tokens import random_hex, random_token

STORAGE_PREFIX = "uploads"
_UNSAFE = re.compile(r"[^\w.-]+")
FILE_PATH = re.compile(r"^/v1/File/([^/]+)/([^/]+)$")


def safe_name(filename: str) -> str:
    """The last path part of what the client called the file, with only word characters,
    dots and dashes (others become `_`), at most 100 characters and 200 bytes of UTF-8 (a
    file name's limit is in bytes)."""
    base = re.split(r"[\\/]", filename or "")[-1].strip()
    cleaned = _UNSAFE.sub("_", base).strip("._")[:100]
    cleaned = cleaned.encode()[:200].decode(errors="ignore").strip("._")
    return cleaned or "upload"


def store_upload(
    session: Session,
    storage: Storage,
    *,
    project_id: int,
    filename: str,
    content_type: str,
    source: BinaryIO,
) -> Upload:
    """Copy the file into storage and add its row (the caller commits; on failure it calls
    `discard_upload`)."""
    upload_id = random_hex(16)
    name = safe_name(filename)
    key = f"{STORAGE_PREFIX}/{upload_id}/{name}"
    size = storage.put_file(key, source, content_type[:100] or "application/octet-stream")
    upload = Upload(
        id=upload_id,
        project_id=project_id,
        name=name,
        content_type=content_type[:100],
        size=size,
        accesskey=random_token(30),
        storage_key=key,
        created_at=time.time(),
    )
    try:
        session.add(upload)
        session.flush()
    except BaseException:
        discard_upload(storage, upload)
        raise
    return upload


def discard_upload(storage: Storage, upload: Upload) -> None:
    storage.delete_prefix(f"{STORAGE_PREFIX}/{upload.id}")


def upload_url(public_url: str, upload: Upload) -> str:
    return api_file_url(public_url, upload.accesskey, upload.name)


def upload_record(upload: Upload, public_url: str) -> dict[str, Any]:
    return {
        "id": upload.id,
        "name": upload.name,
        "contenttype": upload.content_type,
        "size": str(upload.size),
        "url": upload_url(public_url, upload),
        "addedtime": str(int(upload.created_at)),
        "accesskey": upload.accesskey,
    }


def find_by_accesskey(session: Session, accesskey: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.accesskey == accesskey))


def find_for_input(session: Session, value: str) -> Upload | None:
    """The upload a file-input value names, whoever owns it: its id, or its URL on this
    server (any host: clients may reach the server under several names). The caller checks
    the project."""
    if re.fullmatch(r"[0-9a-f]{32}", value):
        return session.get(Upload, value)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        return None
    match = FILE_PATH.match(parts.path)
    if match is None:
        return None
    upload = find_by_accesskey(session, match.group(1))
    if upload is None or unquote(match.group(2)) != upload.name:
        return None
    return upload


def link_to_task(session: Session, task_id: int, upload_ids: set[str]) -> None:
    for upload_id in sorted(upload_ids):
        session.add(TaskUpload(task_id=task_id, upload_id=upload_id))


def remove_task_uploads(session: Session, storage: Storage, task_id: int) -> int:
    """Delete the uploads a task used (rows, then files), for Task/InputOutputDelete. Another
    task that used the same file loses it too: deleting a task's inputs deletes the file."""
    uploads = list(
        session.scalars(
            select(Upload)
            .join(TaskUpload, TaskUpload.upload_id == Upload.id)
            .where(TaskUpload.task_id == task_id)
        )
    )
    if not uploads:
        return 0
    ids = [u.id for u in uploads]
    session.execute(delete(TaskUpload).where(TaskUpload.upload_id.in_(ids)))
    session.execute(delete(Upload).where(Upload.id.in_(ids)))
    session.commit()
    for upload in uploads:
        discard_upload(storage, upload)
    return len(uploads)
