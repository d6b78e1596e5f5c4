"""Progress written beside the sampling loop, not inside it.

At every step the engine calls back with the step's progress; writing it to the database
(a transaction with the step's `task_output` event, the kill flag read back, a preview
maybe) takes milliseconds that the loop would otherwise spend waiting, once per step, on
the critical path of every task. `ProgressWriter` takes the step's message and returns at
once; a thread of its own writes what was posted, every step still pending in one
transaction, in order, so no event is dropped or reordered even when the database is
slower than the loop, and at most one transaction per `MIN_INTERVAL_SECONDS`. What the write
learns (a kill, a lost lease) is seen by the loop at its next step after the write, one
step (or that interval) later than a write in the loop would see it.

`close()` waits for the last write: the statuses that end a task always follow its
progress events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from toonforge.ops.logging import thread_target

log = logging.getLogger("toonforge.worker")

Item = TypeVar("Item")

# At most one progress transaction this often: with fast steps (small images, a fast GPU)
# the steps of that time share one, and the database's write lock (SQLite has one for the
# whole database) is never held back to back. Slower steps are written one by one.
MIN_INTERVAL_SECONDS = 0.1


class ProgressWriter(Generic[Item]):
    """`post(item)` from the sampling loop; `write(items)` runs in the writer's thread with
    every item posted since its previous call (never empty, oldest first)."""

    def __init__(
        self,
        write: Callable[[list[Item]], None],
        name: str,
        min_interval: float = MIN_INTERVAL_SECONDS,
    ) -> None:
        self._write = write
        self._min_interval = min_interval
        self._pending: list[Item] = []
        self._wake = threading.Condition()
        self._closed = False
        # thread_target: the task's log fields follow it into the thread
        self._thread = threading.Thread(target=thread_target(self._loop), name=name, daemon=True)
        self._thread.start()

    def post(self, item: Item) -> None:
        with self._wake:
            self._pending.append(item)
            self._wake.notify()

    def close(self, timeout: float | None = None) -> None:
        """Write what is still pending, then stop the thread."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)

    def _loop(self) -> None:
        next_write = 0.0
        while True:
            with self._wake:
                while not self._closed:
                    if not self._pending:
                        self._wake.wait()
                    elif (delay := next_write - time.monotonic()) > 0:
                        self._wake.wait(delay)
                    else:
                        break
                if not self._pending:
                    return
                items, self._pending = self._pending, []
            next_write = time.monotonic() + self._min_interval
            try:
                self._write(items)
            except Exception:  # the writer must outlive one bad write; the run goes on
                log.exception("progress not recorded")
