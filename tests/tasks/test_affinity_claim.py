"""Model affinity in the claim: a worker takes the tasks of tools it holds first, but never
lets another task wait past the bound (real databases, the real claim statement)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from toonforge.services import build_services
from toonforge.tasks.models import Project, Task
from toonforge.tasks.projects import ProjectInfo
from toonforge.tasks.store import claim, create_task, now
from toonforge.testing import new_project, settings_for_test

SD = "futurist/CartoonMix v1.0"
XL = "retroAIx/Retro-Cartoons"


def _queue(tmp_path: Path, url: str | None, tools: list[str]) -> tuple[Any, list[int]]:
    services = build_services(settings_for_test(tmp_path / "data", url))
    keys = new_project(services, mode="key")
    ids = []
    with services.sessions() as session:
        info = ProjectInfo.of(session.get(Project, keys.projectid))
        for tool in tools:
            task = create_task(
                session,
                project=info,
                tool_key=tool,
                model_id="1",
                cps="0.001",
                parameters={},
                callback_url="",
            )
            ids.append(task.id)
        session.commit()
    return services, ids


def _take(services: Any, prefer: list[str], wait: float) -> int | None:
    with services.sessions() as session:
        task = claim(
            session,
            worker_id="w",
            tool_keys=[SD, XL],
            lease_seconds=60,
            max_attempts=3,
            prefer=prefer,
            prefer_max_wait=wait,
        )
        session.commit()
        return task.id if task else None


def test_preferred_tool_goes_first_and_fifo_without_affinity(
    tmp_path: Path, backend: str, database_factory: Any
) -> None:
    services, (a, b, c, d) = _queue(tmp_path, database_factory(backend), [SD, XL, SD, XL])
    try:
        # A worker holding the SDXL parts takes both SDXL tasks before the older SD ones.
        assert [_take(services, [XL], 30) for _ in range(2)] == [b, d]
        # Without affinity (bound 0) it is first in, first out.
        assert [_take(services, [XL], 0) for _ in range(2)] == [a, c]
        assert _take(services, [XL], 30) is None
    finally:
        services.close()


def test_no_task_waits_past_the_bound_behind_newer_ones(
    tmp_path: Path, backend: str, database_factory: Any
) -> None:
    services, (a, b, c) = _queue(tmp_path, database_factory(backend), [SD, XL, XL])
    try:
        with services.sessions() as session:
            # The SD task has waited 31 s: over the 30 s bound, it goes before preferred ones.
            session.execute(update(Task).where(Task.id == a).values(createtime=now() - 31))
            session.commit()
        assert [_take(services, [XL], 30) for _ in range(3)] == [a, b, c]
    finally:
        services.close()
