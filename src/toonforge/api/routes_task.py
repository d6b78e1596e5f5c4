"""Task/Detail, Task/Cancel, Task/Kill, Task/InputOutputDelete."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from toonforge.api.body import str_field
from toonforge.api.deps import BodyDep, ProjectDep, ServicesDep, SessionDep
from toonforge.api.envelope import GENERAL, NOT_FOUND, ApiError, ok
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import CallbackDelivery, Project, Task
from toonforge.tasks.record import task_record
from toonforge.tasks.store import cancel_queued, find_task, request_kill
from toonforge.tasks.uploads import remove_task_uploads

router = APIRouter()

NO_TASK = "There is no task yet."
KILL_WAIT_SECONDS = 10.0


def _lookup(session: Session, project: Project, body: dict[str, Any]) -> Task:
    taskid = str_field(body, "taskid")
    token = str_field(body, "tasktoken", "socketaccesstoken")
    if not taskid and not token:
        raise ApiError("taskid or socketaccesstoken is required", code=GENERAL)
    task = find_task(session, project.id, taskid=taskid or None, token=None if taskid else token)
    if task is None:
        raise ApiError(NO_TASK, code=NOT_FOUND)
    return task


def _record(services: Services, session: Session, task: Task) -> dict[str, Any]:
    deliveries = list(
        session.scalars(
            select(CallbackDelivery)
            .where(CallbackDelivery.task_id == task.id)
            .order_by(CallbackDelivery.id)
        )
    )
    return task_record(
        task,
        public_url=services.settings.resolved_public_url,
        manifest=services.catalog.by_key(task.tool_key),
        deliveries=deliveries,
    )


@router.post("/v1/Task/Detail")
def detail(
    body: BodyDep, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    task = _lookup(session, project, body)
    return ok(total="1", tasklist=[_record(services, session, task)])


@router.post("/v1/Task/Cancel")
def cancel(
    body: BodyDep, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    task = _lookup(session, project, body)
    if not cancel_queued(session, task):
        session.rollback()
        raise ApiError("Task is not in a cancellable state.", code=NOT_FOUND)
    session.commit()
    session.refresh(task)
    return ok(tasklist=[_record(services, session, task)])


@router.post("/v1/Task/Kill")
def kill(
    body: BodyDep, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    task = _lookup(session, project, body)
    reason = request_kill(session, task)
    if reason:
        session.rollback()
        raise ApiError(f"Task could not be killed: {reason}", code=NOT_FOUND)
    session.commit()
    # The worker stops between two denoising steps; wait for it so the answer shows the
    # task as it ends (task_cancel) in the common case.
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while time.monotonic() < deadline:
        session.refresh(task)
        if lc.is_terminal(task.status):
            break
        session.commit()
        time.sleep(0.05)
    return ok(tasklist=[_record(services, session, task)])


@router.post("/v1/Task/InputOutputDelete")
def input_output_delete(
    body: BodyDep, project: ProjectDep, services: ServicesDep, session: SessionDep
) -> dict[str, Any]:
    token = str_field(body, "tasktoken", "socketaccesstoken")
    taskid = str_field(body, "taskid")
    if not token and not taskid:
        raise ApiError("tasktoken is required", code=GENERAL)
    task = find_task(session, project.id, taskid=taskid or None, token=None if taskid else token)
    if task is None:
        raise ApiError(NO_TASK, code=NOT_FOUND)
    if not lc.is_terminal(task.status):
        raise ApiError("Task must be completed or cancelled before deleting files", code=GENERAL)
    # Mark first, then delete: a crash in between leaves files nobody can reach, never a
    # record that points at missing files.
    session.execute(update(Task).where(Task.id == task.id).values(files_deleted=True))
    session.commit()
    services.storage.delete_prefix(task.uuid)
    remove_task_uploads(session, services.storage, task.id)
    session.refresh(task)
    return ok(tasklist=[_record(services, session, task)])
