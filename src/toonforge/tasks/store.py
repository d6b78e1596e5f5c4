"""Task operations shared by the API and the worker. Every change of status is stamped and
stored as an event in the same transaction, so the WebSocket and Detail never disagree."""

from __future__ import annotations

import time
import uuid as uuidlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import claim_first
from toonforge.tasks.ids import parse_id
from toonforge.tasks.models import CallbackDelivery, Task, TaskEvent, TaskOutput
from toonforge.tasks.notify import CALLBACKS, EVENTS, QUEUE, announce
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.task_metrics import CANCELLED, record_task_end
from toonforge.tasks.tokens import random_hex, random_token


class ConcurrencyLimitReached(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"limit {limit}")
        self.limit = limit


@dataclass
class NewOutput:
    name: str
    content_type: str
    size: int
    storage_key: str


def now() -> float:
    return time.time()


def add_event(session: Session, task_id: int, type_: str, message: Any = None) -> None:
    session.add(TaskEvent(task_id=task_id, type=type_, message=message, created_at=now()))
    announce(session, EVENTS, str(task_id))


def create_task(
    session: Session,
    *,
    project: ProjectInfo,
    tool_key: str,
    model_id: str,
    cps: str,
    parameters: dict[str, Any],
    callback_url: str,
    batch_key: str | None = None,
) -> Task:
    """Insert a queued task, enforcing the project's limit on unfinished tasks in the same
    transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the project row is locked)."""
    if project.max_running_tasks > 0:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            # Serialise this project's Runs so two cannot both pass the count.
            session.execute(
                text("SELECT id FROM projects WHERE id = :id FOR UPDATE"), {"id": project.id}
            )
        unfinished = session.scalar(
            select(func.count(Task.id)).where(
                Task.project_id == project.id, Task.status.not_in(lc.TERMINAL)
            )
        )
        if (unfinished or 0) >= project.max_running_tasks:
            raise ConcurrencyLimitReached(project.max_running_tasks)
    t = now()
    task = Task(
        uuid=str(uuidlib.uuid4()),
        socket_token=random_token(30),
        project_id=project.id,
        tool_key=tool_key,
        model_id=model_id,
        status=lc.QUEUE,
        parameters=parameters,
        cps=cps,
        callback_url=callback_url,
        batch_key=batch_key,
        createtime=t,
        attempts=0,
        kill_requested=False,
        files_deleted=False,
        debugoutput="",
        debugerror="",
        pexit="",
        totalcost="0",
    )
    session.add(task)
    session.flush()
    add_event(session, task.id, lc.QUEUE)
    announce(session, QUEUE, tool_key)
    return task


def find_task(
    session: Session, project_id: int, *, taskid: str | None = None, token: str | None = None
) -> Task | None:
    """A task of this project only: another project's task is indistinguishable from none."""
    query = select(Task).where(Task.project_id == project_id)
    if taskid:
        number = parse_id(taskid)
        if number is None:
            return None
        query = query.where(Task.id == number)
    elif token:
        query = query.where(Task.socket_token == token)
    else:
        return None
    return session.scalar(query)


def cancel_queued(session: Session, task: Task) -> bool:
    """Cancel only if still queued: one conditional UPDATE, so a worker claiming the task at
    the same moment either wins or loses cleanly."""
    t = now()
    result = session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == lc.QUEUE)
        .values(status=lc.CANCEL, canceltime=t, pexit="", totalcost="0")
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    add_event(session, task.id, lc.CANCEL)
    record_task_end(session, task, lc.CANCEL, t, outcome=CANCELLED)
    enqueue_callback(session, task)
    return True


def request_kill(session: Session, task: Task) -> str | None:
    """Flag a running task for the worker to stop; returns a reason when it cannot be."""
    if task.status == lc.QUEUE:
        return "the task is still queued; use Task/Cancel to remove it from the queue"
    if lc.is_terminal(task.status):
        return f"the task has already ended ({task.status})"
    session.execute(update(Task).where(Task.id == task.id).values(kill_requested=True))
    return None


# --- worker side -----------------------------------------------------------------------------


def claim(
    session: Session,
    *,
    worker_id: str,
    tool_keys: Iterable[str],
    lease_seconds: float,
    max_attempts: int,
    prefer: Iterable[str] = (),
    prefer_max_wait: float = 0.0,
) -> Task | None:
    """Take the oldest task this worker can serve: queued, or held by a worker whose lease
    ran out (at-least-once). One UPDATE … WHERE id = (SELECT … SKIP LOCKED) … RETURNING that
    also moves the task to task_accept, so no other worker can see it as queued any more;
    the outer WHERE repeats the condition, which PostgreSQL re-checks on the locked row.

    Model affinity: with `prefer` (the tools whose parts this worker has loaded) and
    `prefer_max_wait` > 0, a task of a preferred tool goes before older ones of other tools,
    unless one of those has waited `prefer_max_wait` seconds: overdue tasks go first, oldest
    first, so no task waits more than that behind newer ones (fairness before affinity)."""
    t = now()
    keys = list(tool_keys)
    if not keys:
        return None
    claimable = (
        Task.tool_key.in_(keys),
        Task.kill_requested.is_(False),
        or_(
            Task.status == lc.QUEUE,
            (Task.status.in_(lc.RUNNING))
            & (Task.lease_expires_at < t)
            & (Task.attempts < max_attempts),
        ),
    )
    candidate = select(Task.id).where(*claimable)
    preferred = [k for k in prefer if k in keys]
    if preferred and prefer_max_wait > 0:
        rank = case(
            (Task.createtime < t - prefer_max_wait, 0),
            (Task.tool_key.in_(preferred), 1),
            else_=2,
        )
        candidate = candidate.order_by(rank, Task.id)
    else:
        candidate = candidate.order_by(Task.id)
    task_id = claim_first(
        session,
        Task.id,
        candidate,
        where=claimable,
        worker_id=worker_id,
        lease_expires_at=t + lease_seconds,
        attempts=Task.attempts + 1,
        status=lc.ACCEPT,
        accepttime=t,
    )
    if task_id is None:
        return None
    task = session.get(Task, task_id, populate_existing=True)
    assert task is not None
    if task.attempts > 1:
        # Only a lost worker leaves a task with attempts > 1: one that shuts down hands its
        # task back and gives the attempt back with it.
        add_event(
            session,
            task.id,
            lc.ERROR,
            f"taken again after its worker stopped responding (attempt {task.attempts})",
        )
    add_event(session, task.id, lc.ACCEPT)
    return task


def release(session: Session, task: Task, reason: str) -> None:
    """Hand a held task back to the queue (its worker is shutting down): the attempt is given
    back and the status says queued again, with the reason as a task_error event."""
    add_event(session, task.id, lc.ERROR, reason)
    _set_status(session, task, lc.QUEUE)
    task.lease_expires_at = None
    task.attempts = max(0, task.attempts - 1)
    task.worker_id = None
    announce(session, QUEUE, task.tool_key)


def reap(session: Session, *, max_attempts: int) -> list[int]:
    """End tasks no worker will finish: killed while their worker was gone (task_cancel), or
    lost by workers max_attempts times (a clear error instead of an endless retry)."""
    t = now()
    ended: list[int] = []
    stale = session.scalars(
        select(Task)
        .where(
            Task.status.in_(lc.RUNNING),
            Task.lease_expires_at < t,
            or_(Task.kill_requested.is_(True), Task.attempts >= max_attempts),
        )
        .with_for_update(skip_locked=True)
    ).all()
    for task in stale:
        if task.kill_requested:
            _set_status(session, task, lc.CANCEL)
            task.pexit = "1"
            task.debugerror = (task.debugerror + "\nkilled on request").strip()
        else:
            fail_task(
                session,
                task,
                f"the worker running this task stopped responding {task.attempts} times "
                f"(lease expired); giving up after {max_attempts} attempts",
            )
        task.worker_id = None
        enqueue_callback(session, task)
        ended.append(task.id)
    return ended


def held_by(session: Session, task_id: int, worker_id: str) -> Task | None:
    """The task if this worker still holds it (fencing: a worker whose lease expired and
    whose task was taken by another must not write to it any more)."""
    task = session.get(Task, task_id, populate_existing=True, with_for_update=True)
    if task is None or task.worker_id != worker_id or lc.is_terminal(task.status):
        return None
    return task


def record_progress(
    session: Session, worker_id: str, steps: Sequence[tuple[Any, Sequence[int]]]
) -> tuple[set[int], set[int]]:
    """Progress of a run (a lone task or a batch's) in a few Core statements, whatever the
    number of steps and tasks: each step's `task_output` event, given as (message, the ids
    of the tasks in the run at that step), for the tasks this worker still holds (fencing as
    `held_by`, rows locked in id order). Returns (held, killed): the ids still held, and
    those of them whose kill was asked."""
    ids = sorted({task_id for _, in_run in steps for task_id in in_run})
    rows = session.execute(
        select(Task.id, Task.status, Task.kill_requested)
        .where(Task.id.in_(ids), Task.worker_id == worker_id)
        .order_by(Task.id)
        .with_for_update()
    ).all()
    held = {r.id for r in rows if not lc.is_terminal(r.status)}
    for r in rows:
        if r.id in held:
            lc.check_transition(r.status, lc.OUTPUT)
    if held:
        session.execute(update(Task).where(Task.id.in_(held)).values(status=lc.OUTPUT))
        t = now()
        session.execute(
            TaskEvent.__table__.insert(),
            [
                {"task_id": task_id, "type": lc.OUTPUT, "message": message, "created_at": t}
                for message, in_run in steps
                for task_id in in_run
                if task_id in held
            ],
        )
        for task_id in held:
            announce(session, EVENTS, str(task_id))
    return held, {r.id for r in rows if r.id in held and r.kill_requested}


def extend_lease(session: Session, task_id: int, worker_id: str, lease_seconds: float) -> bool:
    result = session.execute(
        update(Task)
        .where(Task.id == task_id, Task.worker_id == worker_id, Task.status.in_(lc.RUNNING))
        .values(lease_expires_at=now() + lease_seconds)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


def _set_status(session: Session, task: Task, status: str, message: Any = None) -> None:
    lc.check_transition(task.status, status)
    task.status = status
    field = lc.TIME_FIELD.get(status)
    if field:
        setattr(task, field, now())
    add_event(session, task.id, status, message)
    if status in lc.TERMINAL:  # counted for /metrics in the same transaction
        record_task_end(session, task, status, now())


def advance(session: Session, task: Task, status: str, message: Any = None) -> None:
    _set_status(session, task, status, message)


def fail_task(session: Session, task: Task, error: str) -> None:
    """A model or worker failure is task state: task_error_full, then the closing statuses
    with pexit 1, no outputs and nothing billed."""
    task.debugerror = (task.debugerror + "\n" + error).strip()
    _set_status(session, task, lc.ERROR_FULL, error)
    for status in (lc.END, lc.POSTPROCESS_START):
        if getattr(task, lc.TIME_FIELD[status]) is None:
            _set_status(session, task, status)
    task.pexit = "1"
    task.totalcost = "0"
    _set_status(session, task, lc.POSTPROCESS_END, [])
    task.lease_expires_at = None


def elapsed_seconds(task: Task) -> float:
    if task.starttime is None:
        return 0.0
    # A killed task has no endtime: it ended when it was cancelled.
    end = task.endtime or task.canceltime or task.postprocessendtime or now()
    return max(0.0, end - task.starttime)


def total_cost(cps: str, elapsed: float) -> str:
    cost = Decimal(cps) * Decimal(f"{elapsed:.4f}")
    return f"{cost:.12f}"


def attach_outputs(session: Session, task: Task, outputs: Sequence[NewOutput]) -> None:
    t = now()
    for position, out in enumerate(outputs):
        session.add(
            TaskOutput(
                id=random_hex(16),
                task_id=task.id,
                position=position,
                name=out.name,
                content_type=out.content_type,
                size=out.size,
                accesskey=random_token(30),
                storage_key=out.storage_key,
                added_at=t,
            )
        )


def enqueue_callback(session: Session, task: Task) -> None:
    if not task.callback_url:
        return
    session.add(
        CallbackDelivery(
            task_id=task.id,
            url=task.callback_url,
            msg_id=f"msg_{task.uuid}",
            state="pending",
            attempts=0,
            next_attempt_at=now(),
            last_error="",
            created_at=now(),
        )
    )
    announce(session, CALLBACKS, str(task.id))


def events_after(session: Session, task_id: int, after_id: int) -> list[TaskEvent]:
    return list(
        session.scalars(
            select(TaskEvent)
            .where(TaskEvent.task_id == task_id, TaskEvent.id > after_id)
            .order_by(TaskEvent.id)
        )
    )


def last_event_id(session: Session, task_id: int) -> int:
    return (
        session.scalar(
            select(func.coalesce(func.max(TaskEvent.id), 0)).where(TaskEvent.task_id == task_id)
        )
        or 0
    )
