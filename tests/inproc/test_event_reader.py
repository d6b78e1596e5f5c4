"""The API process's shared event read (toonforge.api.event_reader): followers woken together
are answered by one query, each from its own cursor, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select, text

from toonforge.api.event_reader import EventReader, EventRow
from toonforge.tasks.models import TaskEvent
from toonforge.testing import CARTOON, SMALL, InProcess


def _queued_tasks(inproc: InProcess, n: int) -> list[int]:
    return [int(inproc.client.ok(f"/v1/Run/{CARTOON}", SMALL)["taskid"]) for _ in range(n)]


def _events_of(inproc: InProcess, task_id: int) -> list[EventRow]:
    with inproc.services.read_sessions() as session:
        rows = session.execute(
            select(TaskEvent.id, TaskEvent.type, TaskEvent.message)
            .where(TaskEvent.task_id == task_id)
            .order_by(TaskEvent.id)
        ).all()
    return [EventRow(*row) for row in rows]


def test_followers_woken_together_share_one_query(inproc: InProcess) -> None:
    ids = _queued_tasks(inproc, 5)
    expected = {task_id: _events_of(inproc, task_id) for task_id in ids}
    assert all(expected.values())
    first = expected[ids[0]][0].id
    reader = EventReader(inproc.services)

    async def follow_all() -> list[list[EventRow]]:
        # Two followers of the first task: one from the start, one past its first event.
        return await asyncio.gather(
            *(reader.after(task_id, 0) for task_id in ids), reader.after(ids[0], first)
        )

    found = asyncio.run(follow_all())
    assert reader.queries == 1
    assert found[: len(ids)] == [expected[task_id] for task_id in ids]
    assert found[-1] == [e for e in expected[ids[0]] if e.id > first]


def test_a_later_request_is_read_again_and_a_cancelled_one_leaves_the_rest(
    inproc: InProcess,
) -> None:
    ids = _queued_tasks(inproc, 2)
    reader = EventReader(inproc.services)

    async def scenario() -> tuple[list[EventRow], list[EventRow]]:
        gone = asyncio.ensure_future(reader.after(ids[0], 0))
        kept = asyncio.ensure_future(reader.after(ids[1], 0))
        await asyncio.sleep(0)
        gone.cancel()
        got = await kept
        again = await reader.after(ids[1], got[-1].id)  # nothing new: no rows
        return got, again

    got, again = asyncio.run(scenario())
    assert got == _events_of(inproc, ids[1])
    assert again == []
    assert reader.queries == 2


def test_a_failed_read_fails_every_follower_it_carried(inproc: InProcess) -> None:
    ids = _queued_tasks(inproc, 3)
    reader = EventReader(inproc.services)
    db = inproc.services.db
    with db.begin() as conn:
        conn.execute(text("ALTER TABLE task_events RENAME TO task_events_away"))
    try:

        async def follow_all() -> list[object]:
            return await asyncio.gather(
                *(reader.after(task_id, 0) for task_id in ids), return_exceptions=True
            )

        results = asyncio.run(follow_all())
    finally:
        with db.begin() as conn:
            conn.execute(text("ALTER TABLE task_events_away RENAME TO task_events"))
    assert reader.queries == 1
    assert all(isinstance(r, Exception) for r in results), results
    # The next wake-up reads normally.
    assert asyncio.run(reader.after(ids[0], 0)) == _events_of(inproc, ids[0])


def test_many_tasks_are_read_in_chunks(inproc: InProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("toonforge.api.event_reader.MAX_TASKS_PER_QUERY", 2)
    ids = _queued_tasks(inproc, 5)
    reader = EventReader(inproc.services)

    async def follow_all() -> list[list[EventRow]]:
        return await asyncio.gather(*(reader.after(task_id, 0) for task_id in ids))

    assert asyncio.run(follow_all()) == [_events_of(inproc, task_id) for task_id in ids]
    assert reader.queries == 3


def test_a_lone_task_followed_is_not_held_back(inproc: InProcess) -> None:
    """The gather wait is for followers of other tasks: with one task followed, none."""
    followed = [1]
    reader = EventReader(inproc.services, lambda: followed[0])
    assert not reader._gather()
    followed[0] = 3
    assert reader._gather()
    assert EventReader(inproc.services)._gather()  # not known: gather
