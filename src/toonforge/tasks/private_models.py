"""Private base models: SD1.5 checkpoints a project registers for its own use.

A project registers a single-file `.safetensors` SD1.5 checkpoint (LDM layout, as SD1.5
fine-tunes are published) under a name; AnimateDiff's `selectedModelPrivate` then takes the
model's id (or its name). A project never sees another project's models: lookups always filter
on the project, and a model of another project answers exactly like one that does not exist.

The file is checked without torch (the API process never imports it): the safetensors header
is parsed by hand and must hold the three SD1.5 parts (UNet, VAE, CLIP text encoder).
The accepted file goes to the storage (a local folder or an S3 bucket) under
`private_models/<random>.safetensors`, its key recorded with the model; each worker copies it
into `<data>/private_models/<id>.safetensors` (its own data folder) the first time a task
needs it (toonforge.worker.task_files).
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from toonforge.settings import Settings
from toonforge.storage import Storage
from toonforge.tasks.ids import parse_id
from toonforge.tasks.models import PrivateModel

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$")
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
# The parts every SD1.x single-file checkpoint holds, by key prefix (LDM layout).
SD15_PREFIXES = {
    "model.diffusion_model.": "UNet",
    "first_stage_model.": "VAE",
    "cond_stage_model.transformer.": "CLIP text encoder",
}


class PrivateModelError(ValueError):
    """A registration that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class CheckpointInfo:
    tensors: int
    size: int


def private_models_dir(settings: Settings) -> Path:
    return settings.data_dir / "private_models"


def checkpoint_path(settings: Settings, model_id: int) -> Path:
    """This host's copy of the model's file (what the engine loads)."""
    return private_models_dir(settings) / f"{model_id}.safetensors"


STORAGE_PREFIX = "private_models"


def check_checkpoint(path: Path) -> CheckpointInfo:
    """Check that `path` is a safetensors SD1.5 checkpoint, reading only its header."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise PrivateModelError("the file is not a safetensors checkpoint (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise PrivateModelError("the file is not a safetensors checkpoint (bad header)")
        try:
            header: dict[str, Any] = json.loads(f.read(length))
        except (ValueError, UnicodeDecodeError) as exc:
            raise PrivateModelError("the file is not a safetensors checkpoint") from exc
    if not isinstance(header, dict):
        raise PrivateModelError("the file is not a safetensors checkpoint")
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 0
    for key, meta in tensors.items():
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise PrivateModelError(f"the file is not a safetensors checkpoint (tensor {key})")
        end = max(end, int(offsets[1]))
    if 8 + length + end != size:
        raise PrivateModelError("the checkpoint file is truncated or has trailing data")
    missing = [
        part
        for prefix, part in SD15_PREFIXES.items()
        if not any(k.startswith(prefix) for k in tensors)
    ]
    if missing:
        raise PrivateModelError(
            "not a single-file SD 1.5 checkpoint: no " + ", ".join(missing) + " weights "
            "(expected LDM-layout keys such as model.diffusion_model.*)"
        )
    return CheckpointInfo(tensors=len(tensors), size=size)


def _check_name(name: str) -> str:
    name = name.strip()
    if not NAME_RE.match(name):
        raise PrivateModelError(
            "name must be 1-100 characters: letters, digits, space, '.', '_' or '-'"
        )
    if name.isdigit():
        raise PrivateModelError("name must not be a number (numbers are model ids)")
    return name


@dataclass
class StagedCheckpoint:
    """An uploaded checkpoint copied, hashed and checked, not yet recorded."""

    path: Path
    sha256: str
    size: int
    file_name: str
    storage_key: str = ""  # set once stored

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def store_checkpoint(storage: Storage, staged: StagedCheckpoint) -> str:
    """Put a staged checkpoint into the storage (outside any transaction: it may take a
    while); its key. The caller deletes the key if the model is not recorded after all."""
    key = f"{STORAGE_PREFIX}/{uuid.uuid4().hex}.safetensors"
    with staged.path.open("rb") as fh:
        storage.put_file(key, fh)
    staged.storage_key = key
    return key


def stage_checkpoint(
    settings: Settings, source: Path | BinaryIO, file_name: str = ""
) -> StagedCheckpoint:
    """Copy, hash and check a checkpoint beside the private models, outside any database
    transaction (a file of gigabytes takes a while)."""
    folder = private_models_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".upload-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            stream = source.open("rb") if isinstance(source, Path) else source
            try:
                while chunk := stream.read(1024 * 1024):
                    digest.update(chunk)
                    out.write(chunk)
            finally:
                if isinstance(source, Path):
                    stream.close()
        info = check_checkpoint(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not file_name:
        file_name = source.name if isinstance(source, Path) else "checkpoint.safetensors"
    return StagedCheckpoint(tmp, digest.hexdigest(), info.size, Path(file_name).name[:255])


def check_name_free(session: Session, project_id: int, name: str) -> str:
    name = _check_name(name)
    if find_private_model(session, project_id, name) is not None:
        raise PrivateModelError(f"a private model named {name!r} already exists")
    return name


def record_private_model(
    session: Session, settings: Settings, *, project_id: int, name: str, staged: StagedCheckpoint
) -> PrivateModel:
    """Record a stored checkpoint (a short write transaction). The caller commits; if the
    commit fails, it calls `discard_file` with the model."""
    if not staged.storage_key:
        raise ValueError("store_checkpoint first")
    name = check_name_free(session, project_id, name)
    model = PrivateModel(
        project_id=project_id,
        name=name,
        family="sd15",
        file_name=staged.file_name,
        size=staged.size,
        sha256=staged.sha256,
        created_at=time.time(),
        storage_key=staged.storage_key,
    )
    session.add(model)
    session.flush()
    return model


def add_private_model(
    session: Session,
    settings: Settings,
    storage: Storage,
    *,
    project_id: int,
    name: str,
    source: Path | BinaryIO,
    file_name: str = "",
) -> PrivateModel:
    """Check, stage, store and record in one go (the CLI's path); the caller commits (and
    calls `discard_file` if that fails)."""
    check_name_free(session, project_id, name)
    session.rollback()  # no transaction held while the file is copied
    staged = stage_checkpoint(settings, source, file_name)
    try:
        key = store_checkpoint(storage, staged)
        try:
            return record_private_model(
                session, settings, project_id=project_id, name=name, staged=staged
            )
        except BaseException:
            storage.delete_prefix(key)
            raise
    finally:
        staged.discard()


def discard_file(settings: Settings, storage: Storage, model_id: int, storage_key: str) -> None:
    """Delete a removed (or never recorded) model's file: in the storage and this host's
    copy. Other workers' copies go when a task next asks for the model."""
    if storage_key:
        storage.delete_prefix(storage_key)
    checkpoint_path(settings, model_id).unlink(missing_ok=True)


def list_private_models(session: Session, project_id: int) -> list[PrivateModel]:
    query = select(PrivateModel).where(PrivateModel.project_id == project_id)
    return list(session.scalars(query.order_by(PrivateModel.id)))


def find_private_model(session: Session, project_id: int, value: str) -> PrivateModel | None:
    """The project's model named by id or by name; None for unknown and other projects'."""
    value = str(value).strip()
    query = select(PrivateModel).where(PrivateModel.project_id == project_id)
    if value.isascii() and value.isdigit():
        number = parse_id(value)
        return None if number is None else session.scalar(query.where(PrivateModel.id == number))
    return session.scalar(query.where(PrivateModel.name == value))


def remove_private_model(session: Session, project_id: int, value: str) -> PrivateModel | None:
    """Delete the record; the caller commits, then removes the file with `discard_file`."""
    model = find_private_model(session, project_id, value)
    if model is None:
        return None
    session.delete(model)
    session.flush()
    return model


def record(model: PrivateModel) -> dict[str, str]:
    """The API's view of a private model (strings, as every number in the envelope)."""
    return {
        "id": str(model.id),
        "name": model.name,
        "family": model.family,
        "filename": model.file_name,
        "size": str(model.size),
        "sha256": model.sha256,
        "createtime": str(int(model.created_at)),
    }
