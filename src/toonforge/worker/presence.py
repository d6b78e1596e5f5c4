"""A worker says it is alive: a `worker_presence` row it refreshes every
`presence_seconds` from a thread of its own (idle or busy) and removes when it stops. The
queue's start-time estimate (tasks/queue_position.py) counts these rows."""

from __future__ import annotations

import contextlib
import logging
import threading

from sqlalchemy import delete

from toonforge.services import Services
from toonforge.tasks.models import WorkerPresence
from toonforge.tasks.store import now

log = logging.getLogger("toonforge.worker")


def touch(services: Services, worker_id: str) -> None:
    with services.sessions() as session:
        row = session.get(WorkerPresence, worker_id)
        t = now()
        if row is None:
            session.add(WorkerPresence(worker_id=worker_id, started_at=t, seen_at=t))
        else:
            row.seen_at = t
        session.commit()


def leave(services: Services, worker_id: str) -> None:
    with services.sessions() as session:
        session.execute(delete(WorkerPresence).where(WorkerPresence.worker_id == worker_id))
        session.commit()


class Presence:
    """`with Presence(services, worker_id):` the worker counts as live inside the block."""

    def __init__(self, services: Services, worker_id: str) -> None:
        self.services = services
        self.worker_id = worker_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)

    def __enter__(self) -> Presence:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):  # the database may be down: the row ages out
            leave(self.services, self.worker_id)

    def _run(self) -> None:
        while True:
            try:
                touch(self.services, self.worker_id)
            except Exception as exc:  # a database blip: the next beat tries again
                log.debug("presence not recorded: %s", exc)
            if self._stop.wait(self.services.settings.presence_seconds):
                return
