"""Several worker processes racing over one queue: every task is claimed exactly once, moved
to task_accept by the claim itself, with attempts 1 (no worker died), on SQLite and on
PostgreSQL. Real processes, real databases, the real claim statement."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from toonforge.services import build_services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Project, Task, TaskEvent
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.store import claim, create_task
from toonforge.testing import new_project, settings_for_test

TASKS = 120
WORKERS = 4
TOOL = "futurist/CartoonMix v1.0"


def _claimer(data_dir: str, url: str | None, name: str, start: Any, out: Any) -> None:
    services = build_services(settings_for_test(Path(data_dir), url), migrate=False)
    start.wait()
    taken: list[int] = []
    misses = 0
    while misses < 20:
        with services.sessions() as session:
            task = claim(
                session, worker_id=name, tool_keys=[TOOL], lease_seconds=60, max_attempts=3
            )
            session.commit()
        if task is None:
            misses += 1
            continue
        misses = 0
        taken.append(task.id)
    services.close()
    out.put((name, taken))


def test_every_task_is_claimed_exactly_once(
    tmp_path: Path, backend: str, database_factory: Any
) -> None:
    url = database_factory(backend)
    services = build_services(settings_for_test(tmp_path / "data", url))
    keys = new_project(services, mode="key")
    with services.sessions() as session:
        info = ProjectInfo.of(session.get(Project, keys.projectid))
        for _ in range(TASKS):
            create_task(
                session,
                project=info,
                tool_key=TOOL,
                model_id="1",
                cps="0.001",
                parameters={},
                callback_url="",
            )
        session.commit()

    ctx = mp.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_claimer, args=(str(tmp_path / "data"), url, f"w{i}", start, out))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    claimed = [task_id for taken in results.values() for task_id in taken]
    assert len(claimed) == TASKS, "every task claimed"
    assert len(set(claimed)) == TASKS, "no task claimed twice"
    assert sum(1 for taken in results.values() if taken) >= 2, "the workers really raced"
    with services.read_sessions() as session:
        rows = session.execute(select(Task.status, Task.attempts, Task.worker_id)).all()
        assert {(status, attempts) for status, attempts, _ in rows} == {(lc.ACCEPT, 1)}
        owner = {task_id: name for name, taken in results.items() for task_id in taken}
        for task in session.scalars(select(Task)):
            assert task.worker_id == owner[task.id]
        # One task_accept event each, and no "worker lost" message anywhere.
        accepts = session.scalar(
            select(func.count(TaskEvent.id)).where(TaskEvent.type == lc.ACCEPT)
        )
        assert accepts == TASKS
        assert not session.scalar(
            select(func.count(TaskEvent.id)).where(TaskEvent.type == lc.ERROR)
        )
    services.close()
