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

from toonforge.api.body import INVALID, str_field
from toonforge.api.deps import BodyDep, ProjectDep, ServicesDep, SessionDep
from toonforge.api.envelope import NOT_FOUND, ApiError, ok
from toonforge.tasks.private_models import (
    PrivateModelError,
    add_private_model,
    discard_file,
    list_private_models,
    record,
    remove_private_model,
)

router = APIRouter()
NOT_FOUND_MESSAGE = "Private model not found."


@router.post("/v1/PrivateModel/Add")
async def add(
    request: Request, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "").lower()
    if not (ctype.startswith("multipart/form-data") and "boundary=" in ctype):
        raise ApiError("Request parameter [file] required (send multipart/form-data)")
    limit = int(services.settings.private_model_max_gb * 1024**3)
    too_large = ApiError(
        f"Request parameter [file] is larger than {services.settings.private_model_max_gb:g} GB, "
        "the limit for private models (TOONFORGE_PRIVATE_MODEL_MAX_GB)"
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit + 64 * 1024:  # room for the form's own parts
        raise too_large
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:  # python-multipart raises several types for bad bodies
        raise ApiError(INVALID) from exc
    upload = form.get("file")
    name = form.get("name")
    if not isinstance(upload, UploadFile):
        raise ApiError("Request parameter [file] required")
    if upload.size is not None and upload.size > limit:
        await upload.close()
        raise too_large
    if not isinstance(name, str) or not name.strip():
        raise ApiError("Request parameter [name] required")
    settings = services.settings

    def store() -> Any:
        try:
            model = add_private_model(
                session,
                settings,
                project_id=project.id,
                name=name,
                source=upload.file,
                file_name=upload.filename or "",
            )
        except PrivateModelError as exc:
            session.rollback()
            raise ApiError(f"Request parameter [file] {exc}") from exc
        try:
            session.commit()
        except Exception:
            session.rollback()
            discard_file(settings, model.id)
            raise
        return record(model)

    try:
        created = await run_in_threadpool(store)
    finally:
        await upload.close()
    return ok(models=[created])


@router.post("/v1/PrivateModel/List")
def list_models(project: ProjectDep, session: SessionDep) -> dict[str, Any]:
    models = [record(m) for m in list_private_models(session, project.id)]
    return ok(total=str(len(models)), models=models)


@router.post("/v1/PrivateModel/Delete")
def delete(
    body: BodyDep, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    value = str_field(body, "id", "name")
    if not value:
        raise ApiError("Request parameter [id] required")
    model = remove_private_model(session, project.id, value)
    if model is None:
        raise ApiError(NOT_FOUND_MESSAGE, code=NOT_FOUND)
    removed = record(model)
    session.commit()
    discard_file(services.settings, int(removed["id"]))
    return ok(models=[removed])
