"""The task WebSocket at /v1/socket.

The client sends {"type": "task_info", "tasktoken": TOKEN}; the server answers with the
task's current state, then one frame per event until the task ends. Events come from the
task_events table, so a worker on another host is heard as well as a local one.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task
from toonforge.tasks.record import outputs_list
from toonforge.tasks.store import events_after, last_event_id

router = APIRouter()
log = logging.getLogger("toonforge.api")

POLL_SECONDS = 0.05


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
    sent twice between the first frame and the stream."""
    with services.read_sessions() as session:
        task = session.scalar(select(Task).where(Task.socket_token == token))
        if task is None:
            return None
        _ = task.outputs
        return task, last_event_id(session, task.id)


def _poll(services: Services, task_id: int, after: int) -> tuple[Task, list[tuple[int, str, Any]]]:
    with services.read_sessions() as session:
        events = [(e.id, e.type, e.message) for e in events_after(session, task_id, after)]
        task = session.get(Task, task_id)
        assert task is not None
        _ = task.outputs  # load while the session is open
        return task, events


def _message_for(services: Services, task: Task, type_: str, stored: Any) -> Any:
    if type_ == lc.POSTPROCESS_END:
        return outputs_list(task, services.settings.resolved_public_url)
    return stored


async def _follow(ws: WebSocket, services: Services, token: str) -> None:
    found = await run_in_threadpool(_snapshot, services, token)
    if found is None:
        await ws.send_json(
            {
                "type": "task_info",
                "tasktoken": token,
                "result": False,
                "message": "There is no task yet.",
            }
        )
        return
    task, cursor = found
    # A late subscriber first gets the state the task is in now.
    await ws.send_json(_frame(task, task.status, _message_for(services, task, task.status, None)))
    if lc.is_terminal(task.status):
        return
    while True:
        task, events = await run_in_threadpool(_poll, services, task.id, cursor)
        for event_id, type_, message in events:
            cursor = event_id
            await ws.send_json(_frame(task, type_, _message_for(services, task, type_, message)))
            if lc.is_terminal(type_):
                return
        await asyncio.sleep(POLL_SECONDS)


@router.websocket("/v1/socket")
async def socket(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
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
            await _follow(ws, services, token)
    except WebSocketDisconnect:
        return
