"""The task WebSocket at /v1/socket.

The client sends {"type": "task_info", "tasktoken": TOKEN}; the server answers with the
task's current state, then one frame per event until the task ends. Events come from the
task_events table, so a worker on another host is heard as well as a local one; the
process's event hub says when to read them (no socket polls on its own). While the database
is unreachable a follower waits and then goes on where it was.

toonforge additions (docs/api.md):
- While the task is queued, frames carry top-level `queueposition` and `estimatedstarttime`
  (tasks/queue_position.py), and a new `task_queue` frame is sent when the position
  changes (only before `task_accept`: a change is looked for only while the task, read
  with its events, is still queued and has no new event).
- With `"previews": true` in task_info, `task_output` frames carry `message.preview` (a
  data: URL of a small WebP) and `message.previewStep` when the worker made a newer
  preview (worker/previews.py); without it no frame has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any, NamedTuple

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from toonforge.api.hub import EventHub
from toonforge.services import Services
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.db import DB_OUTAGE_ERRORS, DB_UNAVAILABLE
from toonforge.tasks.models import Task, TaskPreview
from toonforge.tasks.queue_position import QueueSpot, queue_fields, queue_spot_of
from toonforge.tasks.record import outputs_list, read_task_view
from toonforge.tasks.store import last_event_id, now

router = APIRouter()
# Socket tokens are 30 letters and digits; anything else cannot be one (and is not looked up).
_TOKEN = re.compile(r"[A-Za-z0-9]{1,64}")
log = logging.getLogger("toonforge.api")

# Without news, look anyway this often (a follower also notices a closed socket then).
IDLE_SECONDS = 15.0
OUTAGE_RETRY_SECONDS = 1.0
# A queued task's place is looked at again at most this often when other tasks move.
QUEUE_CHECK_SECONDS = 0.5


def _frame(task: Task, type_: str, message: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "id": str(task.id),
        "tasktoken": task.socket_token,
        "message": message,
        "result": True,
    }


def _snapshot(services: Services, token: str) -> tuple[Task, int, QueueSpot | None] | None:
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
        return task, last_event_id(session, task.id), queue_spot_of(services, session, task)


class Polled(NamedTuple):
    task: Any
    events: list[tuple[int, str, Any]]
    spot: QueueSpot | None  # the task is still queued, with no new event
    preview: tuple[int, str] | None  # (step, data URL), newer than the last one sent


# The events whose frames are built from the task as it is now (its outputs); the others are
# sent as stored, and need only the task's id and token, which do not change.
_NEED_TASK = frozenset({lc.POSTPROCESS_END})


async def _poll(
    services: Services,
    hub: EventHub,
    task_id: int,
    after: int,
    preview_after: int | None = None,
) -> Polled:
    """The task's events after `after` (read by the hub's EventReader: one query for all of
    this process's followers woken together), and, when a frame or the queue spot needs it,
    the task (with its outputs) as it is now (else `task` is None: a step's progress costs
    no query of its own). `preview_after`: the step of the last preview sent (None: this
    subscriber did not ask for previews)."""
    rows = await hub.events.after(task_id, after)
    events = [(r.id, r.type, r.message) for r in rows]
    need_task = not rows or any(r.type in _NEED_TASK for r in rows)
    need_preview = preview_after is not None and any(r.type == lc.OUTPUT for r in rows)
    if not need_task and not need_preview:
        return Polled(None, events, None, None)
    return await run_in_threadpool(
        _details, services, task_id, events, need_task, preview_after if need_preview else None
    )


def _details(
    services: Services,
    task_id: int,
    events: list[tuple[int, str, Any]],
    need_task: bool,
    preview_after: int | None,
) -> Polled:
    """The rest of a follower's wake-up: the task as it is now (read after its events, so
    its outputs are at least those the events announce) and the queue spot when there was
    no event; the newest preview after `preview_after` (None: none wanted)."""
    with services.read_sessions() as session:
        task = None
        spot = None
        if need_task:
            task = read_task_view(session, None, taskid=task_id)
            assert task is not None
            spot = None if events else queue_spot_of(services, session, task)
        preview = None
        if preview_after is not None:
            found = session.execute(
                select(TaskPreview.step, TaskPreview.image).where(
                    TaskPreview.task_id == task_id, TaskPreview.step > preview_after
                )
            ).first()
            preview = (found.step, found.image) if found is not None else None
        return Polled(task, events, spot, preview)


def _request_previews(services: Services, task_id: int) -> None:
    """Tell the worker (through the database) that this task's previews are wanted."""
    with services.sessions() as session:
        if session.get(TaskPreview, task_id) is None:
            session.add(TaskPreview(task_id=task_id, step=0, image="", requested_at=now()))
        try:
            session.commit()
        except IntegrityError:  # another subscriber asked at the same moment
            session.rollback()


def _with_preview(message: Any, preview: tuple[int, str]) -> Any:
    if not isinstance(message, dict):
        return message
    return {**message, "preview": preview[1], "previewStep": str(preview[0])}


def _preview_index(events: list[tuple[int, str, Any]], step: int) -> int | None:
    """The frame that carries a preview of `step`: the first task_output of that step or
    later in this batch (the preview was stored with its step's event)."""
    for i, (_, type_, message) in enumerate(events):
        if type_ == lc.OUTPUT and isinstance(message, dict):
            current = str(message.get("stepCurrent", ""))
            if current.isdigit() and int(current) >= step:
                return i
    return None


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


async def _follow(
    ws: WebSocket, services: Services, hub: EventHub, token: str, previews: bool = False
) -> None:
    if not _TOKEN.fullmatch(token) or (task_id := await _task_id_for(services, token)) is None:
        await _no_task(ws, token[:64])
        return
    moved = asyncio.Event()
    with hub.follow(task_id) as news:
        try:
            await _stream(ws, services, hub, news, moved, token, previews)
        finally:
            hub.watch_queue(moved, False)


async def _no_task(ws: WebSocket, token: str) -> None:
    await ws.send_json(
        {
            "type": "task_info",
            "tasktoken": token,
            "result": False,
            "message": "There is no task yet.",
        }
    )


async def _wait(news: asyncio.Event, moved: asyncio.Event | None, checked: float) -> None:
    """Until this task has news, or (`moved` given: the task is queued) any task has news
    and the last look at the queue is QUEUE_CHECK_SECONDS old; IDLE_SECONDS at most."""
    waits = {asyncio.ensure_future(news.wait())}
    if moved is not None:
        waits.add(asyncio.ensure_future(moved.wait()))
    _, pending = await asyncio.wait(waits, timeout=IDLE_SECONDS, return_when="FIRST_COMPLETED")
    for waiter in pending:
        waiter.cancel()
    if moved is not None and moved.is_set() and not news.is_set():
        delay = QUEUE_CHECK_SECONDS - (asyncio.get_running_loop().time() - checked)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(news.wait(), delay)
    news.clear()
    if moved is not None:
        moved.clear()


async def _stream(
    ws: WebSocket,
    services: Services,
    hub: EventHub,
    news: asyncio.Event,
    moved: asyncio.Event,
    token: str,
    previews: bool = False,
) -> None:
    found = await run_in_threadpool(_snapshot, services, token)
    if found is None:
        await _no_task(ws, token)
        return
    task, cursor, spot = found
    # A late subscriber first gets the state the task is in now.
    first = _frame(task, task.status, _message_for(services, task, task.status, None))
    await ws.send_json({**first, **queue_fields(spot)} if spot is not None else first)
    if lc.is_terminal(task.status):
        return
    sent_preview: int | None = None
    if previews:
        with contextlib.suppress(*DB_OUTAGE_ERRORS, IntegrityError):
            await run_in_threadpool(_request_previews, services, task.id)
            sent_preview = 0
    position = spot.position if spot is not None else None
    hub.watch_queue(moved, position is not None)
    checked = asyncio.get_running_loop().time()
    while True:
        await _wait(news, moved if position is not None else None, checked)
        try:
            polled = await _poll(services, hub, task.id, cursor, sent_preview)
        except DB_OUTAGE_ERRORS:
            await asyncio.sleep(OUTAGE_RETRY_SECONDS)
            news.set()
            continue
        checked = asyncio.get_running_loop().time()
        task, events = polled.task or task, polled.events
        if polled.spot is not None and polled.spot.position != position:
            frame = _frame(task, lc.QUEUE, None)
            await ws.send_json({**frame, **queue_fields(polled.spot)})
        position = polled.spot.position if polled.spot is not None else None
        hub.watch_queue(moved, position is not None)
        carrier = _preview_index(events, polled.preview[0]) if polled.preview else None
        for i, (event_id, type_, message) in enumerate(events):
            cursor = event_id
            shown = _message_for(services, task, type_, message)
            if i == carrier and polled.preview is not None:
                shown = _with_preview(shown, polled.preview)
                sent_preview = polled.preview[0]
            await ws.send_json(_frame(task, type_, shown))
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
            previews = msg.get("previews") in (True, "true", "1", 1)
            try:
                await _follow(ws, services, hub, token, previews)
            except DB_OUTAGE_ERRORS:
                await ws.send_json({"type": "error", "result": False, "message": DB_UNAVAILABLE})
    except WebSocketDisconnect:
        return
