"""A tool's inputs in the hosted docs' grouped shape, as Tool/Detail gives them.

`parameters: [{"title": "Input", "items": [ITEM, ...]}]`. An ITEM keeps every field of the
tool page's input (`id` is the input's name; `label`, `help`, `type`, `default`, `options`)
and toonforge's bounds (`min`, `max`, `multiple_of`, `integer`, `max_length`, `seed`), plus
the fields the official client reads: `required`, `note` (the bounds in words) and `step`.
Run validation reads the manifests, never this shape.
"""

from __future__ import annotations

from typing import Any

from toonforge.catalog.manifest import InputSpec, Manifest

GROUP_TITLE = "Input"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def bounds_note(spec: InputSpec) -> str:
    """The rules Run enforces, in words: `Integer between 1 and 8.`"""
    parts: list[str] = []
    if spec.seed:
        parts.append("An integer seed, or empty for a random one.")
    elif spec.is_file:
        parts.append(
            f"An uploaded file's id or URL (File/Upload), or an http(s) URL; "
            f"the URL may also be sent as {spec.name}Url."
        )
    elif spec.type in ("number", "float", "range"):
        kind = "Integer" if spec.integer else "Number"
        if spec.min is not None and spec.max is not None:
            parts.append(f"{kind} between {_fmt(spec.min)} and {_fmt(spec.max)}.")
        elif spec.min is not None:
            parts.append(f"{kind} of at least {_fmt(spec.min)}.")
        elif spec.max is not None:
            parts.append(f"{kind} of at most {_fmt(spec.max)}.")
        else:
            parts.append(f"{kind}.")
        if spec.multiple_of:
            parts.append(f"A multiple of {spec.multiple_of}.")
    if spec.max_length is not None:
        parts.append(f"At most {spec.max_length} characters.")
    return " ".join(parts)


def parameter_item(spec: InputSpec) -> dict[str, Any]:
    item: dict[str, Any] = {"id": spec.name}
    item.update(spec.model_dump(exclude_none=True, exclude={"name"}))
    item["required"] = spec.required
    note = bounds_note(spec)
    if note:
        item["note"] = note
    if spec.multiple_of:
        item["step"] = spec.multiple_of
    elif spec.integer:
        item["step"] = 1
    return item


def parameter_groups(manifest: Manifest) -> list[dict[str, Any]]:
    """One group holding every input in page order (the pages show one list)."""
    return [{"title": GROUP_TITLE, "items": [parameter_item(i) for i in manifest.inputs]}]
