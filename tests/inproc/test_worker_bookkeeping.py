"""The worker's rows for the additions: its presence (live workers for the start estimate)
and the pruning of old previews."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, TaskPreview, WorkerPresence
from toonforge.tasks.queue_position import live_workers
from toonforge.testing import InProcess
from toonforge.worker.presence import Presence
from toonforge.worker.previews import KEEP_SECONDS, prune_previews

CARTOON = "/v1/Run/futurist/CartoonMix%20v1.0"


def test_a_worker_is_live_while_it_runs(inproc: InProcess) -> None:
    services = inproc.services
    with services.read_sessions() as session:
        assert live_workers(session, services.settings.presence_seconds) == 0
    with Presence(services, "host:1:abc"):
        deadline = time.monotonic() + 5
        while True:
            with services.read_sessions() as session:
                if live_workers(session, services.settings.presence_seconds) == 1:
                    break
            assert time.monotonic() < deadline, "the presence row never appeared"
            time.sleep(0.05)
    with services.read_sessions() as session:
        assert session.scalars(select(WorkerPresence)).all() == []


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
