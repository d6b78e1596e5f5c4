"""What every family module needs: reading a validated parameter, the seed range, and turning
what torch, diffusers and safetensors raise into a task-level ModelError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from safetensors import SafetensorError

from toonforge.engine.contract import GenerationInterrupted, ModelError, StepCallback, StopCheck
from toonforge.engine.preview import LatentPreview, offer_preview

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


class PipelineSteps:
    """`callback_on_step_end` for a diffusers pipeline: progress after every step, a stop
    between steps when `should_stop()` turns true, and the worker's own callback errors kept
    as themselves (a failing callback must not surface as a model error).

        steps = PipelineSteps(on_step, should_stop)
        pipe(..., callback_on_step_end=steps)
        steps.raise_if_stopped()
    """

    def __init__(
        self, on_step: StepCallback, should_stop: StopCheck, preview: LatentPreview | None = None
    ):
        self.on_step = on_step
        # How the pipeline's `latents` look as RGB, for the previews on_step may ask for.
        self.preview = preview
        self.should_stop = should_stop
        self.interrupted = False
        self.error: Exception | None = None

    def __call__(self, pipe: Any, step: int, timestep: Any, kwargs: dict[str, Any]) -> Any:
        try:
            if self.preview is not None:
                offer_preview(
                    self.on_step, step + 1, pipe.num_timesteps, kwargs.get("latents"), self.preview
                )
            self.on_step(step + 1, pipe.num_timesteps)
            if self.should_stop():
                self.interrupted = True
        except Exception as exc:
            self.error = exc
        if self.interrupted or self.error is not None:
            pipe._interrupt = True
        return kwargs

    def raise_if_stopped(self) -> None:
        if self.error is not None:
            raise self.error
        if self.interrupted:
            raise GenerationInterrupted("generation was stopped between steps")


def check_image_request(
    samples: int, steps: int, width: int, height: int, seed: int, size_multiple: int = 8
) -> None:
    """The engine's own guard on a batch of images (Run validated the inputs already; this
    protects direct callers): counts at least 1, sizes the latent space can hold, and seeds
    `seed .. seed + samples - 1` all within the generator's range."""
    for name, value in (("samples", samples), ("steps", steps)):
        if value < 1:
            raise ModelError(f"{name} must be at least 1, got {value}")
    for name, value in (("width", width), ("height", height)):
        if value < size_multiple or value % size_multiple:
            message = f"{name} must be a positive multiple of {size_multiple}, got {value}"
            raise ModelError(message)
    if not 0 <= seed <= MAX_SEED - (samples - 1):
        raise ModelError(f"seed must be between 0 and {MAX_SEED - samples + 1}")


def check_finite(latents: torch.Tensor, where: str) -> None:
    """NaN or inf in the latents (half precision overflowing, a broken checkpoint) would be
    decoded into black or garbage images without a word: fail the task instead, saying so
    (A1111 raises its NansException for the same reason)."""
    if not torch.isfinite(latents).all():
        raise ModelError(
            f"the model produced NaN or infinite values {where}; with float16 try "
            "TOONFORGE_DTYPE=float32 (or bfloat16), or a lower scale"
        )
