"""SDXL (base and refiner): several tasks of one batch key in one denoising run.

Each task is set up as `sdxl.generate_sdxl` sets up a lone one (its request, its prompt
schedules for the base and the refiner, its per-sample generators and starting noise, its
micro-conditioning); the base runs all tasks in one batched loop, then the refiner takes the
tasks still in (see toonforge.engine.batching). A task whose inputs fail fails alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from toonforge.catalog.manifest import Manifest
from toonforge.engine.batching import (
    BatchTask,
    Member,
    MemberAddedCond,
    denoise_batch,
    finished,
    shared_encodings,
)
from toonforge.engine.common import model_errors
from toonforge.engine.conditioning import PromptSchedule, StepConditioning
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError
from toonforge.engine.schedulers import make_scheduler
from toonforge.engine.sd_sampling import AddedCond, callback_errors
from toonforge.engine.sdxl import (
    AESTHETIC,
    NEGATIVE_AESTHETIC,
    SdxlModel,
    _added_cond,
    _base_encoders,
    _decode,
    _joint,
    _Request,
    _zero_negative,
    model_for,
    output_files,
    plan_steps,
    run_info,
)
from toonforge.engine.steps import decode_each

Outcome = GenerationResult | Exception
SHARED = (
    "steps",
    "scale",
    "width",
    "height",
    "scheduler",
    "refiner",
    "high_noise_frac",
    "steps_refiner",
)


def generate_batch(
    ctx: EngineContext,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    model = model_for(ctx, manifest, params_list[0])
    return generate_sdxl_batch(model, manifest, params_list, on_step, should_stop)


def _member_added(added: AddedCond) -> MemberAddedCond:
    """The lone loop's added_cond for one member's rows (without the negative rows when the
    unconditional pass is skipped, as the lone loop cuts them)."""

    def for_member(cond: StepConditioning, rows: int, use_uncond: bool) -> dict[str, torch.Tensor]:
        out = added(cond, rows)
        return out if use_uncond else {k: v[rows:] for k, v in out.items()}

    return for_member


def generate_sdxl_batch(
    model: SdxlModel,
    manifest: Manifest,
    params_list: Sequence[dict[str, Any]],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Outcome]:
    started = time.monotonic()
    base = model.base.pipe
    outcomes: list[Outcome | None] = [None] * len(params_list)
    reqs: list[tuple[int, _Request]] = []
    for index, params in enumerate(params_list):
        try:
            req = _Request.from_params(manifest, params)
            if reqs and _shared(req) != _shared(reqs[0][1]):
                raise ModelError("size, steps, scheduler, scale or refiner differ from the batch's")
            reqs.append((index, req))
        except ModelError as exc:
            outcomes[index] = exc
    if not reqs:
        return finished(outcomes, started)
    first = reqs[0][1]
    refiner = model.refiner.pipe if model.refiner and first.refiner else None
    base.scheduler = make_scheduler(first.scheduler, model.base.scheduler_config)
    if refiner is not None:
        assert model.refiner is not None
        refiner.scheduler = make_scheduler(first.scheduler, model.refiner.scheduler_config)
    base_count, refiner_count = plan_steps(
        make_scheduler(first.scheduler, model.base.scheduler_config),
        make_scheduler(first.scheduler, model.refiner.scheduler_config)
        if refiner is not None and model.refiner
        else None,
        first,
    )
    run_refiner = refiner is not None and refiner_count > 0
    total = base_count + (refiner_count if run_refiner else 0)
    te1, te2 = _base_encoders(model)
    joint = shared_encodings(_joint(te1, te2))
    tasks: list[BatchTask] = []
    for index, req in reqs:
        try:
            schedule = PromptSchedule(joint, req.prompt, req.negative_prompt, total)
            tasks.append(BatchTask(index, req, schedule))
        except ModelError as exc:
            outcomes[index] = exc
    device, dtype = model.device, model.dtype
    size = torch.tensor([[first.height, first.width]], dtype=dtype, device=device)
    crops = torch.zeros((1, 2), dtype=dtype, device=device)
    time_ids = torch.cat([size, crops, size], dim=1)
    job = f"{sum(t.req.samples for t in tasks)} x {first.width}x{first.height} (batch)"
    with callback_errors(), model_errors("SDXL", job, "samples, width or height"):
        scheduler = base.scheduler
        scheduler.set_timesteps(first.steps, device=device)
        factor = base.vae_scale_factor
        members = []
        for t in tasks:
            shape = (
                t.req.samples,
                base.unet.config.in_channels,
                first.height // factor,
                first.width // factor,
            )
            noise = randn_tensor(shape, generator=t.generators, device=device, dtype=dtype)
            members.append(
                Member(
                    t.index,
                    noise * scheduler.init_noise_sigma,
                    _zero_negative(t.schedule, base, t.req.negative_prompt),
                    t.generators,
                    _member_added(_added_cond(time_ids, time_ids)),
                )
            )
        results = denoise_batch(
            base.unet,
            scheduler,
            members,
            scheduler.timesteps[:base_count],
            guidance=first.scale,
            on_step=on_step,
            should_stop=should_stop,
            total_steps=total,
        )
        if run_refiner:
            assert refiner is not None
            results = _refine(
                refiner, te2, model, tasks, results, (base_count, total), on_step, should_stop
            )
        by_index = {r.index: r for r in results}
        for t in tasks:
            result = by_index[t.index]
            if result.latents is None:
                outcomes[t.index] = result.error or ModelError("no output")
                continue
            images = decode_each(lambda z: _decode(base, z), result.latents)
            files = output_files(t.req, images, t.seeds, model, manifest)
            info = {
                **run_info(t.req, model, t.seeds, base_count, refiner_count if run_refiner else 0),
                **t.schedule.describe(),
            }
            outcomes[t.index] = GenerationResult(files=files, info=info)
    return finished(outcomes, started)


def _refine(
    refiner: Any,
    te2: Any,
    model: SdxlModel,
    tasks: list[BatchTask],
    results: list[Any],
    counts: tuple[int, int],
    on_step: Callable[[int, int], None],
    should_stop: Callable[[int], bool],
) -> list[Any]:
    """The refiner's part of the run, for the tasks the base finished; the others keep the
    base's result (their error)."""
    base_count, total = counts
    first = tasks[0].req
    device, dtype = model.device, model.dtype
    rscheduler = refiner.scheduler
    rscheduler.set_timesteps(first.steps_refiner, device=device)
    refiner_count = total - base_count
    t_start = len(rscheduler.timesteps) - refiner_count
    if hasattr(rscheduler, "set_begin_index"):
        rscheduler.set_begin_index(t_start)
    pos_ids = torch.tensor([[first.height, first.width, 0, 0, AESTHETIC]], dtype=dtype)
    neg_ids = torch.tensor([[first.height, first.width, 0, 0, NEGATIVE_AESTHETIC]], dtype=dtype)
    added = _member_added(_added_cond(neg_ids.to(device), pos_ids.to(device)))
    by_index = {r.index: r for r in results}
    joint = shared_encodings(_joint(None, te2))
    members = []
    for t in tasks:
        r = by_index[t.index]
        if r.latents is None:
            continue
        rschedule = PromptSchedule(joint, t.req.prompt, t.req.negative_prompt, total)
        at = _zero_negative(rschedule, refiner, t.req.negative_prompt)
        members.append(
            Member(
                t.index,
                r.latents,
                lambda i, at=at: at(base_count + i),
                t.generators,
                added,
            )
        )
    refined = denoise_batch(
        refiner.unet,
        rscheduler,
        members,
        rscheduler.timesteps[t_start:],
        guidance=first.scale,
        on_step=on_step,
        should_stop=should_stop,
        step_offset=base_count,
        total_steps=total,
    )
    for r in refined:
        by_index[r.index] = r
    return [by_index[t.index] for t in tasks if t.index in by_index]


def _shared(req: _Request) -> tuple[Any, ...]:
    return tuple(getattr(req, name) for name in SHARED)
