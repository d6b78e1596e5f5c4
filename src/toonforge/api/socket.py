"""The task WebSocket at /v1/socket.

The client sends {"type": "task_info", "tasktoken": TOKEN}; the server answers with the
task's current state, then one frame per event until the task ends. Events come from the
task_events table, so a worker on another host is heard as well as a local one; the
process's event hub says when to read them (no socket polls on its own). While the database
is unreachable a follower waits and then goes on where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from toonforge.api.hub import EventHub
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_OUTAGE_ERRORS, DB_UNAVAILABLE
from toonforge.tasks.models import Task, TaskEvent
from toonforge.tasks.record import outputs_list, read_task_view
from toonforge.tasks.store import last_event_id

router = APIRouter()
# Socket tokens are 30 letters and digits; anything else cannot be one (and is not looked up).
_TOKEN = re.compile(r"[A-Za-z0-9]{1,64}")
log = logging.getLogger("toonforge.api")

# Without news, look anyway this often (a follower also notices a closed socket then).
IDLE_SECONDS = 15.0
OUTAGE_RETRY_SECONDS = 1.0


def _frame(task: Task, type_: str, message: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "id": str(task.id),
        "tasktoken": task.socket_token,
        "message": message,
        "result": True,
    }


def _snapshot(services: Services, token: str) -> tuple[Task, int] | None:
    """The task now and the id of its last event, read together so nothing is missed or
    sent twice between the first frame and the stream: one snapshot of the database
    (SQLite's read transaction is one; PostgreSQL needs REPEATABLE READ for it)."""
    with services.read_sessions() as session:
        if services.db.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        task = session.scalar(select(Task).where(Task.socket_token == token))
        if task is None:
            return None
        _ = task.outputs
        return task, last_event_id(session, task.id)


def _poll(services: Services, task_id: int, after: int) -> tuple[Any, list[tuple[int, str, Any]]]:
    """The task's events after `after`, and the task (with its outputs) as it is now; read
    with Core, as for every wake-up of every follower."""
    events = TaskEvent.__table__
    with services.read_sessions() as session:
        rows = session.execute(
            select(events.c.id, events.c.type, events.c.message)
            .where(events.c.task_id == task_id, events.c.id > after)
            .order_by(events.c.id)
        ).all()
        task = read_task_view(session, None, taskid=task_id)
        assert task is not None
        return task, [(r.id, r.type, r.message) for r in rows]


def _message_for(services: Services, task: Task, type_: str, stored: Any) -> Any:
    if type_ == lc.POSTPROCESS_END:
        return outputs_list(task, services.links)
    if type_ == lc.OUTPUT_FULL and stored is not None and not isinstance(stored, dict):
        return {"raw": stored}  # the hosted service's documented shape
    return stored


async def _task_id_for(services: Services, token: str) -> int | None:
    def find() -> int | None:
        with services.read_sessions() as session:
            return session.scalar(select(Task.id).where(Task.socket_token == token))

    return await run_in_threadpool(find)


async def _follow(ws: WebSocket, services: Services, hub: EventHub, token: str) -> None:
    if not _TOKEN.fullmatch(token) or (task_id := await _task_id_for(services, token)) is None:
        await _no_task(ws, token[:64])
        return
    with hub.follow(task_id) as news:
        await _stream(ws, services, news, token)


async def _no_task(ws: WebSocket, token: str) -> None:
    await ws.send_json(
        {
            "type": "task_info",
            "tasktoken": token,
            "result": False,
            "message": "There is no task yet.",
        }
    )


async def _stream(ws: WebSocket, services: Services, news: asyncio.Event, token: str) -> None:
    found = await run_in_threadpool(_snapshot, services, token)
    if found is None:
        await _no_task(ws, token)
        return
    task, cursor = found
    # A late subscriber first gets the state the task is in now.
    await ws.send_json(_frame(task, task.status, _message_for(services, task, task.status, None)))
    if lc.is_terminal(task.status):
        return
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(news.wait(), IDLE_SECONDS)
        news.clear()
        try:
            task, events = await run_in_threadpool(_poll, services, task.id, cursor)
        except DB_OUTAGE_ERRORS:
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)
            news.set()
            continue
        for event_id, type_, message in events:
            cursor = event_id
            await ws.send_json(_frame(task, type_, _message_for(services, task, type_, message)))
            if lc.is_terminal(type_):
                return


@router.websocket("/v1/socket")
async def socket(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    hub: EventHub = ws.app.state.hub
    await ws.accept()
    try:
        while True:
            raw = await ws.receive_text()
            try:
                msg = json.loads(raw)
            except ValueError:
                await ws.send_json(
                    {"type": "error", "result": False, "message": "Messages must be JSON objects."}
                )
                continue
            token = ""
            if isinstance(msg, dict):
                token = str(msg.get("tasktoken") or msg.get("socketaccesstoken") or "")
            if not token or msg.get("type") != "task_info":
                await ws.send_json(
                    {
                        "type": "error",
                        "result": False,
                        "message": 'Send {"type": "task_info", "tasktoken": TOKEN}.',
                    }
                )
                continue
            try:
                await _follow(ws, services, hub, token)
            except DB_OUTAGE_ERRORS:
                await ws.send_json({"type": "error", "result": False, "message": DB_UNAVAILABLE})
    except WebSocketDisconnect:
        return
