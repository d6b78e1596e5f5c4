"""The worker's side of the WebSocket previews: a slot for the latest preview of the task in
hand, filled every few steps while somebody asked for previews, and written to the
`task_previews` row in the same transaction as the step's progress event.

Whether previews are wanted is read from the database at every step (the API inserts the
task's `task_previews` row when a subscriber with `"previews": true` connects): one primary
key lookup per step, and nothing computed while nobody asked.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, TaskPreview
from toonforge.tasks.store import now

# How long the preview of an ended task is kept.
KEEP_SECONDS = 300.0


class PreviewSlot:
    def __init__(self, every_steps: int) -> None:
        self.every = max(1, every_steps)
        self.wanted = False
        self.last_step = 0
        self.pending: tuple[int, str] | None = None

    def wants(self, step: int, total: int) -> bool:
        """A preview for this step: wanted, not the last step (the result follows at once),
        and the first one since asked or `every` steps after the previous one."""
        if not self.wanted or step >= total:
            return False
        return self.last_step == 0 or step - self.last_step >= self.every

    def put(self, step: int, url: str) -> None:
        self.pending = (step, url)
        self.last_step = step

    def sync(self, session: Session, task_id: int) -> None:
        """In the step's progress transaction: learn whether previews are wanted, and store
        the one made for this step, if any."""
        # Taken first: the sampling thread may put the next one meanwhile (the progress is
        # written beside the loop, toonforge.worker.progress_writer).
        pending, self.pending = self.pending, None
        row = session.get(TaskPreview, task_id)
        self.wanted = row is not None
        if row is not None and pending is not None:
            row.step, row.image = pending
            row.updated_at = now()


def prune_previews(session: Session) -> None:
    """Previews of tasks that ended a while ago (kept that long so that a subscriber that
    reads the last steps late still gets the last preview). Read from the (small) previews
    table, joined to the tasks by primary key."""
    ended = session.scalars(
        select(TaskPreview.task_id)
        .join(Task, Task.id == TaskPreview.task_id)
        .where(TaskPreview.requested_at < now() - KEEP_SECONDS, Task.status.in_(lc.TERMINAL))
    ).all()
    if ended:
        session.execute(delete(TaskPreview).where(TaskPreview.task_id.in_(ended)))


class StepReporter:
    """The `on_step` the worker hands to the engine: progress through `write(step, total)`,
    and the preview hooks the samplers look for (engine/contract.py `PreviewSink`)."""

    def __init__(self, write: Callable[[int, int], None], slot: PreviewSlot) -> None:
        self.write = write
        self.slot = slot

    def __call__(self, step: int, total: int) -> None:
        self.write(step, total)

    def wants_preview(self, step: int, total: int) -> bool:
        return self.slot.wants(step, total)

    def add_preview(self, step: int, url: str) -> None:
        self.slot.put(step, url)
