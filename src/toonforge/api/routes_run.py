"""POST /v1/Run/{owner}/{model}: validate, queue, answer with the task id and socket token."""

from __future__ import annotations

from fastapi import APIRouter

from toonforge.api.deps import BodyDep, ProjectDep, ServicesDep, SessionDep
from toonforge.api.envelope import CONCURRENCY, GENERAL, NOT_FOUND, ApiError, ok
from toonforge.catalog.validation import InvalidInputs, validate_inputs
from toonforge.tasks.store import ConcurrencyLimitReached, create_task

router = APIRouter()


@router.post("/v1/Run/{owner}/{model}")
def run(
    owner: str,
    model: str,
    body: BodyDep,
    project: ProjectDep,
    services: ServicesDep,
    session: SessionDep,
) -> dict[str, object]:
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
    try:
        params = validate_inputs(manifest, body)
    except InvalidInputs as exc:
        raise ApiError(
            exc.issues[0].message,
            errors=[{"code": GENERAL, "message": i.message} for i in exc.issues],
        ) from exc
    callback = body.get("callbackUrl")
    try:
        task = create_task(
            session,
            project=project,
            tool_key=manifest.key,
            model_id=manifest.id,
            cps=manifest.cps,
            parameters=params,
            callback_url=str(callback).strip() if callback else "",
        )
        session.commit()
    except ConcurrencyLimitReached as exc:
        session.rollback()
        raise ApiError(
            f"Concurrent task limit reached: this project may have {exc.limit} unfinished "
            "tasks at once.",
            code=CONCURRENCY,
        ) from exc
    return ok(taskid=str(task.id), socketaccesstoken=task.socket_token)
