"""`Prefer: wait=N` on Run (Replicate's convention): answer with the finished task when it
ends within N seconds (at most 60).

The wait holds neither a database connection nor an API thread: it sleeps on the process's
event hub (as the WebSocket and Kill do) and reads the task's status, in a short read of its
own, only when the hub says the task has news.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from typing import Any

from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from toonforge.api.hub import EventHub
from toonforge.api.routes_task import _record
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_OUTAGE_ERRORS
from toonforge.tasks.models import Task

MAX_WAIT_SECONDS = 60.0


def wait_preference(header: str | None) -> float | None:
    """Seconds asked for by a `Prefer` header (`wait=N`, or `wait` alone for the maximum);
    None when it asks for no wait. Unknown or malformed preferences are ignored, as RFC 7240
    says of preferences a server does not understand."""
    for part in re.split(r"[,;]", header or ""):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        value = value.strip().strip('"')
        if not value:
            return MAX_WAIT_SECONDS
        try:
            seconds = float(value)
        except ValueError:
            return None
        if not math.isfinite(seconds) or seconds <= 0:
            return None
        return min(seconds, MAX_WAIT_SECONDS)
    return None


def _finished_record(services: Services, task_id: int) -> dict[str, Any] | None:
    """The task's record (as Task/Detail gives it) once it has ended, else None."""
    with services.read_sessions() as session:
        status = session.scalar(select(Task.status).where(Task.id == task_id))
        if status is None or not lc.is_terminal(status):
            return None
        task = session.get(Task, task_id)
        assert task is not None
        return _record(services, session, task)


async def wait_for_end(
    hub: EventHub, services: Services, task_id: int, seconds: float
) -> dict[str, Any] | None:
    """The finished task's record if it ends within `seconds`, else None (also while the
    database cannot answer: the task is queued, Task/Detail will tell the rest)."""
    deadline = time.monotonic() + seconds
    with hub.follow(task_id) as news:
        while True:
            try:
                record = await run_in_threadpool(_finished_record, services, task_id)
            except DB_OUTAGE_ERRORS:
                return None
            remaining = deadline - time.monotonic()
            if record is not None or remaining <= 0:
                return record
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), remaining)
            news.clear()
