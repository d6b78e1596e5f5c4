"""One event hub per API process: wakes the WebSocket followers (and Kill) of a task when
the task has new events, so that no socket polls the database on its own.

Wake-ups come from the process's one notification listener (LISTEN/NOTIFY on PostgreSQL,
loopback datagrams on SQLite; see tasks/notify.py). As a safety net, while anybody follows
a task, one shared query a second asks which followed tasks have events the hub has not
announced (every tenth of a second while the listener is reconnecting).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from toonforge.api.event_reader import EventReader
from toonforge.services import Services
from toonforge.tasks.models import TaskEvent
from toonforge.tasks.notify import EVENTS

log = logging.getLogger("toonforge.api")

SAFETY_POLL_SECONDS = 1.0
DEGRADED_POLL_SECONDS = 0.1


class EventHub:
    def __init__(self, services: Services) -> None:
        self.services = services
        # Followers read their events through it: one query per wake-up for all of them.
        self.events = EventReader(services, lambda: len(self._waiters))
        self._waiters: dict[int, set[asyncio.Event]] = {}
        # Followers of queued tasks: woken by any task's news (a claim or a cancel ahead of
        # them moves their place in the queue).
        self._queue_waiters: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poller: asyncio.Task[None] | None = None
        self._cursor: int | None = None
        self._listener_connected: object = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        listener = self.services.notifier.listener()
        listener.subscribe(EVENTS, self._on_notify, on_resync=self._on_resync)
        self._listener_connected = listener.connected
        self._poller = asyncio.create_task(self._safety_poll(), name="event-hub-poll")

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    @contextlib.contextmanager
    def follow(self, task_id: int) -> Iterator[asyncio.Event]:
        """An event set whenever task `task_id` may have news; subscribe before reading the
        task's state, so nothing that happens in between is missed."""
        flag = asyncio.Event()
        self._waiters.setdefault(task_id, set()).add(flag)
        try:
            yield flag
        finally:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(flag)
                if not waiters:
                    del self._waiters[task_id]

    def watch_queue(self, flag: asyncio.Event, on: bool) -> None:
        """While `on`, set `flag` whenever any task has news (a follower of a queued task
        looks at its place in line then); only queued tasks' followers are registered."""
        if on:
            self._queue_waiters.add(flag)
        else:
            self._queue_waiters.discard(flag)

    # -- called from the listener thread --------------------------------------------------------

    def _on_notify(self, _channel: str, payload: str) -> None:
        if payload.isascii() and payload.isdigit() and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake, int(payload))

    def _on_resync(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    # -- on the event loop --------------------------------------------------------------------

    def _wake(self, task_id: int) -> None:
        for flag in self._waiters.get(task_id, ()):
            flag.set()
        for flag in self._queue_waiters:
            flag.set()

    def _wake_all(self) -> None:
        for task_id in list(self._waiters):
            self._wake(task_id)

    async def _safety_poll(self) -> None:
        while True:
            connected = getattr(self._listener_connected, "is_set", lambda: False)()
            await asyncio.sleep(SAFETY_POLL_SECONDS if connected else DEGRADED_POLL_SECONDS)
            if not self._waiters:
                continue
            try:
                changed = await run_in_threadpool(self._changed_since, list(self._waiters))
            except Exception as exc:  # the database may be down: followers wait meanwhile
                log.debug("event hub poll failed: %s", exc)
                continue
            for task_id in changed:
                self._wake(task_id)

    def _changed_since(self, task_ids: list[int]) -> list[int]:
        with self.services.read_sessions() as session:
            if self._cursor is None:
                self._cursor = session.scalar(select(func.coalesce(func.max(TaskEvent.id), 0)))
                return task_ids
            rows = session.execute(
                select(TaskEvent.task_id, func.max(TaskEvent.id))
                .where(TaskEvent.id > self._cursor, TaskEvent.task_id.in_(task_ids))
                .group_by(TaskEvent.task_id)
            ).all()
        if rows:
            self._cursor = max([self._cursor or 0, *(r[1] for r in rows)])
        return [r[0] for r in rows]
