"""Output retention (TOONFORGE_OUTPUT_RETENTION): outputs older than the period are deleted
from the storage, in the background.

Who sweeps: every API process runs a `RetentionSweeper` thread (workers never do: they may
be many, on GPU hosts, and have better things to do). One sweep at a time claims a batch:
on PostgreSQL a transaction-scoped advisory lock (a process that does not get it skips its
turn), on SQLite the write lock every transaction takes. A claimed task is marked (its
outputs' rows removed, `files_deleted` set) in that transaction, before its objects are
deleted, so no two sweeps delete the same task's files and no record ever points at a
deleted file; a crash in between only leaves unreachable objects behind.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import delete, select, text, update

from toonforge.services import Services
from toonforge.tasks.db import is_postgres
from toonforge.tasks.models import Task, TaskOutput

log = logging.getLogger("toonforge.retention")

# pg_try_advisory_xact_lock key of the sweep ("toonforge retention").
ADVISORY_KEY = 0x746F6F6E7265
BATCH = 100


def sweep_once(services: Services, now: float | None = None, batch: int = BATCH) -> int:
    """Delete the outputs of up to `batch` tasks whose outputs are older than the retention
    period; how many tasks were swept (0: nothing due, retention off, or another process is
    sweeping)."""
    period = services.settings.output_retention_seconds
    if not period:
        return 0
    cutoff = (time.time() if now is None else now) - period
    with services.sessions() as session:
        if is_postgres(services.db) and not session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": ADVISORY_KEY}
        ):
            return 0
        due = session.execute(
            select(Task.id, Task.uuid)
            .join(TaskOutput, TaskOutput.task_id == Task.id)
            .where(TaskOutput.added_at < cutoff, Task.files_deleted.is_(False))
            .group_by(Task.id, Task.uuid)
            .limit(batch)
        ).all()
        if not due:
            # Rows of outputs deleted meanwhile by Task/InputOutputDelete go too, so that
            # the index range the sweep reads stays short.
            session.execute(
                delete(TaskOutput).where(
                    TaskOutput.added_at < cutoff,
                    TaskOutput.task_id.in_(select(Task.id).where(Task.files_deleted.is_(True))),
                )
            )
            session.commit()
            return 0
        ids = [task_id for task_id, _ in due]
        session.execute(update(Task).where(Task.id.in_(ids)).values(files_deleted=True))
        session.execute(delete(TaskOutput).where(TaskOutput.task_id.in_(ids)))
        session.commit()
    for task_id, task_uuid in due:
        try:
            services.storage.delete_prefix(task_uuid)
        except Exception:
            log.exception("retention: deleting the outputs of task %s failed", task_id)
    log.info("retention: deleted the outputs of %d task(s)", len(due))
    return len(due)


class RetentionSweeper:
    """A thread that sweeps every `retention_sweep_seconds` while retention is on."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.services.settings.output_retention_seconds:
            return
        self._thread = threading.Thread(target=self._loop, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        interval = self.services.settings.retention_sweep_seconds
        while not self._stop.wait(interval):
            try:
                while sweep_once(self.services) == BATCH and not self._stop.is_set():
                    pass
            except Exception:  # a database or storage blip: the next turn tries again
                log.exception("retention sweep failed")
