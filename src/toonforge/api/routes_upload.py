"""POST /v1/File/Upload: a multipart `file` -> `{"list": [{id, name, contenttype, size, url,
addedtime, accesskey}]}`, signed like Run.

The size limit is `TOONFORGE_UPLOAD_MAX_MB`: after authentication (from the headers), a
Content-Length over it is refused before the body is read, and a body without one is counted
while it streams in and refused (413) as soon as it passes the limit.
"""

from __future__ import annotations

import mimetypes
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from toonforge.api.body import INVALID
from toonforge.api.deps import ProjectDep, ReplayGuardDep, ServicesDep
from toonforge.api.envelope import ApiError, ok
from toonforge.services import Services
from toonforge.tasks.uploads import discard_upload, store_upload, upload_record

router = APIRouter()

FORM_OVERHEAD = 64 * 1024  # room for the multipart boundaries and part headers


class TooLarge(Exception):
    pass


def _limit(services: Services) -> int:
    return int(services.settings.upload_max_mb * 1024 * 1024)


def _too_large(services: Services) -> ApiError:
    return ApiError(
        f"Request parameter [file] is larger than {services.settings.upload_max_mb:g} MB, "
        "the limit for uploads (TOONFORGE_UPLOAD_MAX_MB)",
        status=413,
    )


def check_length(request: Request, services: Services) -> None:
    """An announced body over the limit is never read."""
    length = request.headers.get("content-length", "").strip()
    if length.isascii() and length.isdigit() and int(length) > _limit(services) + FORM_OVERHEAD:
        raise _too_large(services)


async def _limited(request: Request, most: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > most:
            raise TooLarge
        yield chunk


async def _read_form(request: Request, services: Services) -> FormData:
    ctype = request.headers.get("content-type", "").lower()
    if not (ctype.startswith("multipart/form-data") and "boundary=" in ctype):
        raise ApiError("Request parameter [file] required (send multipart/form-data)")
    parser = MultiPartParser(
        request.headers,
        _limited(request, _limit(services) + FORM_OVERHEAD),
        max_files=1,
        max_fields=10,
    )
    try:
        return await parser.parse()
    except TooLarge as exc:
        raise _too_large(services) from exc
    except MultiPartException as exc:
        raise ApiError(INVALID) from exc


def _content_type(upload: UploadFile) -> str:
    declared = (upload.content_type or "").split(";")[0].strip().lower()
    if declared and declared != "application/octet-stream":
        return declared
    guessed, _ = mimetypes.guess_type(upload.filename or "")
    return guessed or "application/octet-stream"


@router.post("/v1/File/Upload")
async def file_upload(
    request: Request,
    project: ProjectDep,
    services: ServicesDep,
    replay: ReplayGuardDep,
) -> dict[str, Any]:
    check_length(request, services)
    form = await _read_form(request, services)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError("Request parameter [file] required")
        if (upload.size or 0) > _limit(services):
            raise _too_large(services)
        if not upload.size:
            raise ApiError("Request parameter [file] is empty")
        folder = form.get("folderid")
        if isinstance(folder, str) and folder.strip():
            raise ApiError(
                "Request parameter [folderid] is not supported: this server has no folders"
            )
        public_url = services.settings.resolved_public_url

        def store() -> dict[str, Any]:
            with services.sessions() as session:
                return _store(session)

        def _store(session: Session) -> dict[str, Any]:
            row = store_upload(
                session,
                services.storage,
                project_id=project.id,
                filename=upload.filename or "",
                content_type=_content_type(upload),
                source=upload.file,
            )
            try:
                # A multipart body is not hashed whole: its boundary (unique per request)
                # and the file's size stand for it.
                digest = f"{request.headers.get('content-type', '')}|{row.size}"
                replay.check(session, request, project, digest)
                session.commit()
            except BaseException:
                session.rollback()
                discard_upload(services.storage, row)
                raise
            return upload_record(row, public_url)

        record = await run_in_threadpool(store)
    finally:
        await form.close()
    return ok(list=[record])
