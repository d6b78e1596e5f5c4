"""The TOOL record that Tool/List, Tool/Detail and Tool/Explore answer with."""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Any

from toonforge.catalog.availability import Readiness
from toonforge.catalog.manifest import Manifest
from toonforge.catalog.schema import parameter_groups
from toonforge.settings import Settings

OFFLINE_NOTE = (
    "OFFLINE MODE: this server runs tiny stand-in weights built by toonforge; "
    "outputs show the pipeline works, not what the real model draws."
)


def approximate_cost(cps: str, seconds: float | None) -> str:
    """cps × the tool's typical run time here (tasks.tool_stats); "" when never run."""
    if seconds is None:
        return ""
    return f"{Decimal(cps) * Decimal(f'{seconds:.4f}'):.12f}"


def computing_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} seconds"
    return f"{round(seconds)} seconds"


def readme(m: Manifest) -> str:
    """A short HTML readme from what the manifest knows (the pages have no other text)."""
    parts = [f"<p>{html.escape(m.description)}</p>"]
    if m.backend.trigger_words:
        words = ", ".join(html.escape(w) for w in m.backend.trigger_words)
        parts.append(f"<p>Trigger words: {words}</p>")
    if not m.engine_ready and m.engine_note:
        parts.append(f"<p>{html.escape(m.engine_note)}</p>")
    return "".join(parts)


def tool_record(
    m: Manifest,
    settings: Settings,
    *,
    summary: bool = False,
    typical_seconds: float | None = None,
    readiness: Readiness | None = None,
) -> dict[str, Any]:
    readiness = readiness or Readiness(m.engine_ready, m.engine_note)
    record: dict[str, Any] = {
        "id": m.id,
        "title": m.title,
        "slugowner": m.owner,
        "slugproject": m.slug,
        "cleanslugowner": m.cleanslugowner,
        "cleanslugproject": m.cleanslug,
        "description": m.description,
        # The pages have one description; it is also the SEO text clients show.
        "seodescription": m.description,
        "cover": m.cover,
        "image": m.cover,
        "categories": m.categories,
        "tags": m.tags,
        "cps": m.cps,
        "price": m.cps,
        "pricetype": "per-second",
        # The price does not depend on the inputs: no dynamic price (see `cps`).
        "dynamicprice": "",
        "approximatelycost": approximate_cost(m.cps, typical_seconds),
        "computingtime": computing_time(typical_seconds),
        "addedtime": str(int(m.added.timestamp())) if m.added else "0",
        # No ratings or comments on this server.
        "averagepoint": "0.00",
        "commentcount": "0",
        "ratedusercount": "0",
        "engineready": readiness.ready,
        "enginenote": readiness.note,
        "offlinemode": settings.tiny,
        "triggerwords": m.backend.trigger_words,
    }
    if settings.tiny:
        record["offlinenote"] = OFFLINE_NOTE
    if not summary:
        record["parameters"] = parameter_groups(m)
        record["inspire"] = m.inspire
        record["readme"] = readme(m)
        # Sample outputs: none recorded (the cover is the page's cover, not a run of ours).
        record["samples"] = []
    return record
