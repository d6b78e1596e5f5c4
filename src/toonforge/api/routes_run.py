"""POST /v1/Run/{owner}/{model}: validate, queue, answer with the task id and socket token;
with `Prefer: wait=N`, also the finished task when it ends within N seconds (run_wait.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from toonforge.api.auth import ReplayGuard
from toonforge.api.deps import BodyDep, ProjectDep, ReplayGuardDep, ServicesDep
from toonforge.api.envelope import CONCURRENCY, GENERAL, NOT_FOUND, ApiError, ok
from toonforge.api.file_inputs import resolve_file_inputs
from toonforge.api.run_wait import wait_for_end, wait_preference
from toonforge.catalog.batch_key import batch_key
from toonforge.catalog.manifest import Manifest
from toonforge.catalog.validation import InvalidInputs, validate_inputs
from toonforge.ops.logging import bind as bind_log
from toonforge.services import Services
from toonforge.tasks.models import Task
from toonforge.tasks.private_models import find_private_model
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.store import ConcurrencyLimitReached, create_task
from toonforge.tasks.uploads import link_to_task

log = logging.getLogger("toonforge.api")

router = APIRouter()


@router.post("/v1/Run/{owner}/{model}")
async def run(
    owner: str,
    model: str,
    request: Request,
    response: Response,
    body: BodyDep,
    project: ProjectDep,
    services: ServicesDep,
    replay: ReplayGuardDep,
) -> dict[str, object]:
    """Queue the task (on a thread); with `Prefer: wait=N`, then wait for its end on the
    event hub, holding no thread and no connection meanwhile."""
    wait = wait_preference(request.headers.get("prefer"))
    task = await run_in_threadpool(
        queue_task, owner, model, request, body, project, services, replay
    )
    answer = ok(taskid=str(task.id), socketaccesstoken=task.socket_token)
    if wait is None:
        return answer
    response.headers["Preference-Applied"] = f"wait={wait:g}"
    record = await wait_for_end(request.app.state.hub, services, task.id, wait)
    return answer if record is None else {**answer, "tasklist": [record]}


def queue_task(
    owner: str,
    model: str,
    request: Request,
    body: dict[str, Any],
    project: ProjectInfo,
    services: Services,
    replay: ReplayGuard,
) -> Task:
    """Validation reads only; the one write transaction (replay guard, concurrency limit,
    the task row) starts after it, so on SQLite the write lock is held for a moment."""
    manifest = services.catalog.find(owner, model)
    if manifest is None:
        raise ApiError("slug-owner-project-not-exist", code=NOT_FOUND)
    if not manifest.engine_ready:
        raise ApiError(
            "tool-not-accessible",
            errors=[
                {"code": NOT_FOUND, "message": "tool-not-accessible"},
                {"code": GENERAL, "message": manifest.engine_note or "engine not available"},
            ],
        )
    with services.read_sessions() as read_session:
        body, extra_options = private_model_options(read_session, project.id, manifest, body)
        body, uploads = resolve_file_inputs(
            read_session, project.id, manifest, body, services.settings.resolved_public_url
        )
    try:
        params = validate_inputs(manifest, body, extra_options)
    except InvalidInputs as exc:
        raise ApiError(
            exc.issues[0].message,
            errors=[{"code": GENERAL, "message": i.message} for i in exc.issues],
        ) from exc
    callback = body.get("callbackUrl")
    try:
        with services.sessions() as session:
            replay.check(session, request, project, request.state.body_digest)
            task = create_task(
                session,
                project=project,
                tool_key=manifest.key,
                model_id=manifest.id,
                cps=manifest.cps,
                parameters=params,
                callback_url=str(callback).strip() if callback else "",
                batch_key=batch_key(manifest, params),
            )
            link_to_task(session, task.id, uploads)
            session.commit()
        bind_log(task_id=task.id)
        log.debug("task %s queued for %s", task.id, manifest.key)
    except IntegrityError as exc:
        # An upload named by a file input was deleted between the check and the commit.
        raise ApiError(
            "An uploaded file given as input was deleted meanwhile; upload it again.",
            code=NOT_FOUND,
        ) from exc
    except ConcurrencyLimitReached as exc:
        raise ApiError(
            f"Concurrent task limit reached: this project may have {exc.limit} unfinished "
            "tasks at once.",
            code=CONCURRENCY,
        ) from exc
    return task


PRIVATE_INPUT = "selectedModelPrivate"


def private_model_options(
    session: Session, project_id: int, manifest: Manifest, body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Check `selectedModelPrivate` against the calling project's own models: the value (an
    id or a name) becomes the model's id; another project's model is "not found" exactly like
    one that does not exist."""
    raw = body.get(PRIVATE_INPUT)
    if manifest.input(PRIVATE_INPUT) is None or raw is None or str(raw).strip() == "":
        return body, {}
    value = str(raw).strip()
    model = find_private_model(session, project_id, value)
    if model is None:
        message = (
            f"Request parameter [{PRIVATE_INPUT}] private model {value!r} not found in this project"
        )
        raise ApiError(message, errors=[{"code": GENERAL, "message": message}])
    return {**body, PRIVATE_INPUT: str(model.id)}, {PRIVATE_INPUT: [str(model.id)]}
