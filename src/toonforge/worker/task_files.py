"""The stored files a task needs, brought to this worker's host before the engine runs.

A worker shares no folder with the API: it reads the database and the storage. A private
base model (`selectedModelPrivate`) is copied from the storage into this worker's data
folder (`<data>/private_models/<id>.safetensors`, where the engine loads it) the first time
a task asks for it; model ids are never reused, so the copy stays valid until the model is
removed, which the next task asking for it notices. An uploaded input file is read from the
storage through its database row (`read_upload`), never through the API.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from toonforge.engine.contract import ModelError
from toonforge.services import Services
from toonforge.tasks.models import PrivateModel
from toonforge.tasks.private_models import checkpoint_path
from toonforge.tasks.uploads import find_for_input

log = logging.getLogger("toonforge.worker")


def fetch_task_files(services: Services, params: dict[str, Any]) -> None:
    value = str(params.get("selectedModelPrivate") or "").strip()
    if value.isascii() and value.isdigit():
        ensure_private_checkpoint(services, int(value))


def ensure_private_checkpoint(services: Services, model_id: int) -> None:
    """Make this host's copy of the model's file match the database: fetched from the storage
    when missing, removed when the model is gone (the engine then says so)."""
    local = checkpoint_path(services.settings, model_id)
    with services.read_sessions() as session:
        row = session.execute(
            select(PrivateModel.storage_key, PrivateModel.size).where(PrivateModel.id == model_id)
        ).first()
    if row is None:
        local.unlink(missing_ok=True)
        return
    key, size = row
    if local.is_file() and local.stat().st_size == size:
        return
    if not key:  # stored before object storage: only the API host's copy exists
        return
    if _link_local(services, key, local):
        return
    log.info("private model %s: fetching from the storage", model_id)
    try:
        found = services.storage.download(key, local)
    except Exception as exc:
        raise ModelError(
            f"selectedModelPrivate: private model {model_id} could not be fetched from the "
            f"storage ({type(exc).__name__})"
        ) from exc
    if not found:
        local.unlink(missing_ok=True)


def _link_local(services: Services, key: str, local: Path) -> bool:
    """With a local storage on the same disk, a hard link instead of a second copy of
    gigabytes (the storage's file and the copy are then one)."""
    source = services.storage.local_path(key)
    if source is None:
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".link-{uuid.uuid4().hex}")
    try:
        os.link(source, tmp)
        os.replace(tmp, local)
    except OSError:  # another file system, or links not allowed: copy instead
        tmp.unlink(missing_ok=True)
        return False
    return True


def read_upload(services: Services, value: str) -> bytes | None:
    """The content of the upload a file input names (its id or /v1/File URL, as the API wrote
    it into the task's parameters), from the storage; None when it is not an upload here."""
    with services.read_sessions() as session:
        upload = find_for_input(session, value)
        key = upload.storage_key if upload is not None else None
    if key is None:
        return None
    with tempfile.TemporaryDirectory(dir=services.settings.data_dir) as tmp:
        target = Path(tmp) / re.sub(r"[^\w.-]", "_", key.rsplit("/", 1)[-1])
        if not services.storage.download(key, target):
            return None
        return target.read_bytes()
