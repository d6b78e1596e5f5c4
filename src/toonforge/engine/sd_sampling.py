"""The denoising loop for the Stable Diffusion families (SD1.5 and SDXL), run here rather
than inside a diffusers pipeline.

diffusers' pipelines take one fixed conditioning. AUTOMATIC1111 prompts need more: prompt
editing and alternation change the conditioning from one step to the next, and `AND` combines
several conditionings in one guidance step (composable diffusion:
`eps = eps_uncond + scale * sum_i w_i * (eps_i - eps_uncond)`). The loop is diffusers' own
(scheduler.scale_model_input, unet, scheduler.step with the per-sample generators), with the
conditioning asked for at every step.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from toonforge.engine.common import check_finite
from toonforge.engine.conditioning import StepConditioning
from toonforge.engine.contract import GenerationInterrupted, StepCallback, StopCheck
from toonforge.engine.preview import SD15, LatentPreview, offer_preview
from toonforge.engine.rowwise import rowwise_embeddings

# For SDXL: conditioning + batch size -> the UNet's added_cond_kwargs, in the order
# [negative, positive 1, positive 2, ...], each repeated over the batch.
AddedCond = Callable[[StepConditioning, int], dict[str, torch.Tensor]]


def denoise(
    unet: Any,
    scheduler: Any,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    *,
    conditioning: Callable[[int], StepConditioning],
    guidance: float,
    generators: list[torch.Generator],
    on_step: StepCallback,
    should_stop: StopCheck,
    added_cond: AddedCond | None = None,
    step_offset: int = 0,
    total_steps: int | None = None,
    preview: LatentPreview = SD15,
) -> torch.Tensor:
    """Run `timesteps` from `latents`; `conditioning(i)` is asked for each 0-based step i.

    `on_step(step_offset + i + 1, total_steps)` follows every step; when `should_stop()` turns
    true, GenerationInterrupted is raised between steps. `preview` says how these latents
    look as RGB, for the preview images a step callback may ask for.
    """
    rowwise_embeddings(unet)  # the same values as in a batch (see toonforge.engine.rowwise)
    total = total_steps if total_steps is not None else step_offset + len(timesteps)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {"generator": generators} if takes_generator else {}
    batch = latents.shape[0]
    dtype = latents.dtype
    for i, t in enumerate(timesteps):
        cond = conditioning(i)
        # At scale 1 with a single plain prompt, the unconditional pass cancels out.
        use_uncond = not (guidance == 1.0 and cond.plain)
        contexts = ([cond.negative] if use_uncond else []) + [p for p, _ in cond.positives]
        copies = len(contexts)
        model_in = scheduler.scale_model_input(torch.cat([latents] * copies), t)
        hidden = torch.cat([c.expand(batch, -1, -1) for c in contexts]).to(dtype)
        kwargs: dict[str, Any] = {}
        if added_cond is not None:
            added = added_cond(cond, batch)
            if not use_uncond:
                added = {k: v[batch:] for k, v in added.items()}
            kwargs["added_cond_kwargs"] = added
        with torch.no_grad():
            eps = unet(model_in, t, encoder_hidden_states=hidden, return_dict=False, **kwargs)[0]
        outs = eps.chunk(copies)
        if use_uncond:
            uncond, conds = outs[0], outs[1:]
            delta = sum(w * (e - uncond) for e, (_, w) in zip(conds, cond.positives, strict=True))
            guided = uncond + guidance * delta
        else:
            guided = outs[0]
        latents = scheduler.step(guided, t, latents, return_dict=False, **extra)[0]
        check_finite(latents, f"at denoising step {step_offset + i + 1}")
        try:
            offer_preview(on_step, step_offset + i + 1, total, latents, preview)
            on_step(step_offset + i + 1, total)
            stop = should_stop()
        except Exception as exc:
            raise StepCallbackFailed(exc) from exc
        if stop:
            raise GenerationInterrupted("generation was stopped between steps")
    return latents


class StepCallbackFailed(Exception):
    """The worker's step callback raised: carried out of the model-error handling so that the
    worker sees its own exception (a lost lease, a database error), not a model error."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


@contextmanager
def callback_errors() -> Iterator[None]:
    """Re-raise what a step callback raised, as itself."""
    try:
        yield
    except StepCallbackFailed as exc:
        raise exc.error from None
