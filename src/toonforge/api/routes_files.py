"""Output files at absolute URLs: /v1/File/{accesskey}/{name}. The per-file access key is
the capability; a deleted task's files are gone."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from toonforge.api.deps import ReadSessionDep, ServicesDep
from toonforge.api.envelope import NOT_FOUND, ApiError
from toonforge.tasks.models import TaskOutput

router = APIRouter()


@router.api_route("/v1/File/{accesskey}/{name}", methods=["GET", "HEAD"])
def get_file(
    accesskey: str, name: str, services: ServicesDep, session: ReadSessionDep
) -> FileResponse:
    out = session.scalar(select(TaskOutput).where(TaskOutput.accesskey == accesskey))
    if out is None or out.name != name or out.task.files_deleted:
        raise ApiError("File not found.", code=NOT_FOUND, status=404)
    path = services.storage.path(out.storage_key)
    if path is None:
        raise ApiError("File not found.", code=NOT_FOUND, status=404)
    return FileResponse(path, media_type=out.content_type, filename=None)
