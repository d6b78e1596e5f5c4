"""The worker loop: claim the oldest task this worker can serve, run it, repeat.

A SIGTERM stops claiming and hands the current task back (its lease is ended so the next
worker takes it at once); a SIGKILL loses nothing either: the lease runs out and the task
is taken again, up to `max_attempts` times.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable

from toonforge.devices import Placement
from toonforge.ops.logging import log_context
from toonforge.services import Services
from toonforge.tasks.notify import QUEUE
from toonforge.tasks.store import reap
from toonforge.worker.batch import BatchRunner, claim_batch
from toonforge.worker.presence import WorkerPresence
from toonforge.worker.previews import prune_previews
from toonforge.worker.runner import Engine, TaskRunner

log = logging.getLogger("toonforge.worker")

REAP_EVERY_SECONDS = 5.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(self, services: Services, engine: Engine, worker_id: str | None = None) -> None:
        self.services = services
        self.engine = engine
        self.worker_id = worker_id or new_worker_id()
        self.stopping = threading.Event()
        self.runner = TaskRunner(services, engine, self.worker_id, shutdown=self.stopping)
        self._last_reap = 0.0
        self._tool_keys: list[str] | None = None
        # Set when a task may have become claimable (a wake-up, see tasks/notify.py).
        self.wake = threading.Event()
        # This worker's row in the `workers` table (heartbeat, tools, loaded parts).
        self.presence = WorkerPresence(services, engine, self.worker_id)

    def tool_keys(self) -> list[str]:
        """The tools this worker claims: ready ones that the placement allows on its device
        (worked out once: the catalog and the device do not change while it runs)."""
        if self._tool_keys is None:
            placement = Placement.parse(self.services.settings.tool_devices)
            device = getattr(self.engine, "device_name", "")
            self._tool_keys = [
                m.key
                for m in self.services.catalog
                if m.engine_ready and placement.allows(m.key, device)
            ]
        return self._tool_keys

    def loaded_tools(self) -> list[str]:
        """Tools whose parts this worker holds (model affinity prefers their tasks)."""
        loaded = getattr(self.engine, "loaded", None)
        if loaded is None:
            return []
        return sorted({tool for part in loaded() for tool in part.get("tools", [])})

    def run_once(self) -> bool:
        """Claim and run one task; false when there was none."""
        settings = self.services.settings
        if time.monotonic() - self._last_reap > REAP_EVERY_SECONDS:
            self._last_reap = time.monotonic()
            with self.services.sessions() as session:
                ended = reap(session, max_attempts=settings.max_attempts)
                prune_previews(session)
                session.commit()
            for task_id in ended:
                log.warning("task %s ended: its worker was lost", task_id)
        claimed = claim_batch(
            self.services, self.runner, self.tool_keys(), self.wake, prefer=self.loaded_tools()
        )
        if not claimed:
            return False
        ids = [task_id for task_id, _ in claimed]
        first = claimed[0][1]
        # Every line logged for this task (a batch: its first task) carries its task_id and
        # project_id.
        with log_context(task_id=ids[0], project_id=first.project_id):
            if len(ids) == 1:
                log.info("task %s (%s) claimed by %s", ids[0], first.tool_key, self.worker_id)
            else:
                which = ", ".join(map(str, ids))
                log.info(
                    "tasks %s (%s) claimed together by %s", which, first.tool_key, self.worker_id
                )
            self.presence.task_id = ids[0]
            try:
                if len(claimed) == 1:
                    self.runner.run(*claimed[0])
                else:
                    BatchRunner(self.runner).run(claimed)
            finally:
                self.presence.task_id = None
                self.presence.after_task()
        return True

    def listen(self) -> None:
        """Wake up when a task is queued or handed back, instead of polling for it."""
        wanted = set(self.tool_keys())

        def on_queue(_channel: str, tool_key: str) -> None:
            if tool_key in wanted:
                self.wake.set()

        self.services.notifier.listener().subscribe(QUEUE, on_queue, self.wake.set)

    def _idle(self, seconds: float) -> None:
        """Wait for a wake-up, the safety-net poll interval, or a stop (looked at a few
        times a second: whoever stops us may only set `stopping`)."""
        deadline = time.monotonic() + seconds
        while not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.wake.wait(min(remaining, 0.25)):
                return

    def run_forever(self, on_ready: Callable[[], None] | None = None) -> None:
        """Claim and run tasks until `stopping` is set; `on_ready` is called once, before
        the first claim (`serve` restarts a worker that dies after that at once)."""
        self.listen()
        self.presence.start()
        log.info(
            "worker %s on %s ready for: %s",
            self.worker_id,
            getattr(self.engine, "device_name", "?"),
            ", ".join(self.tool_keys()),
        )
        if on_ready is not None:
            on_ready()
        while not self.stopping.is_set():
            try:
                # Cleared before looking, so a task queued while we look wakes us again.
                self.wake.clear()
                worked = self.run_once()
            except Exception:  # the database may be restarting: wait and go on
                log.exception("worker loop error")
                worked = False
                self.stopping.wait(1.0)
            if not worked:
                self._idle(self.services.settings.worker_poll_seconds)
        self.presence.stop()


def install_signal_handlers(worker: Worker) -> None:
    def handle(signum: int, _frame: object) -> None:
        # Only a flag here: the main thread interrupts the generation between two steps and
        # hands the task back (a handler must not touch the database mid-transaction).
        log.info("worker %s: signal %d, stopping", worker.worker_id, signum)
        worker.stopping.set()
        worker.wake.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
