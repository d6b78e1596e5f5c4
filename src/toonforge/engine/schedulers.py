"""The scheduler names tool pages offer, mapped to diffusers classes.

Page values are the diffusers class names themselves, so the table is an allow-list rather than
a translation: an unknown name is an error with the parameter's name, never a silent default.
Every scheduler is built with `Class.from_config(base_config)`; the constructor would reject
keys that the checkpoint's config carries for other schedulers (`clip_sample`, `skip_prk_steps`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from toonforge.engine.contract import ModelError

# In the order of the CartoonMix page (which lists EulerDiscreteScheduler twice).
SCHEDULER_NAMES: tuple[str, ...] = (
    "EulerDiscreteScheduler",
    "DDIMScheduler",
    "LMSDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "PNDMScheduler",
    "DDPMScheduler",
    "EulerAncestralDiscreteScheduler",
)


def make_scheduler(name: str, base_config: Mapping[str, Any]) -> Any:
    """A fresh scheduler of class `name`, configured from the model's own scheduler config."""
    if name not in SCHEDULER_NAMES:
        expected = ", ".join(SCHEDULER_NAMES)
        raise ModelError(f"scheduler: unknown scheduler {name!r}; expected one of {expected}")
    import diffusers

    cls = getattr(diffusers, name)
    return cls.from_config(dict(base_config))
