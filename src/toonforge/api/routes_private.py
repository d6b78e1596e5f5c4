"""A project's private base models (AnimateDiff's `selectedModelPrivate`), signed like Run.

- `POST /v1/PrivateModel/Add`: multipart form with `name` and `file` (a single-file SD 1.5
  `.safetensors` checkpoint) -> `{"result", "errors", "models": [MODEL]}`.
- `POST /v1/PrivateModel/List` -> `{"result", "errors", "total", "models": [...]}`.
- `POST /v1/PrivateModel/Delete`: `id` (or `name`) -> `{"result", "errors", "models": [MODEL]}`.

MODEL: `id`, `name`, `family`, `filename`, `size`, `sha256`, `createtime` (strings). The `id`
is the value to send as `selectedModelPrivate`. Only the calling project's models are ever
listed, used or deleted; another project's model answers "Private model not found."
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from toonforge.api.auth import ReplayGuard
from toonforge.api.body import INVALID, limited, str_field
from toonforge.api.deps import (
    BodyDep,
    ProjectDep,
    ReplayGuardDep,
    ServicesDep,
)
from toonforge.api.envelope import NOT_FOUND, ApiError, ok
from toonforge.services import Services
from toonforge.tasks.private_models import (
    PrivateModelError,
    check_name_free,
    discard_file,
    list_private_models,
    record,
    record_private_model,
    remove_private_model,
    stage_checkpoint,
    store_checkpoint,
)
from toonforge.tasks.projects import ProjectInfo

router = APIRouter()
NOT_FOUND_MESSAGE = "Private model not found."


@router.post("/v1/PrivateModel/Add")
async def add(
    request: Request, project: ProjectDep, services: ServicesDep, replay: ReplayGuardDep
) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").lower()
    if not (ctype.startswith("multipart/form-data") and "boundary=" in ctype):
        raise ApiError("Request parameter [file] required (send multipart/form-data)")
    settings = services.settings
    limit = int(settings.private_model_max_gb * 1024**3)
    too_large = ApiError(
        f"Request parameter [file] is larger than {settings.private_model_max_gb:g} GB, "
        "the limit for private models (TOONFORGE_PRIVATE_MODEL_MAX_GB)",
        status=413,
    )
    try:
        body = limited(request, limit + FORM_OVERHEAD_BYTES, too_large)
    except ApiError as exc:
        raise too_large if exc.status == 413 else exc from None
    try:
        form = await body.form(max_files=1, max_fields=10)
    except ApiError:
        raise
    except Exception as exc:  # python-multipart raises several types for bad bodies
        raise ApiError(INVALID) from exc
    upload = form.get("file")
    name = form.get("name")
    try:
        if not isinstance(upload, UploadFile):
            raise ApiError("Request parameter [file] required")
        if upload.size is not None and upload.size > limit:
            raise too_large
        if not isinstance(name, str) or not name.strip():
            raise ApiError("Request parameter [name] required")
        created = await run_in_threadpool(
            _store_private_model, request, services, project, replay, name, upload
        )
    finally:
        await form.close()
    return ok(models=[created])


# Room for the form's own parts around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


def _store_private_model(
    request: Request,
    services: Services,
    project: ProjectInfo,
    replay: ReplayGuard,
    name: str,
    upload: UploadFile,
) -> dict[str, str]:
    """Copy, hash and check the file with no transaction open; then one short write
    transaction records it (and the request, against replays)."""
    settings = services.settings
    stored = False
    with services.read_sessions() as session:
        try:
            check_name_free(session, project.id, name)
        except PrivateModelError as exc:
            raise ApiError(f"Request parameter [name] {exc}") from exc
    try:
        staged = stage_checkpoint(settings, upload.file, upload.filename or "")
    except PrivateModelError as exc:
        raise ApiError(f"Request parameter [file] {exc}") from exc
    try:
        store_checkpoint(services.storage, staged)
        with services.sessions() as session:
            # A multipart body is not hashed whole: its boundary, unique per request, and
            # its length stand for it.
            digest = f"{request.headers.get('content-type', '')}|{staged.sha256}"
            replay.check(session, request, project, digest)
            try:
                model = record_private_model(
                    session, settings, project_id=project.id, name=name, staged=staged
                )
            except PrivateModelError as exc:
                raise ApiError(f"Request parameter [name] {exc}") from exc
            session.commit()
            stored = True
            return record(model)
    finally:
        staged.discard()
        if staged.storage_key and not stored:
            services.storage.delete_prefix(staged.storage_key)


@router.post("/v1/PrivateModel/List")
def list_models(services: ServicesDep, project: ProjectDep) -> dict[str, Any]:
    with services.read_sessions() as session:
        models = [record(m) for m in list_private_models(session, project.id)]
        return ok(total=str(len(models)), models=models)


@router.post("/v1/PrivateModel/Delete")
def delete(
    request: Request,
    body: BodyDep,
    project: ProjectDep,
    services: ServicesDep,
    replay: ReplayGuardDep,
) -> dict[str, Any]:
    with services.sessions() as session:
        value = str_field(body, "id", "name")
        if not value:
            raise ApiError("Request parameter [id] required")
        replay.check(session, request, project, request.state.body_digest)
        model = remove_private_model(session, project.id, value)
        if model is None:
            raise ApiError(NOT_FOUND_MESSAGE, code=NOT_FOUND)
        removed, key = record(model), model.storage_key
        session.commit()
        discard_file(services.settings, services.storage, int(removed["id"]), key)
        return ok(models=[removed])
