"""Aggregates behind `/metrics` (table `task_metrics`), written in the transaction that ends
a task or settles a callback: a scrape reads a few hundred rows, whatever the number of
tasks, and every worker on every host counts without being scraped itself.

Per tool and outcome: how long tasks ran (claim → end, loading included) as a histogram,
and the batch size each task ran in (its debugoutput's `batch_size`, 1 without one).
Outcomes: succeeded, failed, killed (stopped while a worker held it), cancelled (removed
from the queue; never ran, so it has no duration, only a count).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task, TaskMetric

DURATION = "duration"
BATCH = "batch"
CALLBACK = "callback"
# A task that never ran: only counted, in this kind's bucket 0.
ENDED = "ended"

# Upper bounds (seconds); the last bucket (index len) is +Inf.
DURATION_BOUNDS: tuple[float, ...] = (
    0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
BATCH_BOUNDS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)

SUCCEEDED, FAILED, KILLED, CANCELLED = "succeeded", "failed", "killed", "cancelled"


def bucket_of(value: float, bounds: tuple[float, ...]) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


_PENDING = "toonforge_metric_bumps"


def _bump(
    session: Session, kind: str, tool_key: str, outcome: str, bucket: int, value: float
) -> None:
    """Add one observation, written when the session commits (see `_write_bumps`)."""
    pending: dict[tuple[str, str, str, int], list[float]] = session.info.setdefault(_PENDING, {})
    entry = pending.setdefault((kind, tool_key, outcome, bucket), [0, 0.0])
    entry[0] += 1
    entry[1] += value


@event.listens_for(Session, "before_commit")
def _write_bumps(session: Session) -> None:
    """count += n, total += sum per row, created on first use: one upsert per row, atomic on
    both databases, in a fixed order and at the very end of the transaction (two
    transactions that end tasks of the same tools never wait on each other in opposite
    orders, and the rows are locked only until the commit)."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = TaskMetric.__table__
    for (kind, tool_key, outcome, bucket), (count, total) in sorted(pending.items()):
        stmt = insert(table).values(
            kind=kind, tool_key=tool_key, outcome=outcome, bucket=bucket, count=count, total=total
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "tool_key", "outcome", "bucket"],
            set_={"count": table.c.count + count, "total": table.c.total + total},
        )
        session.execute(stmt)


@event.listens_for(Session, "after_transaction_end")
def _forget_bumps(session: Session, transaction: Any) -> None:
    """A transaction that ended without a commit (rolled back, closed) counted nothing."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def outcome_of(task: Task, status: str) -> str:
    """A task_cancel set through the lifecycle is a kill (a worker held it); a queued task
    cancelled is recorded by `cancel_queued` as cancelled."""
    if status == lc.CANCEL:
        return KILLED
    return SUCCEEDED if task.pexit == "0" else FAILED


def batch_size_of(task: Task) -> int:
    """The batch a task ran in, as its run recorded it (debugoutput `batch_size`); 1 when
    it records none. This is the hook cross-task batching feeds."""
    text = task.debugoutput or ""
    if "batch_size" not in text:
        return 1
    try:
        value = json.loads(text).get("batch_size", 1)
        return max(1, int(value))
    except (ValueError, TypeError, AttributeError):
        return 1


def record_task_end(
    session: Session, task: Task, status: str, ended_at: float, outcome: str | None = None
) -> None:
    """Count a task reaching a terminal status (called by tasks/store.py)."""
    outcome = outcome or outcome_of(task, status)
    if outcome == CANCELLED or task.accepttime is None:
        _bump(session, ENDED, task.tool_key, outcome, 0, 0.0)
        return
    seconds = max(0.0, ended_at - task.accepttime)
    _bump(session, DURATION, task.tool_key, outcome, bucket_of(seconds, DURATION_BOUNDS), seconds)
    if outcome == SUCCEEDED:
        size = batch_size_of(task)
        _bump(session, BATCH, task.tool_key, outcome, bucket_of(size, BATCH_BOUNDS), size)


def record_callback_settled(session: Session, state: str) -> None:
    """Count a callback delivery reaching a final state (delivered, failed, refused)."""
    _bump(session, CALLBACK, "", state, 0, 0.0)


@dataclass
class Histogram:
    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)  # per bucket, not cumulative
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = self.counts or [0] * (len(self.bounds) + 1)

    def add(self, bucket: int, count: int, total: float) -> None:
        self.counts[min(bucket, len(self.bounds))] += count
        self.total += total

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs as Prometheus writes them, +Inf last."""
        out, running = [], 0
        for bound, count in zip([*self.bounds, float("inf")], self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
        return out


@dataclass
class Aggregates:
    durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    batches: dict[str, Histogram] = field(default_factory=dict)
    ended: dict[tuple[str, str], int] = field(default_factory=dict)  # every end, by outcome
    callbacks: dict[str, int] = field(default_factory=dict)


def read_aggregates(session: Session) -> Aggregates:
    agg = Aggregates()
    rows = session.execute(
        select(
            TaskMetric.kind,
            TaskMetric.tool_key,
            TaskMetric.outcome,
            TaskMetric.bucket,
            TaskMetric.count,
            TaskMetric.total,
        )
    ).all()
    for kind, tool, outcome, bucket, count, total in rows:
        if kind == DURATION:
            hist = agg.durations.setdefault((tool, outcome), Histogram(DURATION_BOUNDS))
            hist.add(bucket, count, total)
            agg.ended[(tool, outcome)] = agg.ended.get((tool, outcome), 0) + count
        elif kind == BATCH:
            agg.batches.setdefault(tool, Histogram(BATCH_BOUNDS)).add(bucket, count, total)
        elif kind == ENDED:
            agg.ended[(tool, outcome)] = agg.ended.get((tool, outcome), 0) + count
        elif kind == CALLBACK:
            agg.callbacks[outcome] = agg.callbacks.get(outcome, 0) + count
    return agg
