"""SD 1.5: several tasks of one batch key in one denoising run (see toonforge.engine.batching).

Each task is set up exactly as `sd15.generate_sd15` sets up a lone one (its request, its own
text encodings and prompt schedule, its per-sample generators and starting noise); a task
whose inputs fail there (a bad prompt, a seed out of range) fails alone and the others run.
Decoding and PNG writing are per task, one sample at a time, as in the lone path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from diffusers.utils.torch_utils import randn_tensor

from toonforge.catalog.manifest import Manifest
from toonforge.engine.batching import BatchTask, Member, denoise_batch, finished, shared_encodings
from toonforge.engine.common import model_errors
from toonforge.engine.conditioning import PromptSchedule
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError
from toonforge.engine.prompt_embeds import (
    ClipEncoder,
    EncodedText,
    Fragments,
    encode_fragments,
    final_norm_layer,
)
from toonforge.engine.schedulers import make_scheduler
from toonforge.engine.sd15 import Sd15Model, _decode, _Request, model_for, output_files, run_info
from toonforge.engine.sd_sampling import callback_errors
from toonforge.engine.steps import decode_each

# What each task of a batch ends with: its result, or the error that ended it
# (GenerationInterrupted when it was stopped, ModelError when its inputs or run failed).
Outcome = GenerationResult | Exception
# The shared inputs of a batch: tasks that differ here cannot share a run.
SHARED = ("steps", "scale", "clip_skip", "width", "height", "scheduler")


def generate_batch(
    ctx: EngineContext,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    model = model_for(ctx, manifest, params_list[0])
    return generate_sd15_batch(model, manifest, params_list, on_step, should_stop)


def generate_sd15_batch(
    model: Sd15Model,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    """One outcome per entry of `params_list`, in order. `on_step(step, total)` follows each
    step; `should_stop(index)` lets one task leave between steps."""
    started = time.monotonic()
    pipe = model.pipe
    outcomes: list[Outcome | None] = [None] * len(params_list)
    tasks: list[BatchTask] = []
    encoders: dict[int, Callable[[Fragments], EncodedText]] = {}  # by clip skip
    for index, params in enumerate(params_list):
        try:
            req = _Request.from_params(params)
            if tasks and _shared(req) != _shared(tasks[0].req):
                raise ModelError("size, steps, scheduler or scale differ from the batch's")
            if req.clip_skip not in encoders:
                encoder = ClipEncoder(
                    pipe.tokenizer,
                    pipe.text_encoder,
                    final_norm_layer(pipe.text_encoder, req.clip_skip),
                    model.embedding_ids,
                )
                encoders[req.clip_skip] = shared_encodings(
                    lambda fragments, e=encoder: encode_fragments(e, fragments)
                )
            schedule = PromptSchedule(
                encoders[req.clip_skip],
                req.prompt,
                req.negative_prompt,
                req.steps,
            )
            tasks.append(BatchTask(index, req, schedule))
        except ModelError as exc:
            outcomes[index] = exc
    if not tasks:
        return finished(outcomes, started)
    first = tasks[0].req
    scheduler = make_scheduler(first.scheduler, model.scheduler_config)
    pipe.scheduler = scheduler
    job = f"{sum(t.req.samples for t in tasks)} x {first.width}x{first.height} (batch)"
    with callback_errors(), model_errors("SD1.5", job, "samples, width or height"):
        scheduler.set_timesteps(first.steps, device=model.device)
        factor = pipe.vae_scale_factor
        members = []
        for t in tasks:
            shape = (
                t.req.samples,
                pipe.unet.config.in_channels,
                first.height // factor,
                first.width // factor,
            )
            device, dtype = model.device, model.dtype
            noise = randn_tensor(shape, generator=t.generators, device=device, dtype=dtype)
            members.append(
                Member(t.index, noise * scheduler.init_noise_sigma, t.schedule.at, t.generators)
            )
        results = denoise_batch(
            pipe.unet,
            scheduler,
            members,
            scheduler.timesteps,
            guidance=first.scale,
            on_step=on_step,
            should_stop=should_stop,
        )
        for t, result in zip(tasks, results, strict=True):
            if result.latents is None:
                outcomes[t.index] = result.error or ModelError("no output")
                continue
            images = decode_each(lambda z: _decode(pipe, z), result.latents)
            files = output_files(t.req, images, t.seeds, manifest, model.weights.tiny)
            info = {**run_info(t.req, model, t.seeds), **t.schedule.describe()}
            outcomes[t.index] = GenerationResult(files=files, info=info)
    return finished(outcomes, started)


def _shared(req: _Request) -> tuple[Any, ...]:
    return tuple(getattr(req, name) for name in SHARED)
