"""A tool's typical run time on this server, measured from its recent successful tasks.

Tool records show `approximatelycost = cps × typical seconds` and `computingtime` from it.
The typical run is the median run time (task_start → task_end, what is billed) of the
tool's last `RECENT` successful tasks, all projects together (only the aggregate is shown).
A tool that has not run successfully here yet has no estimate: both fields are "".
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task

RECENT = 20


def typical_seconds(session: Session, tool_key: str) -> float | None:
    rows = session.execute(
        select(Task.starttime, Task.endtime)
        .where(
            Task.tool_key == tool_key,
            Task.status == lc.POSTPROCESS_END,
            Task.pexit == "0",
            Task.starttime.is_not(None),
            Task.endtime.is_not(None),
        )
        .order_by(Task.id.desc())
        .limit(RECENT)
    ).all()
    spans = [max(0.0, end - start) for start, end in rows]
    return statistics.median(spans) if spans else None


def typical_runs(session: Session, tool_keys: Iterable[str]) -> dict[str, float | None]:
    return {key: typical_seconds(session, key) for key in tool_keys}
