"""The worker's rows for the additions: its row in the workers table (live workers for the
start estimate) and the pruning of old previews."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, TaskPreview, WorkerRecord
from toonforge.tasks.queue_position import live_workers
from toonforge.tasks.workers import STOPPED
from toonforge.testing import InProcess
from toonforge.worker.presence import WorkerPresence
from toonforge.worker.previews import KEEP_SECONDS, prune_previews

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"


def test_a_worker_is_live_while_it_runs(inproc: InProcess) -> None:
    services = inproc.services
    beat = services.settings.heartbeat_seconds
    with services.read_sessions() as session:
        assert live_workers(session, beat) == 0
    presence = WorkerPresence(services, engine=None, worker_id="host:1:abc")
    presence.start()
    try:
        with services.read_sessions() as session:
            assert live_workers(session, beat) == 1
    finally:
        presence.stop()
    with services.read_sessions() as session:
        assert live_workers(session, beat) == 0
        (row,) = session.scalars(select(WorkerRecord)).all()
        assert row.status == STOPPED


def test_previews_of_long_ended_tasks_are_pruned(inproc: InProcess) -> None:
    ended, running = (inproc.client.ok(CARTOON, {})["taskid"] for _ in range(2))
    old = time.time() - KEEP_SECONDS - 1
    with inproc.services.sessions() as session:
        session.execute(update(Task).where(Task.id == int(ended)).values(status=lc.CANCEL))
        for taskid in (ended, running):
            session.add(TaskPreview(task_id=int(taskid), step=2, image="x", requested_at=old))
        session.commit()
    with inproc.services.sessions() as session:
        prune_previews(session)
        session.commit()
    with inproc.services.read_sessions() as session:
        kept = session.scalars(select(TaskPreview.task_id)).all()
    assert kept == [int(running)]
