"""Task events for every WebSocket follower of an API process, one query per wake-up.

A worker's progress write wakes the followers of each task it touched; a batch of 8 tasks
wakes 8 followers (and more when several clients follow one task) at the same moment. Each
follower asks `EventReader.after(task_id, cursor)`; the requests made in the same turn of
the event loop, or while a read is under way, are answered by one query together (one
branch per task: its id and the lowest cursor its followers have, which the task_events
index `(task_id, id)` serves), and each follower gets the rows after its own cursor.

While the process follows more than one task, the first request waits GATHER_SECONDS for
the others: a batch of 8 then costs one read per step instead of 8 (measured with `toonforge
serve`, 3 runs of 8 tasks: 290 follower wake-ups in 45 reads, 94 without the wait). A lone
task's frames are not held back.

A failed read (the database unreachable) fails every request it carried, as each follower's
own query would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import and_, or_, select
from starlette.concurrency import run_in_threadpool

from toonforge.services import Services
from toonforge.tasks.models import TaskEvent

# How long the first request of a read waits for the others: the wake-ups of one write
# reach this process within about a millisecond of each other on a busy 2-core machine; a
# step's frame is late by this much at most.
GATHER_SECONDS = 0.005
# Tasks per query: far below SQLite's and PostgreSQL's bound-parameter limits.
MAX_TASKS_PER_QUERY = 400


class EventRow(NamedTuple):
    id: int
    type: str
    message: Any


Request = tuple[int, int, "asyncio.Future[list[EventRow]]"]


class EventReader:
    def __init__(self, services: Services, tasks_followed: Callable[[], int] | None = None) -> None:
        self.services = services
        # How many tasks this process follows now (None: not known, always gather): with
        # one, its followers all wake in the same turn of the loop and none is worth waiting
        # for.
        self._tasks_followed = tasks_followed
        self._pending: list[Request] = []
        self._drainer: asyncio.Task[None] | None = None
        self.queries = 0  # reads made so far (for tests and metrics)

    async def after(self, task_id: int, cursor: int) -> list[EventRow]:
        """The events of task `task_id` with an id above `cursor`, in order."""
        future: asyncio.Future[list[EventRow]] = asyncio.get_running_loop().create_future()
        self._pending.append((task_id, cursor, future))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="event-reader")
        return await future

    async def _drain(self) -> None:
        requests: list[Request] = []
        try:
            while self._pending:
                # The followers a worker's write wakes come one wake-up datagram (or NOTIFY)
                # after another: let them join (those of one task wake in one turn).
                await asyncio.sleep(GATHER_SECONDS if self._gather() else 0)
                requests, self._pending = self._pending, []
                requests = [r for r in requests if not r[2].done()]  # cancelled meanwhile
                if not requests:
                    continue
                cursors: dict[int, int] = {}
                for task_id, cursor, _ in requests:
                    cursors[task_id] = min(cursor, cursors.get(task_id, cursor))
                try:
                    rows = await run_in_threadpool(self._read, cursors)
                except Exception as exc:
                    for _, _, future in requests:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for task_id, cursor, future in requests:
                    if not future.done():
                        future.set_result([r for r in rows.get(task_id, ()) if r.id > cursor])
        finally:
            self._drainer = None
            # Left over only when this task itself was cancelled (the app is stopping).
            for _, _, future in [*requests, *self._pending]:
                if not future.done():
                    future.cancel()
            self._pending = []

    def _gather(self) -> bool:
        return self._tasks_followed is None or self._tasks_followed() > 1

    def _read(self, cursors: dict[int, int]) -> dict[int, list[EventRow]]:
        events = TaskEvent.__table__
        found: dict[int, list[EventRow]] = {}
        items = list(cursors.items())
        with self.services.read_sessions() as session:
            for start in range(0, len(items), MAX_TASKS_PER_QUERY):
                chunk = items[start : start + MAX_TASKS_PER_QUERY]
                self.queries += 1
                rows = session.execute(
                    select(events.c.task_id, events.c.id, events.c.type, events.c.message)
                    .where(or_(*(and_(events.c.task_id == t, events.c.id > c) for t, c in chunk)))
                    .order_by(events.c.id)
                ).all()
                for row in rows:
                    event = EventRow(row.id, row.type, row.message)
                    found.setdefault(row.task_id, []).append(event)
        return found
