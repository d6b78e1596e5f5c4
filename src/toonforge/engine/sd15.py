"""Stable Diffusion 1.5 family: single-file checkpoints (CartoonMix and kin) on diffusers.

Load once with `StableDiffusionPipeline.from_single_file` (or `from_pretrained` for a
diffusers-layout base), keep it, and per request swap the scheduler, encode the prompts
ourselves (see `prompt_embeds`), run the pipeline to latents and decode one image at a time.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from toonforge.catalog.manifest import Manifest
from toonforge.engine.common import LOAD_ERRORS, check_image_request, model_errors
from toonforge.engine.common import param as _param
from toonforge.engine.conditioning import PromptSchedule
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import (
    GeneratedFile,
    GenerationResult,
    ModelError,
    StepCallback,
    StopCheck,
)
from toonforge.engine.image_files import output_format
from toonforge.engine.placement import place_pipeline
from toonforge.engine.png import a1111_parameters
from toonforge.engine.pool import module_bytes
from toonforge.engine.prompt_embeds import (
    ClipEncoder,
    encode_fragments,
    final_norm_layer,
    textual_inversion_ids,
)
from toonforge.engine.schedulers import make_scheduler
from toonforge.engine.sd_sampling import callback_errors, denoise
from toonforge.engine.steps import decode_each, image_files, result, sample_seeds
from toonforge.engine.weights import ResolvedWeights, resolve_weights

logger = logging.getLogger("toonforge.engine")


@dataclass
class Sd15Model:
    pipe: Any  # StableDiffusionPipeline
    weights: ResolvedWeights
    device: torch.device
    dtype: torch.dtype
    # The checkpoint's own scheduler config: every request's scheduler is built from it, not
    # from whatever the previous request left on the pipeline.
    scheduler_config: dict[str, Any]
    embedding_ids: dict[int, list[int]] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        p = self.pipe
        return module_bytes(p.unet, p.vae, p.text_encoder)

    def describe(self) -> dict[str, Any]:
        w = self.weights
        return {
            "family": "sd15",
            "tiny": w.tiny,
            "loaded_from": str(w.checkpoint or w.base_dir),
            "config_from": str(w.base_dir),
            "embeddings": [token for token, _ in w.embeddings],
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def load_sd15(weights: ResolvedWeights, device: torch.device, dtype: torch.dtype) -> Sd15Model:
    from diffusers import StableDiffusionPipeline

    started = time.monotonic()
    common: dict[str, Any] = {
        "torch_dtype": dtype,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
        "local_files_only": True,
    }
    source = weights.checkpoint or weights.base_dir
    try:
        if weights.checkpoint is not None:
            pipe = StableDiffusionPipeline.from_single_file(
                str(weights.checkpoint), config=str(weights.base_dir), **common
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(str(weights.base_dir), **common)
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load SD1.5 weights from {source}: {exc}") from exc
    for token, path in weights.embeddings:
        try:
            pipe.load_textual_inversion(str(path), token=token)
        except LOAD_ERRORS as exc:
            message = f"could not load textual inversion {token!r} from {path}: {exc}"
            raise ModelError(message) from exc
    place_pipeline(pipe, device)  # the memory plan: on the device, or offloaded
    pipe.set_progress_bar_config(disable=True)
    tokens = [token for token, _ in weights.embeddings]
    logger.debug("SD1.5 pipeline from %s with embeddings %s", source, tokens)
    return Sd15Model(
        pipe=pipe,
        weights=weights,
        device=device,
        dtype=dtype,
        scheduler_config=dict(pipe.scheduler.config),
        embedding_ids=textual_inversion_ids(pipe.tokenizer, tokens),
        load_seconds=time.monotonic() - started,
    )


@dataclass
class _Request:
    prompt: str
    negative_prompt: str
    samples: int
    steps: int
    scale: float
    seed: int
    clip_skip: int
    width: int
    height: int
    scheduler: str
    output: tuple[str, int] = ("png", 90)  # outputFormat, outputQuality

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Request:
        req = cls(
            prompt=_param(params, "prompt", str),
            negative_prompt=_param(params, "negativePrompt", str),
            samples=_param(params, "samples", int),
            steps=_param(params, "steps", int),
            scale=_param(params, "scale", float),
            seed=_param(params, "seed", int),
            clip_skip=_param(params, "clipSkip", int),
            width=_param(params, "width", int),
            height=_param(params, "height", int),
            scheduler=_param(params, "scheduler", str),
            output=output_format(params),
        )
        check_image_request(req.samples, req.steps, req.width, req.height, req.seed)
        return req


def model_for(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> Sd15Model:
    """The tool's loaded checkpoint (with its embeddings), from the shared parts pool."""
    weights = resolve_weights(ctx.settings, manifest)
    if weights.tiny:
        logger.warning(
            "OFFLINE MODE: tiny stand-in weights for %s (random weights from %s); "
            "outputs are not the real model's",
            manifest.key,
            weights.checkpoint or weights.base_dir,
        )
    # File sizes stand in for the footprint until the model is loaded and measured.
    estimate = sum(p.stat().st_size for p in weights.files if p.is_file())
    return ctx.part(
        f"sd15:{weights.identity}",
        lambda: load_sd15(weights, ctx.device, ctx.dtype),
        estimate,
    )


def prepare(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> dict[str, Any]:
    model = model_for(ctx, manifest, params)
    return {**model.describe(), "load_seconds": round(model.load_seconds, 3)}


def generate(
    ctx: EngineContext,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    return generate_sd15(model_for(ctx, manifest, params), manifest, params, on_step, should_stop)


def generate_sd15(
    model: Sd15Model,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    """The steps: request, prompt schedule, seeds, denoise, decode, files (engine/steps.py)."""
    req = _Request.from_params(params)
    started = time.monotonic()
    schedule = prompt_schedule(model, req)
    seeds, generators = sample_seeds(req.seed, req.samples)
    with callback_errors(), _model_errors(req):
        latents = denoise_request(model, req, schedule, generators, on_step, should_stop)
        images = decode_each(lambda z: _decode(model.pipe, z), latents)
    files = output_files(req, images, seeds, manifest, model.weights.tiny)
    return result(files, {**run_info(req, model, seeds), **schedule.describe()}, started)


def prompt_schedule(model: Sd15Model, req: _Request) -> PromptSchedule:
    """The prompt and negative prompt, encoded per step (A1111 syntax, clip skip, textual
    inversions)."""
    pipe = model.pipe
    encoder = ClipEncoder(
        pipe.tokenizer,
        pipe.text_encoder,
        final_norm_layer(pipe.text_encoder, req.clip_skip),
        model.embedding_ids,
    )
    return PromptSchedule(
        lambda fragments: encode_fragments(encoder, fragments),
        req.prompt,
        req.negative_prompt,
        req.steps,
    )


def denoise_request(
    model: Sd15Model,
    req: _Request,
    schedule: PromptSchedule,
    generators: list[torch.Generator],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> torch.Tensor:
    """Starting noise from each sample's generator, then the request's sampler."""
    pipe, device = model.pipe, model.device
    scheduler = make_scheduler(req.scheduler, model.scheduler_config)
    pipe.scheduler = scheduler  # what the pipeline object reports; the loop below uses it
    scheduler.set_timesteps(req.steps, device=device)
    scale = pipe.vae_scale_factor
    shape = (req.samples, pipe.unet.config.in_channels, req.height // scale, req.width // scale)
    latents = randn_tensor(shape, generator=generators, device=device, dtype=model.dtype)
    return denoise(
        pipe.unet,
        scheduler,
        latents * scheduler.init_noise_sigma,
        scheduler.timesteps,
        conditioning=schedule.at,
        guidance=req.scale,
        generators=generators,
        on_step=on_step,
        should_stop=should_stop,
    )


def run_info(req: _Request, model: Sd15Model, seeds: list[int]) -> dict[str, Any]:
    """What the task's debugoutput records of the run (besides the prompt schedule)."""
    return {
        **model.describe(),
        "seed": req.seed,
        "seeds": seeds,
        "scheduler": req.scheduler,
        "steps": req.steps,
        "scale": req.scale,
        "clipSkip": req.clip_skip,
        "width": req.width,
        "height": req.height,
        "samples": req.samples,
    }


def output_files(
    req: _Request, images: list[Any], seeds: list[int], manifest: Manifest, tiny: bool
) -> list[GeneratedFile]:
    """The image outputs (PNG unless `outputFormat` says otherwise) with their generation
    parameters, one per sample, named 0.png ..."""

    def text_for(seed: int) -> dict[str, Any]:
        return {
            "prompt": req.prompt,
            "negative_prompt": req.negative_prompt,
            "seed": seed,
            "steps": req.steps,
            "scale": req.scale,
            "clip_skip": req.clip_skip,
            "scheduler": req.scheduler,
            "model": manifest.key,
            "parameters": a1111_parameters(
                req.prompt,
                req.negative_prompt,
                steps=req.steps,
                sampler=req.scheduler,
                scale=req.scale,
                seed=seed,
                width=req.width,
                height=req.height,
                clip_skip=req.clip_skip,
                model=manifest.key,
            ),
            "toonforge-tiny": "true" if tiny else None,
        }

    return image_files(images, seeds, text_for, req.output)


def _model_errors(req: _Request) -> AbstractContextManager[None]:
    job = f"{req.samples} x {req.width}x{req.height}"
    return model_errors("SD1.5", job, "samples, width or height")


def _decode(pipe: Any, latents: torch.Tensor) -> Any:
    """One sample at a time: the VAE at full resolution is the memory peak of SD1.5."""
    vae = pipe.vae
    with torch.no_grad():
        pixels = vae.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]
