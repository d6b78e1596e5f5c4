"""Claiming the companions of a claimed task: queued tasks with its batch key, to be sampled
in the same denoising run (toonforge.catalog.batch_key, toonforge.worker.batch).

Exactly-once as the single claim is: on PostgreSQL the candidates are read `FOR UPDATE SKIP
LOCKED` (rows another worker is claiming are skipped, the rows read stay locked until this
transaction ends) and the UPDATE repeats the claimable condition; on SQLite every write
transaction is BEGIN IMMEDIATE behind one write lock, so no two claims interleave.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task
from toonforge.tasks.store import add_event, now


def task_images(parameters: dict[str, Any]) -> int:
    """The images a task makes (its `samples`), at least 1: what a batch's size counts."""
    samples = parameters.get("samples", 1)
    return samples if isinstance(samples, int) and samples > 0 else 1


def claim_companions(
    session: Session,
    first: Task,
    *,
    worker_id: str,
    max_images: int,
    lease_seconds: float,
) -> list[Task]:
    """Queued tasks with `first`'s tool and batch key, oldest first, whose images fit in
    `max_images` (the images already in the batch are the caller's to subtract), moved to
    task_accept for this worker in this transaction."""
    if not first.batch_key or max_images < 1:
        return []
    claimable = (
        Task.tool_key == first.tool_key,
        Task.batch_key == first.batch_key,
        Task.status == lc.QUEUE,
        Task.kill_requested.is_(False),
    )
    rows = session.execute(
        select(Task.id, Task.parameters)
        .where(*claimable)
        .order_by(Task.id)
        .limit(max_images)
        .with_for_update(skip_locked=True)
    ).all()
    picked: list[int] = []
    room = max_images
    for task_id, parameters in rows:
        images = task_images(parameters or {})
        if images > room:
            break  # oldest first: a later, smaller task does not jump the queue
        picked.append(task_id)
        room -= images
    if not picked:
        return []
    t = now()
    claimed = session.scalars(
        update(Task)
        .where(Task.id.in_(picked), *claimable)
        .values(
            worker_id=worker_id,
            lease_expires_at=t + lease_seconds,
            attempts=Task.attempts + 1,
            status=lc.ACCEPT,
            accepttime=t,
        )
        .returning(Task.id)
    ).all()
    tasks = []
    for task_id in sorted(claimed):
        task = session.get(Task, task_id, populate_existing=True)
        assert task is not None
        add_event(session, task.id, lc.ACCEPT)
        tasks.append(task)
    return tasks
