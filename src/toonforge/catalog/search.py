"""Tool/List's search and sort orders, over the catalog in memory.

Search: the text is split into words (lower case; one-letter words and common English
filler words such as "a", "the", "to" are dropped, so "generate a cartoon image" works).
A tool matches when the whole text, or at least one of its words, appears in its title,
slugs, tags, categories, trigger words or description. Its relevance is the sum, over the
words it matches, of the weight of the best place each word is found (title or slug 8, tag
6, category 4, trigger word 3, description 1), plus 10 when the whole text appears in the
title or slug and 4 when it appears anywhere else.

Sort orders (`sort`, with the default `order` in brackets):
- `id`, `title`, `slugowner`, `slugproject` [ASC]: by that field.
- `relevance` [DESC]: best match first; without search text every tool scores 0.
- `time` [DESC]: newest first, by the manifest's `added` time.
- `ratedusercount`, `commentcount`, `averagepoint` [DESC]: toonforge has no ratings or
  comments (every tool reports 0), so these keep the `id` order.
Ties always keep the `id` order (ascending), whatever the direction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from toonforge.catalog.manifest import Manifest

_FILLER = "a an and are as at be by for from i in into is it me my of on or some that the this"
STOPWORDS = frozenset(f"{_FILLER} to with want make need using use".split(" "))
PHRASE_IN_NAME = 10
PHRASE_ELSEWHERE = 4
WEIGHTS = (("name", 8), ("tags", 6), ("categories", 4), ("triggerwords", 3), ("text", 1))

# sort value -> (key, default order)
NO_RATINGS: Callable[[Manifest], Any] = lambda m: 0  # noqa: E731
SORTS: dict[str, tuple[Callable[[Manifest], Any] | None, str]] = {
    "id": (lambda m: _id_key(m), "ASC"),
    "title": (lambda m: m.title.lower(), "ASC"),
    "slugowner": (lambda m: m.owner.lower(), "ASC"),
    "slugproject": (lambda m: m.slug.lower(), "ASC"),
    "relevance": (None, "DESC"),  # needs the search text: see sort_tools
    "time": (lambda m: m.added.timestamp() if m.added else 0.0, "DESC"),
    "ratedusercount": (NO_RATINGS, "DESC"),
    "commentcount": (NO_RATINGS, "DESC"),
    "averagepoint": (NO_RATINGS, "DESC"),
}


def _id_key(m: Manifest) -> tuple[int, int, str]:
    return (0, int(m.id), "") if m.id.isdigit() else (1, 0, m.id)


def search_words(text: str) -> list[str]:
    words = re.findall(r"[\w]+(?:[-'][\w]+)*", text.lower())
    return list(dict.fromkeys(w for w in words if len(w) > 1 and w not in STOPWORDS))


def _fields(m: Manifest) -> dict[str, str]:
    return {
        "name": " ".join([m.title, m.owner, m.slug, m.cleanslug]).lower(),
        "tags": " | ".join(m.tags).lower(),
        "categories": " | ".join(m.categories).lower(),
        "triggerwords": " | ".join(m.backend.trigger_words).lower(),
        "text": m.description.lower(),
    }


def relevance(m: Manifest, text: str) -> int:
    """How well `text` matches the tool; 0 is no match."""
    phrase = " ".join(text.lower().split())
    if not phrase:
        return 0
    fields = _fields(m)
    score = 0
    for word in search_words(phrase):
        score += max((w for name, w in WEIGHTS if word in fields[name]), default=0)
    if phrase in fields["name"]:
        score += PHRASE_IN_NAME
    elif any(phrase in value for value in fields.values()):
        score += PHRASE_ELSEWHERE
    return score


def sort_tools(tools: Iterable[Manifest], sort: str, order: str, search: str) -> list[Manifest]:
    """Sort by `sort` in `order`; ties keep the id order."""
    by_id = sorted(tools, key=_id_key)
    key, _default = SORTS[sort]
    if key is None:
        scores = {m.key: relevance(m, search) for m in by_id}
        key = lambda m: scores[m.key]  # noqa: E731
    return sorted(by_id, key=key, reverse=order == "DESC")


def default_order(sort: str) -> str:
    return SORTS[sort][1]
