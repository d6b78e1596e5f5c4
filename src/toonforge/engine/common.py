"""What every family module needs: reading a validated parameter, the seed range, and turning
what torch, diffusers and safetensors raise into a task-level ModelError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from safetensors import SafetensorError

from toonforge.engine.contract import ModelError

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range
# Errors diffusers and safetensors raise for unreadable or mismatched weight files.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError)


def param(params: dict[str, Any], name: str, kind: type) -> Any:
    """`params[name]` as `kind` (an int is accepted as a float; None as an empty string), or
    a ModelError naming the parameter."""
    if name not in params:
        raise ModelError(f"{name}: missing parameter")
    value = params[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is str and value is None:
        value = ""
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


@contextmanager
def model_errors(family: str, job: str, lower: str) -> Iterator[None]:
    """Generation failures as ModelError: out of memory says what to lower (`job` is what was
    being made, e.g. "4 x 512x512"); anything else names the family."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise ModelError(f"out of memory generating {job}: lower {lower}") from exc
    except (RuntimeError, ValueError, IndexError) as exc:
        raise ModelError(f"{family} generation failed: {exc}") from exc
