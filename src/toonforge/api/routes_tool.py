"""Tool/List, Tool/Detail and Tool/Explore, answered from the catalog (no authentication:
the catalog is public)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy.orm import Session

from toonforge.api.body import str_field
from toonforge.api.deps import PublicBodyDep, ServicesDep
from toonforge.api.envelope import NOT_FOUND, ApiError, ok
from toonforge.catalog import Manifest
from toonforge.catalog.record import tool_record
from toonforge.catalog.search import SORTS, default_order, relevance, search_words, sort_tools
from toonforge.services import Services
from toonforge.tasks.tool_stats import typical_runs

router = APIRouter()

MAX_LIMIT = 1000
EXPLORE_GROUP_SIZE = 20


def _as_list(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _int(body: dict[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).strip())
    except ValueError as exc:
        raise ApiError(f"Request parameter [{name}] must be integer or float") from exc
    if not 0 <= number <= MAX_LIMIT * 1000:
        raise ApiError(f"Request parameter [{name}] must be between 0 and {MAX_LIMIT * 1000}")
    return number


def _flag(body: dict[str, Any], name: str) -> bool:
    return str(body.get(name, "")).strip().lower() in ("1", "true", "yes")


def _records(
    services: Services, session: Session, tools: list[Manifest], *, summary: bool
) -> list[dict[str, Any]]:
    typical = typical_runs(session, [m.key for m in tools])
    return [
        tool_record(
            m,
            services.settings,
            summary=summary,
            typical_seconds=typical[m.key],
            readiness=services.availability.of(m),
        )
        for m in tools
    ]


@router.post("/v1/Tool/List")
def tool_list(body: PublicBodyDep, services: ServicesDep) -> dict[str, Any]:
    with services.read_sessions() as session:
        start = _int(body, "start", 0)
        limit = min(_int(body, "limit", 20), MAX_LIMIT)
        search = str_field(body, "search")
        categories = _as_list(body.get("categories"))
        tags = [t.lower() for t in _as_list(body.get("tags"))]
        owner = str_field(body, "slugowner").lower()
        sort = str_field(body, "sort") or "id"
        if sort not in SORTS:
            raise ApiError(f"Request parameter [sort] must be one of: {', '.join(SORTS)}")
        order = (str_field(body, "order") or default_order(sort)).upper()
        if order not in ("ASC", "DESC"):
            raise ApiError("Request parameter [order] must be one of: ASC, DESC")
        searching = bool(search_words(search)) or bool(search.strip())

        def matches(m: Manifest) -> bool:
            if owner and owner not in (m.owner.lower(), m.cleanslugowner):
                return False
            if categories and not all(c in m.categories for c in categories):
                return False
            if tags and not all(t in (x.lower() for x in m.tags) for t in tags):
                return False
            return not searching or relevance(m, search) > 0

        found = sort_tools((m for m in services.catalog if matches(m)), sort, order, search)
        page = found[start : start + limit]
        return ok(
            total=len(found),
            tool=_records(services, session, page, summary=_flag(body, "summary")),
        )


@router.post("/v1/Tool/Detail")
def tool_detail(body: PublicBodyDep, services: ServicesDep) -> dict[str, Any]:
    with services.read_sessions() as session:
        owner = str_field(body, "slugowner")
        slug = str_field(body, "slugproject")
        if not owner:
            raise ApiError("Request parameter [slugowner] required")
        if not slug:
            raise ApiError("Request parameter [slugproject] required")
        manifest = services.catalog.find(owner, slug)
        if manifest is None:
            raise ApiError("slug-owner-project-not-exist", code=NOT_FOUND)
        summary = _flag(body, "summary")
        return ok(tool=_records(services, session, [manifest], summary=summary))


def _group_title(category: str) -> str:
    words = category.split("-")
    return " ".join(w if w == "to" else w.capitalize() for w in words)


@router.post("/v1/Tool/Explore")
def tool_explore(services: ServicesDep) -> dict[str, Any]:
    """The catalog grouped for browsing: one group per kind of task the tools do (their
    `x-to-y` categories, in catalog order), tools in id order, at most 20 shown per group
    (`total` counts them all). A tool with no such category goes to "Other"."""
    with services.read_sessions() as session:
        groups: dict[str, list[Manifest]] = {}
        for m in sort_tools(services.catalog, "id", "ASC", ""):
            kinds = [c for c in m.categories if "-to-" in c] or ["other"]
            for kind in kinds:
                groups.setdefault(kind, []).append(m)
        explore = []
        for kind, tools in groups.items():
            shown = tools[:EXPLORE_GROUP_SIZE]
            explore.append(
                {
                    "id": kind,
                    "title": _group_title(kind),
                    "total": len(tools),
                    "tools": _records(services, session, shown, summary=True),
                }
            )
        return ok(explore=explore)
