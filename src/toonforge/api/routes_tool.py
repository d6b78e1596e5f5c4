"""Tool/List and Tool/Detail, answered from the catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from toonforge.api.body import str_field
from toonforge.api.deps import PublicBodyDep, ServicesDep
from toonforge.api.envelope import GENERAL, NOT_FOUND, ApiError, ok
from toonforge.catalog import Manifest
from toonforge.settings import Settings

router = APIRouter()

SORT_KEYS = {
    "id": lambda m: int(m.id) if m.id.isdigit() else m.id,
    "title": lambda m: m.title.lower(),
    "slugowner": lambda m: m.owner.lower(),
    "slugproject": lambda m: m.slug.lower(),
}


def tool_record(m: Manifest, settings: Settings, *, summary: bool = False) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": m.id,
        "title": m.title,
        "slugowner": m.owner,
        "slugproject": m.slug,
        "cleanslugowner": m.cleanslugowner,
        "cleanslugproject": m.cleanslug,
        "description": m.description,
        "cover": m.cover,
        "categories": m.categories,
        "tags": m.tags,
        "cps": m.cps,
        "price": m.cps,
        "pricetype": "per-second",
        "engineready": m.engine_ready,
        "enginenote": m.engine_note,
        "offlinemode": settings.tiny,
        "triggerwords": m.backend.trigger_words,
    }
    if settings.tiny:
        record["offlinenote"] = (
            "OFFLINE MODE: this server runs tiny stand-in weights built by toonforge; "
            "outputs show the pipeline works, not what the real model draws."
        )
    if not summary:
        record["parameters"] = [i.model_dump(exclude_none=True) for i in m.inputs]
        record["inspire"] = m.inspire
    return record


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
        number = int(str(value))
    except ValueError as exc:
        raise ApiError(f"Request parameter [{name}] must be integer or float") from exc
    if number < 0:
        raise ApiError(f"Request parameter [{name}] must be between 0 and 1000")
    return number


@router.post("/v1/Tool/List")
def tool_list(body: PublicBodyDep, services: ServicesDep) -> dict[str, Any]:
    start = _int(body, "start", 0)
    limit = min(_int(body, "limit", 20), 1000)
    search = str_field(body, "search").lower()
    categories = _as_list(body.get("categories"))
    tags = [t.lower() for t in _as_list(body.get("tags"))]
    owner = str_field(body, "slugowner").lower()
    sort = str_field(body, "sort") or "id"
    order = (str_field(body, "order") or "ASC").upper()
    summary = str(body.get("summary", "")).lower() in ("1", "true", "yes")
    if sort not in SORT_KEYS:
        raise ApiError(
            f"Request parameter [sort] must be one of: {', '.join(SORT_KEYS)}", code=GENERAL
        )
    if order not in ("ASC", "DESC"):
        raise ApiError("Request parameter [order] must be one of: ASC, DESC", code=GENERAL)

    def matches(m: Manifest) -> bool:
        if owner and owner not in (m.owner.lower(), m.cleanslugowner):
            return False
        if categories and not all(c in m.categories for c in categories):
            return False
        if tags and not all(t in (x.lower() for x in m.tags) for t in tags):
            return False
        if search:
            haystack = " ".join([m.title, m.description, *m.tags, *m.categories]).lower()
            return search in haystack
        return True

    found = sorted(
        (m for m in services.catalog if matches(m)),
        key=SORT_KEYS[sort],
        reverse=order == "DESC",
    )
    page = found[start : start + limit]
    return ok(
        total=str(len(found)),
        tool=[tool_record(m, services.settings, summary=summary) for m in page],
    )


@router.post("/v1/Tool/Detail")
def tool_detail(body: PublicBodyDep, services: ServicesDep) -> dict[str, Any]:
    owner = str_field(body, "slugowner")
    slug = str_field(body, "slugproject")
    if not owner:
        raise ApiError("Request parameter [slugowner] required")
    if not slug:
        raise ApiError("Request parameter [slugproject] required")
    manifest = services.catalog.find(owner, slug)
    if manifest is None:
        raise ApiError("slug-owner-project-not-exist", code=NOT_FOUND)
    return ok(tool=[tool_record(manifest, services.settings)])
