"""Where a queued task stands: its place in the queue and when it should start.

Every worker serves every tool this server can run (`engine_ready`) and always claims the
oldest claimable task, whatever its tool: the queue is one line in task-id order. So a
queued task's `queueposition` is 1 + the number of queued tasks of runnable tools created
before it (tasks of tools no worker serves never run and are not counted; a task a worker
hands back keeps its id, so its place).

The start estimate shares the work in front of the task among the live workers (the
`workers` table's rows with a recent heartbeat, see tasks/workers.py): the remaining run time of
the tasks being run now, plus the typical run time (tool_stats) of each queued task ahead,
divided by the number of workers. It is unknown ("0") while no worker is live, or while a
tool involved has no successful run on this server yet.

Cost: one indexed count-by-tool over the queued tasks ahead (ix_tasks_claim: status, id),
one over the running tasks, one over the live worker rows, and tool_stats' per-tool query.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, WorkerRecord
from toonforge.tasks.store import now
from toonforge.tasks.tool_stats import typical_seconds
from toonforge.tasks.workers import STOPPED, live_window

if TYPE_CHECKING:
    from toonforge.services import Services


@dataclass(frozen=True)
class QueueSpot:
    position: int  # 1-based
    estimated_start: float | None  # unix seconds; None: unknown


def live_workers(session: Session, heartbeat_seconds: float) -> int:
    """How many workers have sent a heartbeat within the live window and not stopped."""
    since = now() - live_window(heartbeat_seconds)
    return (
        session.scalar(
            select(func.count())
            .select_from(WorkerRecord)
            .where(WorkerRecord.heartbeat_at >= since, WorkerRecord.status != STOPPED)
        )
        or 0
    )


def queue_spot(
    session: Session,
    task_id: int,
    tool_key: str,
    *,
    runnable: Collection[str],
    heartbeat_seconds: float,
) -> QueueSpot:
    """The place and estimated start of queued task `task_id` (of tool `tool_key`);
    `runnable`: the keys of the tools workers serve."""
    t = now()
    keys = list(runnable)
    ahead = session.execute(
        select(Task.tool_key, func.count())
        .where(Task.status == lc.QUEUE, Task.id < task_id, Task.tool_key.in_(keys))
        .group_by(Task.tool_key)
    ).all()
    position = 1 + sum(n for _, n in ahead)
    workers = live_workers(session, heartbeat_seconds)
    if workers == 0:
        return QueueSpot(position, None)
    running = session.execute(
        select(Task.tool_key, Task.starttime, Task.accepttime).where(
            Task.status.in_(lc.RUNNING), Task.lease_expires_at >= t
        )
    ).all()
    tools = {k for k, _ in ahead} | {k for k, _, _ in running} | {tool_key}
    typical = {k: typical_seconds(session, k) for k in sorted(tools)}
    if any(v is None for v in typical.values()):
        return QueueSpot(position, None)
    work = sum(n * (typical[k] or 0.0) for k, n in ahead)
    for key, started, accepted in running:
        began = started or accepted or t
        work += max(0.0, (typical[key] or 0.0) - (t - began))
    return QueueSpot(position, t + work / workers)


def queue_spot_of(services: Services, session: Session, task: Any) -> QueueSpot | None:
    """`queue_spot` of a task (ORM object or row view) if it is queued, else None."""
    if task.status != lc.QUEUE:
        return None
    return queue_spot(
        session,
        task.id,
        task.tool_key,
        runnable=[m.key for m in services.catalog if m.engine_ready],
        heartbeat_seconds=services.settings.heartbeat_seconds,
    )


def queue_fields(spot: QueueSpot | None) -> dict[str, str]:
    """The TASK record's and the WebSocket frames' `queueposition` and
    `estimatedstarttime`: "0" when not queued or unknown."""
    if spot is None:
        return {"queueposition": "0", "estimatedstarttime": "0"}
    start = "0" if spot.estimated_start is None else str(int(spot.estimated_start))
    return {"queueposition": str(spot.position), "estimatedstarttime": start}
