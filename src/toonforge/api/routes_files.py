"""Files at absolute URLs: /v1/File/{accesskey}/{name}, task outputs and uploads alike. The
per-file access key is the capability; a deleted task's files (and deleted uploads) are gone.
A file in local storage is served here; one in S3 storage is a redirect to its direct URL
(presigned, or under the public base URL).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy import select

from toonforge.api.deps import ServicesDep
from toonforge.api.envelope import NOT_FOUND, ApiError
from toonforge.services import Services
from toonforge.tasks.models import TaskOutput
from toonforge.tasks.uploads import find_by_accesskey

router = APIRouter()

# An upload is whatever a client sent: served so that a browser never runs it as a page of
# this server (no sniffing, sandboxed if it is HTML or SVG).
UPLOAD_HEADERS = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}


def _not_found() -> ApiError:
    return ApiError("File not found.", code=NOT_FOUND, status=404)


def _serve(
    services: Services, key: str, content_type: str, headers: dict[str, str] | None = None
) -> Response:
    link = services.storage.direct_link(key)
    if link is not None:
        # The store answers for a missing object; no request to it is made here.
        return RedirectResponse(link.url, status_code=302, headers={"Cache-Control": "no-store"})
    path = services.storage.local_path(key)
    if path is None:
        raise _not_found()
    return FileResponse(path, media_type=content_type, headers=headers)


@router.api_route("/v1/File/{accesskey}/{name}", methods=["GET", "HEAD"])
def get_file(accesskey: str, name: str, services: ServicesDep) -> Response:
    with services.read_sessions() as session:
        out = session.scalar(select(TaskOutput).where(TaskOutput.accesskey == accesskey))
        if out is not None:
            if out.name != name or out.task.files_deleted:
                raise _not_found()
            return _serve(services, out.storage_key, out.content_type)
        upload = find_by_accesskey(session, accesskey)
        if upload is None or upload.name != name:
            raise _not_found()
        return _serve(services, upload.storage_key, upload.content_type, UPLOAD_HEADERS)
