"""The TASK record as the API shows it: every number a string, times as unix seconds."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from toonforge.catalog import Manifest
from toonforge.storage.links import FileLinks
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import CallbackDelivery, Task, TaskOutput
from toonforge.tasks.queue_position import QueueSpot, queue_fields
from toonforge.tasks.store import elapsed_seconds

_TIME_FIELDS = (
    "starttime",
    "endtime",
    "createtime",
    "canceltime",
    "assigntime",
    "accepttime",
    "preprocessstarttime",
    "preprocessendtime",
    "postprocessstarttime",
    "postprocessendtime",
)


class RowView:
    """A row read with SQLAlchemy Core, its columns as attributes: what `task_record` and
    `output_record` read, without the ORM's per-object bookkeeping (Task/Detail is the
    hottest read of the API, and the ORM cost twice the queries themselves)."""

    def __init__(self, row: Mapping[str, Any], **extra: Any) -> None:
        self.__dict__.update(row)
        self.__dict__.update(extra)


def read_task_view(
    session: Session,
    project_id: int | None,
    *,
    taskid: int | None = None,
    token: str | None = None,
) -> Any:
    """The task of this project by id or socket token, with its outputs, as `RowView`s
    (None when there is none: another project's task included). `project_id` None: any
    project's (for the WebSocket, whose token is the capability)."""
    tasks, outputs = Task.__table__, TaskOutput.__table__
    query = select(tasks)
    if project_id is not None:
        query = query.where(tasks.c.project_id == project_id)
    if taskid is not None:
        query = query.where(tasks.c.id == taskid)
    elif token:
        query = query.where(tasks.c.socket_token == token)
    else:
        return None
    row = session.execute(query).mappings().first()
    if row is None:
        return None
    files = session.execute(
        select(outputs).where(outputs.c.task_id == row["id"]).order_by(outputs.c.position)
    ).mappings()
    return RowView(row, outputs=[RowView(f) for f in files])


def _ts(value: float | None) -> str:
    return "0" if value is None else str(int(value))


def output_record(task: Task, out: TaskOutput, links: FileLinks) -> dict[str, Any]:
    link = links.output(out)
    return {
        "id": out.id,
        "name": out.name,
        "contenttype": out.content_type,
        "parentid": task.uuid.replace("-", ""),
        "uuid": task.uuid,
        "size": str(out.size),
        "addedtime": _ts(out.added_at),
        "modifiedtime": _ts(out.added_at),
        "accesskey": out.accesskey,
        "url": link.url,
        "urlexpiretime": str(link.expires),
    }


def outputs_list(task: Task, links: FileLinks) -> list[dict[str, Any]]:
    if task.files_deleted:
        return []
    return [output_record(task, out, links) for out in task.outputs]


def outputs_expire_time(task: Task, links: FileLinks) -> str:
    """When the retention period deletes the task's outputs ("0": never, or none left)."""
    if task.files_deleted or not task.outputs:
        return "0"
    return str(links.outputs_expire(min(out.added_at for out in task.outputs)))


def task_record(
    task: Task,
    *,
    links: FileLinks,
    manifest: Manifest | None,
    deliveries: list[CallbackDelivery] | None = None,
    queue: QueueSpot | None = None,
) -> dict[str, Any]:
    """`queue`: the place of a queued task (queue_position.queue_spot_of); without it the
    record says "0" for both queue fields."""
    outputs = outputs_list(task, links)
    elapsed = elapsed_seconds(task) if task.starttime else 0.0
    owner, _, slug = task.tool_key.partition("/")
    record: dict[str, Any] = {
        "id": str(task.id),
        "uuid": task.uuid,
        "name": "",
        "socketaccesstoken": task.socket_token,
        "parameters": task.parameters,
        "debugoutput": task.debugoutput,
        "debugerror": task.debugerror,
        "elapsedseconds": f"{elapsed:.4f}",
        "status": task.status,
        "cps": task.cps,
        "totalcost": task.totalcost,
        "guestid": None,
        "projectid": str(task.project_id),
        "modelid": task.model_id,
        "modelslugowner": owner,
        "modelslugproject": slug,
        "modeldescription": manifest.description if manifest else "",
        "description": "",
        "basemodelid": "0",
        "runtype": "model",
        "callbackurl": task.callback_url,
        "pexit": task.pexit,
        "categories": json.dumps(manifest.categories if manifest else []),
        "outputs": outputs,
        "size": str(sum(int(o["size"]) for o in outputs)),
        **queue_fields(queue),
        "outputsexpiretime": outputs_expire_time(task, links),
    }
    for field in _TIME_FIELDS:
        record[field] = _ts(getattr(task, field))
    if deliveries is not None:
        record["callbacks"] = [delivery_record(d) for d in deliveries]
    return record


def delivery_record(d: CallbackDelivery) -> dict[str, Any]:
    return {
        "url": d.url,
        "state": d.state,
        "attempts": str(d.attempts),
        "lasterror": d.last_error,
    }


def is_terminal(task: Task) -> bool:
    return lc.is_terminal(task.status)
