"""Task/Detail, Task/Cancel, Task/Kill, Task/InputOutputDelete."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from toonforge.api.body import str_field
from toonforge.api.deps import (
    BodyDep,
    ProjectDep,
    ReplayGuardDep,
    ServicesDep,
)
from toonforge.api.envelope import GENERAL, NOT_FOUND, ApiError, ok
from toonforge.api.hub import EventHub
from toonforge.ops.logging import bind as bind_log
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.ids import parse_id
from toonforge.tasks.models import CallbackDelivery, Task
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.queue_position import queue_spot_of
from toonforge.tasks.record import read_task_view, task_record
from toonforge.tasks.store import cancel_queued, find_task, request_kill
from toonforge.tasks.uploads import remove_task_uploads

router = APIRouter()

NO_TASK = "There is no task yet."
KILL_WAIT_SECONDS = 10.0


def _lookup(session: Session, project: ProjectInfo, body: dict[str, Any]) -> Task:
    taskid = str_field(body, "taskid")
    token = str_field(body, "tasktoken", "socketaccesstoken")
    if not taskid and not token:
        raise ApiError("taskid or socketaccesstoken is required", code=GENERAL)
    task = find_task(session, project.id, taskid=taskid or None, token=None if taskid else token)
    if task is None:
        raise ApiError(NO_TASK, code=NOT_FOUND)
    bind_log(task_id=task.id)
    return task


def _record(services: Services, session: Session, task: Any) -> dict[str, Any]:
    # Only a task run with a callbackUrl has deliveries: no query for the others.
    deliveries = (
        list(
            session.scalars(
                select(CallbackDelivery)
                .where(CallbackDelivery.task_id == task.id)
                .order_by(CallbackDelivery.id)
            )
        )
        if task.callback_url
        else []
    )
    return task_record(
        task,
        links=services.links,
        manifest=services.catalog.by_key(task.tool_key),
        deliveries=deliveries,
        queue=queue_spot_of(services, session, task),
    )


@router.post("/v1/Task/Detail")
def detail(body: BodyDep, project: ProjectDep, services: ServicesDep) -> dict[str, Any]:
    taskid = str_field(body, "taskid")
    token = str_field(body, "tasktoken", "socketaccesstoken")
    if not taskid and not token:
        raise ApiError("taskid or socketaccesstoken is required", code=GENERAL)
    number = parse_id(taskid) if taskid else None
    with services.read_sessions() as session:
        task = None
        if number is not None or not taskid:
            task = read_task_view(session, project.id, taskid=number, token=token or None)
        if task is None:
            raise ApiError(NO_TASK, code=NOT_FOUND)
        return ok(total="1", tasklist=[_record(services, session, task)])


NOT_CANCELLABLE = "Task is not in a cancellable state."
CANCEL_HINT = (
    "Task/Cancel removes a task that is still queued; use Task/Kill to stop a task a worker "
    "has taken."
)


@router.post("/v1/Task/Cancel")
def cancel(
    request: Request,
    body: BodyDep,
    project: ProjectDep,
    services: ServicesDep,
    replay: ReplayGuardDep,
) -> dict[str, Any]:
    with services.sessions() as session:
        task = _lookup(session, project, body)
        replay.check(session, request, project, request.state.body_digest)
        if not cancel_queued(session, task):
            session.rollback()
            if lc.is_terminal(task.status):
                raise ApiError(NOT_CANCELLABLE, code=NOT_FOUND)
            raise ApiError(
                NOT_CANCELLABLE,
                errors=[
                    {"code": NOT_FOUND, "message": NOT_CANCELLABLE},
                    {"code": GENERAL, "message": CANCEL_HINT},
                ],
            )
        session.commit()
        session.refresh(task)
        return ok(tasklist=[_record(services, session, task)])


def _request_kill(
    request: Request, body: dict[str, Any], project: ProjectInfo, services: Services
) -> int:
    guard = request.app.state.replay_guard
    with services.sessions() as session:
        task = _lookup(session, project, body)
        guard.check(session, request, project, request.state.body_digest)
        reason = request_kill(session, task)
        if reason:
            session.rollback()
            raise ApiError(f"Task could not be killed: {reason}", code=NOT_FOUND)
        session.commit()
        return task.id


def _current_record(services: Services, task_id: int) -> tuple[str, dict[str, Any]]:
    with services.read_sessions() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.status, _record(services, session, task)


@router.post("/v1/Task/Kill")
async def kill(
    request: Request, body: BodyDep, project: ProjectDep, services: ServicesDep
) -> dict[str, Any]:
    hub: EventHub = request.app.state.hub
    task_id = await run_in_threadpool(_request_kill, request, body, project, services)
    # The worker stops between two denoising steps; wait (woken by the task's events, not
    # polling) so the answer shows the task as it ends (task_cancel) in the common case.
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    with hub.follow(task_id) as news:
        while True:
            status, record = await run_in_threadpool(_current_record, services, task_id)
            remaining = deadline - time.monotonic()
            if lc.is_terminal(status) or remaining <= 0:
                return ok(tasklist=[record])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), remaining)
            news.clear()


@router.post("/v1/Task/InputOutputDelete")
def input_output_delete(
    request: Request,
    body: BodyDep,
    project: ProjectDep,
    services: ServicesDep,
    replay: ReplayGuardDep,
) -> dict[str, Any]:
    with services.sessions() as session:
        token = str_field(body, "tasktoken", "socketaccesstoken")
        taskid = str_field(body, "taskid")
        if not token and not taskid:
            raise ApiError("tasktoken is required", code=GENERAL)
        task = find_task(
            session, project.id, taskid=taskid or None, token=None if taskid else token
        )
        if task is None:
            raise ApiError(NO_TASK, code=NOT_FOUND)
        bind_log(task_id=task.id)
        if not lc.is_terminal(task.status):
            raise ApiError(
                "Task must be completed or cancelled before deleting files", code=GENERAL
            )
        replay.check(session, request, project, request.state.body_digest)
        # Mark first, then delete: a crash in between leaves files nobody can reach, never a
        # record that points at missing files.
        session.execute(update(Task).where(Task.id == task.id).values(files_deleted=True))
        session.commit()
        services.storage.delete_prefix(task.uuid)
        remove_task_uploads(session, services.storage, task.id)
        session.refresh(task)
        return ok(tasklist=[_record(services, session, task)])
