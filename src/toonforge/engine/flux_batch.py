"""FLUX: several tasks of one batch key in one denoising run (see toonforge.engine.batching).

The lone path runs diffusers' FluxPipeline loop; a batch runs the same loop here, written
out so that a task can leave it between steps. Each task is set up exactly as the pipeline
sets up a lone one: its prompts encoded by the pipeline's own `encode_prompt` (its samples
as rows), its starting noise from `prepare_latents` with its own per-sample generators
(seed + i), and, with true CFG, its negative prompt encoded the same way. At every step one
transformer call takes every task's rows; the rows of the tasks with true CFG get the
negative pass of their own and the pipeline's expression for guidance; one scheduler step
(flow-matching Euler, elementwise) moves them all. The transformer's per-row matmuls run
row-wise (toonforge.engine.rowwise.rowwise_flux), so each task's images are the same bytes
as alone (`tests/engine/test_flux_batch.py`).

A task whose `should_stop(index)` turns true leaves at the next step, its rows dropped from
every per-row tensor; a task whose inputs fail (a bad JSON prompt) fails alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

from toonforge.catalog.manifest import Manifest
from toonforge.engine.batching import after_step, finished
from toonforge.engine.common import model_errors
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError
from toonforge.engine.flux import (
    MAX_SEQUENCE_LENGTH,
    FluxModel,
    _decode,
    _Guidance,
    _Request,
    activate,
    model_for,
    output_files,
    run_info,
)
from toonforge.engine.rowwise import rowwise_flux
from toonforge.engine.sd_sampling import callback_errors
from toonforge.engine.steps import decode_each, sample_seeds

Outcome = GenerationResult | Exception
# What every task of a batch shares (the batch key guarantees it; checked again here).
SHARED = ("steps", "scale", "width", "height")


@dataclass
class _Member:
    index: int
    req: _Request
    guidance: _Guidance
    seeds: list[int]
    latents: torch.Tensor  # packed: [samples, tokens, channels]
    embeds: torch.Tensor
    pooled: torch.Tensor
    negative: tuple[torch.Tensor, torch.Tensor] | None  # (embeds, pooled) with true CFG

    @property
    def rows(self) -> int:
        return int(self.latents.shape[0])


def generate_batch(
    ctx: EngineContext,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    model = model_for(ctx, manifest, params_list[0])
    return generate_flux_batch(model, manifest, params_list, on_step, should_stop)


@torch.no_grad()  # as FluxPipeline.__call__: T5 takes other kernels when grad is on
def generate_flux_batch(
    model: FluxModel,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    """One outcome per entry of `params_list`, in order."""
    started = time.monotonic()
    pipe = model.pipe
    rowwise_flux(pipe.transformer)
    active = activate(model, manifest.backend.loras)
    outcomes: list[Outcome | None] = [None] * len(params_list)
    members: list[_Member] = []
    text_ids = image_ids = None
    for index, params in enumerate(params_list):
        try:
            req = _Request.from_params(params)
            if members and _shared(req) != _shared(members[0].req):
                raise ModelError("size, steps or scale differ from the batch's")
            member, text_ids, image_ids = _member(pipe, manifest, index, req)
            members.append(member)
        except ModelError as exc:
            outcomes[index] = exc
    if not members:
        return finished(outcomes, started)
    first = members[0].req
    job = f"{sum(m.rows for m in members)} x {first.width}x{first.height} (batch)"
    with callback_errors(), model_errors("FLUX", job, "samples, width or height"):
        finals = _denoise(pipe, members, text_ids, image_ids, on_step, should_stop)
        for m in members:
            final = finals[m.index]
            if isinstance(final, Exception):
                outcomes[m.index] = final
                continue
            images = decode_each(lambda z: _decode(pipe, z, first.height, first.width), final)
            files = output_files(m.req, images, m.seeds, manifest, model, active, m.guidance)
            info = run_info(m.req, model, m.seeds, active, m.guidance)
            outcomes[m.index] = GenerationResult(files=files, info=info)
    return finished(outcomes, started)


def _member(pipe: Any, manifest: Manifest, index: int, req: _Request) -> tuple[_Member, Any, Any]:
    """A task set up as FluxPipeline sets up a lone run of it."""
    guidance = _Guidance.of(manifest, req)
    seeds, generators = sample_seeds(req.seed, req.samples)
    device = pipe._execution_device
    job = f"{req.samples} x {req.width}x{req.height}"
    with model_errors("FLUX", job, "samples, width or height"):

        def encode(clip: str, t5: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return pipe.encode_prompt(
                prompt=clip,
                prompt_2=t5,
                device=device,
                num_images_per_prompt=req.samples,
                max_sequence_length=MAX_SEQUENCE_LENGTH,
            )

        embeds, pooled, text_ids = encode(req.prompts.clip, req.prompts.t5)
        negative = None
        if guidance.true_cfg and guidance.pipe_args["true_cfg_scale"] > 1:
            args = guidance.pipe_args
            neg_embeds, neg_pooled, _ = encode(args["negative_prompt"], args["negative_prompt_2"])
            negative = (neg_embeds, neg_pooled)
        latents, image_ids = pipe.prepare_latents(
            req.samples,
            pipe.transformer.config.in_channels // 4,
            req.height,
            req.width,
            embeds.dtype,
            device,
            generators,
        )
    member = _Member(index, req, guidance, seeds, latents, embeds, pooled, negative)
    return member, text_ids, image_ids


def _denoise(
    pipe: Any,
    members: list[_Member],
    text_ids: Any,
    image_ids: Any,
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> dict[int, torch.Tensor | Exception]:
    """FluxPipeline's loop over every member's rows; each member's final packed latents, or
    the exception it left with."""
    transformer, scheduler = pipe.transformer, pipe.scheduler
    first = members[0].req
    device = pipe._execution_device
    sigmas = np.linspace(1.0, 1 / first.steps, first.steps)
    if getattr(scheduler.config, "use_flow_sigmas", False):
        sigmas = None
    config = scheduler.config
    mu = calculate_shift(
        members[0].latents.shape[1],
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    timesteps, _ = retrieve_timesteps(scheduler, first.steps, device, sigmas=sigmas, mu=mu)
    scheduler.set_begin_index(0)
    scale = None
    if transformer.config.guidance_embeds:
        scale = torch.full([1], first.scale, device=device, dtype=torch.float32)
    finals: dict[int, torch.Tensor | Exception] = {}

    def fail(member: _Member, exc: Exception) -> None:
        finals[member.index] = exc

    live = list(members)
    latents = torch.cat([m.latents for m in live])

    def call(rows: torch.Tensor, t: torch.Tensor, embeds: Any, pooled: Any, ctx: str) -> Any:
        timestep = t.expand(rows.shape[0]).to(rows.dtype)
        with transformer.cache_context(ctx):
            return transformer(
                hidden_states=rows,
                timestep=timestep / 1000,
                guidance=scale.expand(rows.shape[0]) if scale is not None else None,
                pooled_projections=pooled,
                encoder_hidden_states=embeds,
                txt_ids=text_ids,
                img_ids=image_ids,
                joint_attention_kwargs={},
                return_dict=False,
            )[0]

    for i, t in enumerate(timesteps):
        if not live:
            break
        embeds = torch.cat([m.embeds for m in live])
        pooled = torch.cat([m.pooled for m in live])
        noise = call(latents, t, embeds, pooled, "cond")
        noise = _true_cfg(noise, latents, t, live, call)
        latents = scheduler.step(noise, t, latents, return_dict=False)[0]
        latents, live = after_step(
            scheduler, latents, live, i + 1, first.steps, on_step, should_stop, fail
        )
    start = 0
    for m in live:
        finals[m.index] = latents[start : start + m.rows]
        start += m.rows
    return finals


def _true_cfg(
    noise: torch.Tensor,
    latents: torch.Tensor,
    t: torch.Tensor,
    live: list[_Member],
    call: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """The negative pass over the rows of the members with true CFG, and the pipeline's
    `neg + scale * (pred - neg)` for them; the other rows as they are."""
    rows: list[int] = []
    start = 0
    for m in live:
        if m.negative is not None:
            rows.extend(range(start, start + m.rows))
        start += m.rows
    if not rows:
        return noise
    index = torch.tensor(rows, dtype=torch.long, device=latents.device)
    with_negative = [m for m in live if m.negative is not None]
    embeds = torch.cat([m.negative[0] for m in with_negative])  # type: ignore[index]
    pooled = torch.cat([m.negative[1] for m in with_negative])  # type: ignore[index]
    negative = call(latents.index_select(0, index), t, embeds, pooled, "uncond")
    scale = with_negative[0].guidance.pipe_args["true_cfg_scale"]
    guided = negative + scale * (noise.index_select(0, index) - negative)
    return noise.index_copy(0, index, guided)


def _shared(req: _Request) -> tuple[Any, ...]:
    return tuple(getattr(req, name) for name in SHARED)
