"""Checking a Run body against a tool's input list and completing it with defaults.

Every violation is reported with the input's name in the hosted service's message forms;
nothing is corrected silently.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toonforge.catalog.manifest import InputSpec, Manifest
from toonforge.catalog.output_format import output_inputs

# Fields every Run accepts besides the tool's inputs; they are not model parameters.
COMMON_FIELDS = frozenset({"callbackUrl", "projectid"})
SEED_MAX = 2**53 - 1  # JSON-safe, and seed + sample index still fits a 64-bit generator


@dataclass
class ValidationIssue:
    name: str
    message: str


class InvalidInputs(Exception):
    def __init__(self, issues: list[ValidationIssue]) -> None:
        super().__init__("; ".join(i.message for i in issues))
        self.issues = issues


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _number(spec: InputSpec, raw: Any) -> tuple[float | int | None, str | None]:
    name = spec.name
    if isinstance(raw, bool):
        return None, f"Request parameter [{name}] must be integer or float"
    if isinstance(raw, int | float | str):
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)
        except (ValueError, OverflowError):  # OverflowError: an integer of 400 digits
            return None, f"Request parameter [{name}] must be integer or float"
    else:
        return None, f"Request parameter [{name}] must be integer or float"
    if not math.isfinite(value):
        return None, f"Request parameter [{name}] must be integer or float"
    if spec.integer and not value.is_integer():
        return None, f"Request parameter [{name}] must be an integer"
    lo, hi = spec.min, spec.max
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = _fmt(lo) if lo is not None else "-inf"
        hi_s = _fmt(hi) if hi is not None else "inf"
        return None, f"Request parameter [{name}] must be between {lo_s} and {hi_s}"
    if spec.multiple_of and value % spec.multiple_of != 0:
        return None, f"Request parameter [{name}] must be a multiple of {spec.multiple_of}"
    if spec.integer or (spec.type == "number" and value.is_integer()):
        return int(value), None
    return value, None


def _seed(spec: InputSpec, raw: Any) -> tuple[int | None, str | None]:
    text = str(raw).strip() if raw is not None else ""
    if text == "":
        return secrets.randbelow(2**32), None
    try:
        value = int(text) if not isinstance(raw, float) else int(raw)
    except (ValueError, OverflowError):  # "x", or a JSON number such as 1e400 (infinite)
        return None, f"Request parameter [{spec.name}] must be an integer (or empty for random)"
    if isinstance(raw, float) and not raw.is_integer():
        return None, f"Request parameter [{spec.name}] must be an integer (or empty for random)"
    if not 0 <= value <= SEED_MAX:
        return None, f"Request parameter [{spec.name}] must be between 0 and {SEED_MAX}"
    return value, None


def _text(spec: InputSpec, raw: Any) -> tuple[str | None, str | None]:
    if isinstance(raw, dict | list):
        return None, f"Request parameter [{spec.name}] must be a string"
    value = raw if isinstance(raw, str) else str(raw)
    if spec.max_length is not None and len(value) > spec.max_length:
        return None, (
            f"Request parameter [{spec.name}] must be at most {spec.max_length} characters"
        )
    if spec.required and value.strip() == "":
        return None, f"Request parameter [{spec.name}] required"
    return value, None


def _select(spec: InputSpec, raw: Any, extra: Sequence[str] = ()) -> tuple[str | None, str | None]:
    value = str(raw)
    # `extra`: options that depend on the caller (a project's private models).
    allowed = [o.value for o in spec.options or []] + list(extra)
    # The page's own default may lie outside its options (animate-diff's "60"); the engine
    # gives it a documented meaning, so it is accepted as the default it is.
    if value in allowed or value == str(spec.default):
        return value, None
    shown = ", ".join(f'"{v}"' for v in dict.fromkeys(allowed)) or "none"
    return None, f"Request parameter [{spec.name}] must be one of: {shown}"


def _is_absent(spec: InputSpec, raw: Any) -> bool:
    if raw is None:
        return True
    if spec.type == "select" and raw == "":
        return "" not in [o.value for o in spec.options or []]
    return spec.type in ("number", "float", "range") and isinstance(raw, str) and not raw.strip()


# Families whose prompts use AUTOMATIC1111's syntax (toonforge.prompts).
A1111_PROMPT_FAMILIES = frozenset({"sd15", "sdxl"})


def _prompt_syntax(manifest: Manifest, params: dict[str, Any]) -> list[ValidationIssue]:
    """A prompt AUTOMATIC1111 itself cannot run (a weight such as `(a:1.2.3)`) is refused
    here, before anything is queued, rather than failing the task later."""
    from toonforge.prompts import PromptError, plan

    if manifest.backend.family == "flux":
        from toonforge.prompts.encoders import split_encoder_prompt

        out = []
        for name in ("prompt", "negativePrompt"):
            text = params.get(name)
            if isinstance(text, str):
                try:
                    split_encoder_prompt(name, text)
                except PromptError as exc:
                    detail = str(exc).removeprefix(f"{name}: ")
                    out.append(ValidationIssue(name, f"Request parameter [{name}] {detail}"))
        return out
    if manifest.backend.family not in A1111_PROMPT_FAMILIES:
        return []

    steps = params.get("steps")
    steps = steps if isinstance(steps, int) and steps >= 1 else 1
    out = []
    for name, negative in (("prompt", False), ("negativePrompt", True)):
        text = params.get(name)
        if not isinstance(text, str):
            continue
        try:
            plan(text, steps, negative=negative)
        except PromptError as exc:
            out.append(ValidationIssue(name, f"Request parameter [{name}] {exc}"))
    return out


def validate_inputs(
    manifest: Manifest,
    body: dict[str, Any],
    extra_options: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Return the parameters as they will run (typed, defaults filled, seed chosen).

    `extra_options` adds caller-specific values to select inputs (a project's own private
    models for `selectedModelPrivate`)."""
    issues: list[ValidationIssue] = []
    params: dict[str, Any] = {}
    for spec in manifest.inputs:
        raw = body.get(spec.name)
        if _is_absent(spec, raw):
            if spec.required:
                issues.append(
                    ValidationIssue(spec.name, f"Request parameter [{spec.name}] required")
                )
                continue
            raw = spec.default
        value: Any
        if spec.seed:
            value, err = _seed(spec, raw)
        elif spec.type in ("number", "float", "range"):
            value, err = _number(spec, raw)
        elif spec.type == "select":
            value, err = _select(spec, raw, (extra_options or {}).get(spec.name, ()))
        else:
            value, err = _text(spec, raw)
        if err:
            issues.append(ValidationIssue(spec.name, err))
        else:
            params[spec.name] = value
    # toonforge's own inputs (catalog/output_format.py): checked when sent, never filled in.
    for spec in output_inputs(manifest):
        raw = body.get(spec.name)
        if _is_absent(spec, raw) or (isinstance(raw, str) and not raw.strip()):
            continue
        if spec.type == "select":
            value, err = _select(spec, str(raw).strip().lower())
        else:
            value, err = _number(spec, raw)
        if err:
            issues.append(ValidationIssue(spec.name, err))
        else:
            params[spec.name] = value
    if not issues:
        issues += _prompt_syntax(manifest, params)
    if issues:
        raise InvalidInputs(issues)
    # Inputs the tool does not declare are kept as sent (the parameters show the request as
    # run); engines ignore them unless their family documents a use.
    declared = {s.name for s in manifest.inputs} | {s.name for s in output_inputs(manifest)}
    for key, raw in body.items():
        if key not in declared and key not in COMMON_FIELDS:
            params[key] = raw
    return params
