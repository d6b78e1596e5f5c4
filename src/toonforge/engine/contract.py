"""What the worker asks of an engine family, and what it gets back.

The worker owns the task lifecycle; an engine only turns validated inputs into files.
Progress and kill requests cross this boundary as two callables so that the engine stays
free of database and HTTP concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# on_step(step, total): called after each denoising step (1-based `step`).
StepCallback = Callable[[int, int], None]


class PreviewSink(Protocol):
    """What a step callback may offer besides being called (see engine/preview.py): the
    worker's callback wants a preview image every few steps while a WebSocket subscriber
    asked for previews. Engines look these methods up with getattr: a plain
    `(step, total)` function gets no previews."""

    def wants_preview(self, step: int, total: int) -> bool: ...
    def add_preview(self, step: int, url: str) -> None: ...


# should_stop(): true once the task was killed; the engine then interrupts between steps.
StopCheck = Callable[[], bool]


class ModelError(Exception):
    """The model could not produce the output; the message becomes the task's `debugerror`."""


class WeightsMissing(ModelError):
    """A weight file the tool needs is not on this machine. The message names the file and
    says how to provide it."""


# Named as an outcome rather than `...Error`: being stopped is a normal end of a task.
class GenerationInterrupted(Exception):
    """Raised by an engine when `should_stop()` turned true during generation."""


@dataclass
class GeneratedFile:
    name: str  # 0.png, 1.png, ... or 0.mp4
    data: bytes
    content_type: str


@dataclass
class GenerationResult:
    files: list[GeneratedFile]
    # What was really used (seed, scheduler, tiny stand-ins or real weights ...): recorded on
    # the task's debug output so a user can reproduce a result.
    info: dict[str, Any] = field(default_factory=dict)
