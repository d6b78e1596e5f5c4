"""POST /v1/Task/List: the calling project's tasks, newest first by default.

Body (all optional, numbers may be strings): `type` (`model`, the only kind of task here),
`sort` (`id`, `createtime`, `starttime`, `endtime`), `order` (`ASC`/`DESC`, default DESC),
`start` (default 0), `limit` (1-100, default 20), `modelName` (a tool's `owner/slug` as its
page or Tool/List writes it, or part of one, case-insensitive), `status` (one task status).
Answer: `{"result", "errors", "total": "N", "tasklist": [TASK, ...]}`, TASK as in
Task/Detail. Another project's tasks are never counted or shown.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import ColumnElement, func, or_, select

from toonforge.api.body import str_field
from toonforge.api.deps import BodyDep, ProjectDep, ServicesDep
from toonforge.api.envelope import ApiError, ok
from toonforge.catalog import Catalog
from toonforge.catalog.manifest import clean_slug
from toonforge.tasks import lifecycle as lc
from toonforge.tasks.models import Task
from toonforge.tasks.queue_position import queue_spot_of
from toonforge.tasks.record import task_record

router = APIRouter()

SORTS = {
    "id": Task.id,
    "createtime": Task.createtime,
    "starttime": Task.starttime,
    "endtime": Task.endtime,
}
TYPES = ("model",)
MAX_LIMIT = 100
STATUSES = lc.ALL


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = body.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError as exc:
        raise ApiError(f"Request parameter [{name}] must be integer or float") from exc
    if not low <= value <= high:
        raise ApiError(f"Request parameter [{name}] must be between {low} and {high}")
    return value


def _choice(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = str_field(body, name) or default
    if name == "order":
        value = value.upper()
    if value not in allowed:
        raise ApiError(f"Request parameter [{name}] must be one of: {', '.join(allowed)}")
    return value


def model_filter(catalog: Catalog, name: str) -> ColumnElement[bool]:
    """Tasks of the tools whose `owner/slug` (page or clean form) or title contains `name`,
    and of removed tools whose recorded `owner/slug` contains it."""
    wanted = name.lower()
    wanted_clean = "/".join(clean_slug(p) for p in wanted.split("/"))
    keys = [
        m.key
        for m in catalog
        if wanted in m.key.lower()
        or wanted in m.title.lower()
        or (wanted_clean and wanted_clean in f"{m.cleanslugowner}/{m.cleanslug}")
    ]
    return or_(Task.tool_key.in_(keys), func.lower(Task.tool_key).contains(wanted, autoescape=True))


@router.post("/v1/Task/List")
def task_list(body: BodyDep, project: ProjectDep, services: ServicesDep) -> dict[str, Any]:
    with services.read_sessions() as session:
        _choice(body, "type", TYPES, "model")
        sort = _choice(body, "sort", tuple(SORTS), "id")
        order = _choice(body, "order", ("ASC", "DESC"), "DESC")
        start = _int(body, "start", 0, 0, 10**9)
        limit = _int(body, "limit", 20, 1, MAX_LIMIT)
        status = str_field(body, "status")
        if status and status not in STATUSES:
            raise ApiError(f"Request parameter [status] must be one of: {', '.join(STATUSES)}")

        where: list[ColumnElement[bool]] = [Task.project_id == project.id]
        model = str_field(body, "modelName", "model")
        if model:
            where.append(model_filter(services.catalog, model))
        if status:
            where.append(Task.status == status)
        total = session.scalar(select(func.count(Task.id)).where(*where)) or 0
        column = SORTS[sort]
        # Tasks that have not started or ended yet come last, on SQLite and PostgreSQL alike.
        ordering = (column.desc() if order == "DESC" else column.asc()).nulls_last()
        tie = Task.id.desc() if order == "DESC" else Task.id.asc()
        tasks = session.scalars(
            select(Task).where(*where).order_by(ordering, tie).offset(start).limit(limit)
        ).all()
        return ok(
            total=str(total),
            tasklist=[
                task_record(
                    t,
                    links=services.links,
                    manifest=services.catalog.by_key(t.tool_key),
                    queue=queue_spot_of(services, session, t),
                )
                for t in tasks
            ],
        )
