"""Progress written beside the sampling loop, not inside it.

At every step the engine calls back with the step's progress; writing it to the database
(a transaction with the step's `task_output` event, the kill flag read back, a preview
maybe) takes milliseconds that the loop would otherwise spend waiting, once per step, on
the critical path of every task. `ProgressWriter` takes the step's message and returns at
once; a thread of its own writes what was posted, every step still pending in one
transaction, in order, so no event is dropped or reordered even when the database is
slower than the loop. What the write learns (a kill, a lost lease) is seen by the loop at
its next step, one step later than a write in the loop would see it.

`close()` waits for the last write: the statuses that end a task always follow its
progress events.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from toonforge.ops.logging import thread_target

log = logging.getLogger("toonforge.worker")

Item = TypeVar("Item")


class ProgressWriter(Generic[Item]):
    """`post(item)` from the sampling loop; `write(items)` runs in the writer's thread with
    every item posted since its previous call (never empty, oldest first)."""

    def __init__(self, write: Callable[[list[Item]], None], name: str) -> None:
        self._write = write
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
        while True:
            with self._wake:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if not self._pending:
                    return
                items, self._pending = self._pending, []
            try:
                self._write(items)
            except Exception:  # the writer must outlive one bad write; the run goes on
                log.exception("progress not recorded")
