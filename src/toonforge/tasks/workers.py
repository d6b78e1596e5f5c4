"""The `workers` table: each worker process writes its row on every heartbeat (host, pid,
device, the tools it can run, what it holds in memory, idle or busy), so whoever reads the
database sees every worker on every host: `/readyz`, `/metrics`, `toonforge models status`.

A worker is live while its last heartbeat is recent (`live_after`); one that stops cleanly
marks its row stopped, one that is killed simply goes quiet. Rows quiet for a day are
removed by the next heartbeat of any worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from toonforge.tasks.models import WorkerRecord

IDLE, BUSY, STOPPED = "idle", "busy", "stopped"
FORGET_AFTER_SECONDS = 86400.0


def live_window(heartbeat_seconds: float) -> float:
    """How long after its last heartbeat a worker still counts as live: three beats missed
    (a busy database may delay one), never under ten seconds."""
    return max(3.0 * heartbeat_seconds, 10.0)


@dataclass(frozen=True)
class WorkerReport:
    """What a worker says of itself on a heartbeat."""

    id: str
    host: str
    pid: int
    device: str
    started_at: float
    tools: list[str]
    loaded: list[dict[str, Any]]
    status: str
    task_id: int | None = None


def beat(session: Session, report: WorkerReport) -> None:
    """Write this worker's row (created on its first beat) and forget long-quiet ones."""
    now = time.time()
    values = {
        "host": report.host,
        "pid": report.pid,
        "device": report.device,
        "started_at": report.started_at,
        "heartbeat_at": now,
        "tools": list(report.tools),
        "loaded": list(report.loaded),
        "status": report.status,
        "task_id": report.task_id,
    }
    changed = session.execute(
        update(WorkerRecord).where(WorkerRecord.id == report.id).values(**values)
    ).rowcount  # type: ignore[attr-defined]
    if not changed:
        session.add(WorkerRecord(id=report.id, **values))
        # A new worker is rare: the moment to forget the ones gone quiet long ago.
        session.execute(
            delete(WorkerRecord).where(WorkerRecord.heartbeat_at < now - FORGET_AFTER_SECONDS)
        )


def mark_stopped(session: Session, worker_id: str) -> None:
    session.execute(
        update(WorkerRecord)
        .where(WorkerRecord.id == worker_id)
        .values(status=STOPPED, task_id=None, loaded=[], heartbeat_at=time.time())
    )


def live_workers(session: Session, heartbeat_seconds: float) -> list[WorkerRecord]:
    """Workers whose last heartbeat is recent and that have not stopped, oldest first."""
    since = time.time() - live_window(heartbeat_seconds)
    return list(
        session.scalars(
            select(WorkerRecord)
            .where(WorkerRecord.heartbeat_at >= since, WorkerRecord.status != STOPPED)
            .order_by(WorkerRecord.started_at)
        )
    )
