"""A worker's row in the `workers` table (tasks/workers.py), kept fresh by a thread of its
own: every `heartbeat_seconds`, and at once when what it holds in memory changed after a
task. That row is how the API (`/readyz`, `/metrics`) and `toonforge models status` see a
worker, on this host or another."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from toonforge.devices import Placement
from toonforge.services import Services
from toonforge.tasks.workers import BUSY, IDLE, WorkerReport, beat, mark_stopped

log = logging.getLogger("toonforge.worker")


class WorkerPresence:
    def __init__(self, services: Services, engine: Any, worker_id: str) -> None:
        self.services = services
        self.engine = engine
        self.worker_id = worker_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = time.time()
        self.task_id: int | None = None  # the task in hand, set by the worker loop
        self._stop = threading.Event()
        self._poke = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loaded = ""

    def tools(self) -> list[str]:
        """Tools this worker can run: engine built, weights on this host, and placed on its
        device (TOONFORGE_TOOL_DEVICES)."""
        availability = self.services.availability
        placement = Placement.parse(self.services.settings.tool_devices)
        device = self.device()
        return [
            m.key
            for m in self.services.catalog
            if m.engine_ready and availability.of(m).ready and placement.allows(m.key, device)
        ]

    def device(self) -> str:
        name = getattr(self.engine, "device_name", None)
        return str(name if name is not None else getattr(self.engine, "device", "") or "")

    def loaded(self) -> list[dict[str, Any]]:
        read = getattr(self.engine, "loaded", None)
        if read is None:
            return []
        try:
            return list(read())
        except RuntimeError:  # the pool changed while read (a task loading): next beat
            return json.loads(self._last_loaded or "[]")

    def report(self) -> WorkerReport:
        loaded = self.loaded()
        self._last_loaded = json.dumps(loaded, default=str)
        task_id = self.task_id
        return WorkerReport(
            id=self.worker_id,
            host=self.host,
            pid=self.pid,
            device=self.device(),
            started_at=self.started_at,
            tools=self.tools(),
            loaded=loaded,
            status=BUSY if task_id is not None else IDLE,
            task_id=task_id,
        )

    def beat_once(self) -> bool:
        try:
            report = self.report()
            with self.services.sessions() as session:
                beat(session, report)
                session.commit()
            return True
        except Exception as exc:  # a database blip: the next beat tries again
            log.warning("worker heartbeat not recorded (%s: %s)", type(exc).__name__, exc)
            return False

    def start(self) -> None:
        """The first beat now (so the worker is seen before it claims), then a thread."""
        self.beat_once()
        self._thread = threading.Thread(target=self._loop, name="worker-presence", daemon=True)
        self._thread.start()

    def after_task(self) -> None:
        """Beat now if what is loaded changed (cheap otherwise: no write)."""
        try:
            changed = json.dumps(self.loaded(), default=str) != self._last_loaded
        except (TypeError, ValueError):
            changed = True
        if changed:
            self._poke.set()

    def _loop(self) -> None:
        interval = self.services.settings.heartbeat_seconds
        while not self._stop.is_set():
            self._poke.wait(interval)
            self._poke.clear()
            if self._stop.is_set():
                return
            self.beat_once()

    def stop(self) -> None:
        """Say this worker stopped (its row stays, marked stopped, for a while)."""
        self._stop.set()
        self._poke.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with self.services.sessions() as session:
                mark_stopped(session, self.worker_id)
                session.commit()
        except Exception as exc:  # it will simply go quiet
            log.warning("could not record this worker as stopped (%s)", type(exc).__name__)
