"""Several worker processes racing over one queue: every task is claimed exactly once, moved
to task_accept by the claim itself, with attempts 1 (no worker died), on SQLite and on
PostgreSQL. Real processes, real databases, the real claim statement; with batching, the claim
of a task and of its companions (same batch key, images within the batch size)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from toonforge.services import build_services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.batch_claim import claim_companions, task_images
from toonforge.tasks.models import Project, Task, TaskEvent
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.store import claim, create_task
from toonforge.testing import new_project, settings_for_test

TASKS = 120
WORKERS = 4
TOOL = "futurist/CartoonMix v1.0"
MAX_IMAGES = 5
KEYS = ["key-a", "key-b", "key-c"]


def _claimer(data_dir: str, url: str | None, name: str, start: Any, out: Any, batch: bool) -> None:
    services = build_services(settings_for_test(Path(data_dir), url), migrate=False)
    start.wait()
    taken: list[list[int]] = []
    misses = 0
    while misses < 20:
        with services.sessions() as session:
            task = claim(
                session, worker_id=name, tool_keys=[TOOL], lease_seconds=60, max_attempts=3
            )
            group = [task] if task is not None else []
            if batch and task is not None:
                room = MAX_IMAGES - task_images(task.parameters)
                group += claim_companions(
                    session, task, worker_id=name, max_images=room, lease_seconds=60
                )
            session.commit()
        if task is None:
            misses += 1
            continue
        misses = 0
        taken.append([t.id for t in group])
    services.close()
    out.put((name, taken))


def _race(tmp_path: Path, url: str | None, batch: bool) -> dict[str, list[list[int]]]:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    out = ctx.Queue()
    data = str(tmp_path / "data")
    procs = [
        ctx.Process(target=_claimer, args=(data, url, f"w{i}", start, out, batch))
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    return results


def test_every_task_is_claimed_exactly_once_in_batches(
    tmp_path: Path, backend: str, database_factory: Any
) -> None:
    url = database_factory(backend)
    services = build_services(settings_for_test(tmp_path / "data", url))
    keys = new_project(services, mode="key")
    with services.sessions() as session:
        info = ProjectInfo.of(session.get(Project, keys.projectid))
        for i in range(TASKS):
            create_task(
                session,
                project=info,
                tool_key=TOOL,
                model_id="1",
                cps="0.001",
                parameters={"samples": 1 + i % 3},
                callback_url="",
                # Every seventh task cannot be batched.
                batch_key=None if i % 7 == 0 else KEYS[i % len(KEYS)],
            )
        session.commit()

    results = _race(tmp_path, url, batch=True)
    claimed = [task_id for groups in results.values() for g in groups for task_id in g]
    assert len(claimed) == TASKS, "every task claimed"
    assert len(set(claimed)) == TASKS, "no task claimed twice"
    assert sum(1 for groups in results.values() if groups) >= 2, "the workers really raced"
    with services.read_sessions() as session:
        tasks = {t.id: t for t in session.scalars(select(Task))}
        owner = {t: name for name, groups in results.items() for g in groups for t in g}
        sizes = []
        for groups in results.values():
            for group in groups:
                members = [tasks[t] for t in group]
                assert len({m.batch_key for m in members}) == 1, "one batch key per batch"
                if members[0].batch_key is None:
                    assert len(members) == 1
                assert sum(task_images(m.parameters) for m in members) <= MAX_IMAGES
                sizes.append(len(members))
        assert max(sizes) > 1, "some tasks were claimed together"
        for task in tasks.values():
            assert (task.status, task.attempts) == (lc.ACCEPT, 1)
            assert task.worker_id == owner[task.id]
        accepts = session.scalar(
            select(func.count(TaskEvent.id)).where(TaskEvent.type == lc.ACCEPT)
        )
        assert accepts == TASKS
    services.close()


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

    results = {name: [g[0] for g in groups] for name, groups in _race(tmp_path, url, False).items()}
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
