"""Files at absolute URLs: /v1/File/{accesskey}/{name}, task outputs and uploads alike. The
per-file access key is the capability; a deleted task's files (and deleted uploads) are gone.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse
from sqlalchemy import select

from toonforge.api.deps import ServicesDep
from toonforge.api.envelope import NOT_FOUND, ApiError
from toonforge.tasks.models import TaskOutput
from toonforge.tasks.uploads import find_by_accesskey

router = APIRouter()

# An upload is whatever a client sent: served so that a browser never runs it as a page of
# this server (no sniffing, sandboxed if it is HTML or SVG).
UPLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def _not_found() -> ApiError:
    return ApiError("File not found.", code=NOT_FOUND, status=404)


@router.api_route("/v1/File/{accesskey}/{name}", methods=["GET", "HEAD"])
def get_file(accesskey: str, name: str, services: ServicesDep) -> FileResponse:
    with services.read_sessions() as session:
        out = session.scalar(select(TaskOutput).where(TaskOutput.accesskey == accesskey))
        if out is not None:
            if out.name != name or out.task.files_deleted:
                raise _not_found()
            path = services.storage.path(out.storage_key)
            if path is None:
                raise _not_found()
            return FileResponse(path, media_type=out.content_type, filename=None)
        upload = find_by_accesskey(session, accesskey)
        if upload is None or upload.name != name:
            raise _not_found()
        path = services.storage.path(upload.storage_key)
        if path is None:
            raise _not_found()
        return FileResponse(path, media_type=upload.content_type, headers=UPLOAD_HEADERS)
