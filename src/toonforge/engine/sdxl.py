"""Stable Diffusion XL family: SDXL base + the tool's LoRAs + the SDXL refiner.

Parts in the shared pool:
- `sdxl-base:<stamp>`: a `StableDiffusionXLPipeline` from a diffusers folder. Tools' LoRAs are
  loaded onto it as named adapters (once per file) and switched per request with
  `set_adapters`; another SDXL tool with other LoRAs on the same base reuses the same part.
- `sdxl-refiner:<stamp>`: a `StableDiffusionXLImg2ImgPipeline` built with the base's
  `text_encoder_2` and `vae` (the refiner repository's own copies are never loaded), only when a
  request runs the refiner.

The refiner runs as an "ensemble of experts": the base denoises the high-noise part of the
schedule (`denoising_end=highNoiseFrac`, latents out), the refiner the rest
(`denoising_start=highNoiseFrac`). Both get prompt embeddings computed here by
`encode_prompts_sdxl`, never prompt strings.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor

from toonforge.catalog.manifest import Lora, Manifest
from toonforge.engine.common import LOAD_ERRORS, check_image_request, model_errors
from toonforge.engine.common import param as _param
from toonforge.engine.conditioning import PromptSchedule, StepConditioning
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
from toonforge.engine.pool import module_bytes
from toonforge.engine.preview import SDXL as SDXL_PREVIEW
from toonforge.engine.prompt_embeds import (
    ClipEncoder,
    EncodedText,
    Fragments,
    encode_fragments,
    pad_chunks,
    penultimate_layer,
)
from toonforge.engine.schedulers import make_scheduler
from toonforge.engine.sd_sampling import AddedCond, callback_errors, denoise
from toonforge.engine.steps import decode_each, image_files, result, sample_seeds
from toonforge.engine.weights import resolve_file, resolve_repo, stamp
from toonforge.prompts import parse_attention
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

# The Retro-Cartoons page's `refiner` select: "" is labelled YES, this value NO.
REFINER_NO = "--only_base_model"
# The refiner's aesthetic-score conditioning: diffusers' defaults (and the SDXL report's).
AESTHETIC, NEGATIVE_AESTHETIC = 6.0, 2.5
REFINER_YES = ""


# --- weights ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SdxlWeights:
    tiny: bool
    base_dir: Path
    refiner_dir: Path | None  # None when the request does not run the refiner
    loras: tuple[tuple[Lora, Path], ...] = ()


def resolve_sdxl(settings: Settings, manifest: Manifest, refiner: bool) -> SdxlWeights:
    """Every file the request needs, before anything is loaded: a missing LoRA fails at once
    with the message saying how to provide it, not after the base took a minute to load."""
    backend = manifest.backend
    if backend.family != "sdxl":
        raise ModelError(f"{manifest.key}: not an sdxl tool ({backend.family})")
    if refiner and not backend.refiner_repo:
        raise ModelError(f"refiner: {manifest.key} names no refiner repository")
    if settings.tiny:
        from toonforge.engine.tiny.sdxl import ensure_tiny_lora, ensure_tiny_sdxl

        paths = ensure_tiny_sdxl(settings.tiny_models_dir)
        loras = tuple(
            (lora, ensure_tiny_lora(paths, Path(lora.file).name)) for lora in backend.loras
        )
        return SdxlWeights(True, paths.base_dir, paths.refiner_dir if refiner else None, loras)
    if backend.checkpoint is not None:
        raise ModelError(f"{manifest.key}: single-file SDXL checkpoints are not supported yet")
    if not backend.base_repo:
        raise ModelError(f"{manifest.key}: the manifest names no SDXL base repository")
    loras = tuple((lora, resolve_file(settings, manifest, lora)) for lora in backend.loras)
    base_dir = resolve_repo(settings, manifest, backend.base_repo, "model_index.json")
    refiner_dir = None
    if refiner:
        assert backend.refiner_repo is not None
        refiner_dir = resolve_repo(settings, manifest, backend.refiner_repo, "model_index.json")
    return SdxlWeights(False, base_dir, refiner_dir, loras)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.is_file())


# --- loaded parts ----------------------------------------------------------------------------


@dataclass
class SdxlBase:
    pipe: Any  # StableDiffusionXLPipeline
    source: Path
    scheduler_config: dict[str, Any]
    # adapter name -> stamp of the LoRA file it was loaded from
    adapters: dict[str, str] = field(default_factory=dict)
    load_seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        p = self.pipe
        return module_bytes(p.unet, p.vae, p.text_encoder, p.text_encoder_2)


@dataclass
class SdxlRefiner:
    pipe: Any  # StableDiffusionXLImg2ImgPipeline sharing text_encoder_2 and vae with a base
    source: Path
    scheduler_config: dict[str, Any]
    load_seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return module_bytes(self.pipe.unet)  # the rest belongs to the base part


@dataclass
class SdxlModel:
    """What one request uses: the shared base, the active adapters, the refiner if any."""

    base: SdxlBase
    refiner: SdxlRefiner | None
    weights: SdxlWeights
    device: torch.device
    dtype: torch.dtype
    active: list[tuple[str, float]] = field(default_factory=list)  # (adapter, weight)

    def describe(self) -> dict[str, Any]:
        return {
            "family": "sdxl",
            "tiny": self.weights.tiny,
            "loaded_from": str(self.base.source),
            "refiner_from": str(self.refiner.source) if self.refiner else None,
            "refiner_loaded": self.refiner is not None,
            "loras": [
                {"name": lora.name, "file": str(path), "weight": lora.weight}
                for lora, path in self.weights.loras
            ],
            "adapters_on_base": sorted(self.base.adapters),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def load_base(path: Path, device: torch.device, dtype: torch.dtype) -> SdxlBase:
    from diffusers import StableDiffusionXLPipeline

    started = time.monotonic()
    try:
        pipe = StableDiffusionXLPipeline.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, add_watermarker=False
        )
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load the SDXL base from {path}: {exc}") from exc
    place_pipeline(pipe, device)  # the memory plan: on the device, or offloaded
    pipe.set_progress_bar_config(disable=True)
    return SdxlBase(
        pipe, path, dict(pipe.scheduler.config), load_seconds=time.monotonic() - started
    )


def load_refiner(path: Path, base: SdxlBase, dtype: torch.dtype) -> SdxlRefiner:
    from diffusers import StableDiffusionXLImg2ImgPipeline

    started = time.monotonic()
    try:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(
            str(path),
            text_encoder_2=base.pipe.text_encoder_2,
            vae=base.pipe.vae,
            dtype=dtype,
            local_files_only=True,
            add_watermarker=False,
        )
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load the SDXL refiner from {path}: {exc}") from exc
    pipe.to(base.pipe.device)
    pipe.set_progress_bar_config(disable=True)
    return SdxlRefiner(
        pipe, path, dict(pipe.scheduler.config), load_seconds=time.monotonic() - started
    )


def _adapter_prefix(lora: Lora) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", lora.name)


def adapter_name(lora: Lora, path: Path) -> str:
    """Unique per file version: a replaced LoRA file is loaded again under a new name."""
    digest = hashlib.sha1(stamp(path).encode()).hexdigest()[:8]
    return f"{_adapter_prefix(lora)}_{digest}"


def ensure_adapters(
    base: SdxlBase, loras: tuple[tuple[Lora, Path], ...]
) -> list[tuple[str, float]]:
    """Load each LoRA onto the base once (Kohya/A1111 or diffusers naming, diffusers converts
    Kohya's itself) and make exactly these adapters active at the manifest's weights."""
    pipe = base.pipe
    active = []
    for lora, path in loras:
        name = adapter_name(lora, path)
        if name not in base.adapters:
            prefix = _adapter_prefix(lora)
            stale = [n for n in base.adapters if n.rsplit("_", 1)[0] == prefix and n != name]
            if stale:
                pipe.delete_adapters(stale)
                for n in stale:
                    base.adapters.pop(n)
            try:
                pipe.load_lora_weights(str(path), adapter_name=name)
            except LOAD_ERRORS as exc:
                raise ModelError(f"could not load LoRA {lora.name!r} from {path}: {exc}") from exc
            base.adapters[name] = stamp(path)
        active.append((name, float(lora.weight)))
    if active:
        pipe.enable_lora()
        pipe.set_adapters([n for n, _ in active], adapter_weights=[w for _, w in active])
    elif base.adapters:
        pipe.disable_lora()  # another tool's LoRAs stay loaded, but off
    return active


# --- requests --------------------------------------------------------------------------------


def wants_refiner(manifest: Manifest, params: dict[str, Any]) -> bool:
    """The page's select: "" (YES, default) runs the refiner, "--only_base_model" (NO) not.
    A tool without the input runs the refiner when its manifest names one."""
    if manifest.input("refiner") is None:
        return bool(manifest.backend.refiner_repo)
    value = _param(params, "refiner", str)
    if value not in (REFINER_YES, REFINER_NO):
        raise ModelError(f"refiner: expected '' (YES) or {REFINER_NO!r} (NO), got {value!r}")
    return value == REFINER_YES


@dataclass
class _Request:
    prompt: str
    negative_prompt: str
    samples: int
    steps: int
    scale: float
    seed: int
    width: int
    height: int
    scheduler: str
    refiner: bool
    high_noise_frac: float
    steps_refiner: int
    output: tuple[str, int] = ("png", 90)  # outputFormat, outputQuality

    @classmethod
    def from_params(cls, manifest: Manifest, params: dict[str, Any]) -> _Request:
        refiner = wants_refiner(manifest, params)
        req = cls(
            prompt=_param(params, "prompt", str),
            negative_prompt=_param(params, "negativePrompt", str),
            samples=_param(params, "samples", int),
            steps=_param(params, "steps", int),
            scale=_param(params, "scale", float),
            seed=_param(params, "seed", int),
            width=_param(params, "width", int),
            height=_param(params, "height", int),
            scheduler=_param(params, "scheduler", str),
            refiner=refiner,
            # Only read when the refiner runs: base-only tools need not declare them.
            high_noise_frac=_param(params, "highNoiseFrac", float) if refiner else 1.0,
            steps_refiner=_param(params, "stepsRefiner", int) if refiner else 0,
            output=output_format(params),
        )
        check_image_request(req.samples, req.steps, req.width, req.height, req.seed)
        if refiner and req.steps_refiner < 1:
            raise ModelError(f"stepsRefiner must be at least 1, got {req.steps_refiner}")
        if refiner and not 0.0 < req.high_noise_frac <= 1.0:
            raise ModelError(
                f"highNoiseFrac must be above 0 and at most 1 with the refiner on, got "
                f"{req.high_noise_frac}: the base must denoise part of the way"
            )
        return req


def model_for(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> SdxlModel:
    """The base (with this tool's adapters active) and, if the request runs it, the refiner."""
    weights = resolve_sdxl(ctx.settings, manifest, wants_refiner(manifest, params))
    if weights.tiny:
        logger.warning(
            "OFFLINE MODE: tiny stand-in SDXL weights for %s (random weights from %s); "
            "outputs are not the real model's",
            manifest.key,
            weights.base_dir,
        )
    base: SdxlBase = ctx.part(
        f"sdxl-base:{stamp(weights.base_dir)}",
        lambda: load_base(weights.base_dir, ctx.device, ctx.dtype),
        _folder_bytes(weights.base_dir),
    )
    active = ensure_adapters(base, weights.loras)
    refiner: SdxlRefiner | None = None
    if weights.refiner_dir is not None:
        refiner_dir = weights.refiner_dir
        refiner = ctx.part(
            f"sdxl-refiner:{stamp(refiner_dir)}",
            lambda: load_refiner(refiner_dir, base, ctx.dtype),
            _folder_bytes(refiner_dir / "unet"),
        )
        if refiner.pipe.vae is not base.pipe.vae:
            # The base was evicted and loaded again since: share the current copies.
            refiner.pipe.register_modules(
                vae=base.pipe.vae, text_encoder_2=base.pipe.text_encoder_2
            )
    return SdxlModel(base, refiner, weights, ctx.device, ctx.dtype, active)


def prepare(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> dict[str, Any]:
    model = model_for(ctx, manifest, params)
    seconds = model.base.load_seconds + (model.refiner.load_seconds if model.refiner else 0.0)
    return {**model.describe(), "load_seconds": round(seconds, 3)}


# --- prompt embeddings -----------------------------------------------------------------------


@dataclass
class SdxlEmbeds:
    """Static embeddings of a prompt pair (no scheduling), for inspection and tests."""

    prompt_embeds: torch.Tensor  # [1, 77 * chunks, te1 + te2 hidden]
    pooled: torch.Tensor  # [1, te2 projection]
    negative: torch.Tensor
    negative_pooled: torch.Tensor
    chunks: int


def _base_encoders(model: SdxlModel) -> tuple[ClipEncoder, ClipEncoder]:
    pipe = model.base.pipe
    return (
        ClipEncoder(pipe.tokenizer, pipe.text_encoder, penultimate_layer),
        ClipEncoder(pipe.tokenizer_2, pipe.text_encoder_2, penultimate_layer, pooled=True),
    )


def _joint(first: ClipEncoder | None, second: ClipEncoder) -> Callable[[Fragments], EncodedText]:
    """SDXL conditioning: the two encoders' penultimate hidden states side by side (each
    chunked as AUTOMATIC1111 does), and the second encoder's pooled output. The refiner uses
    the second encoder alone (`first` None)."""
    empties: dict[int, torch.Tensor] = {}

    def empty(i: int, encoder: ClipEncoder) -> torch.Tensor:
        if i not in empties:
            empties[i] = encode_fragments(encoder, [("", 1.0)]).hidden
        return empties[i]

    def encode(fragments: Fragments) -> EncodedText:
        b = encode_fragments(second, fragments)
        if first is None:
            return b
        a = encode_fragments(first, fragments)
        chunks = max(a.chunks, b.chunks)  # the two tokenizers may split differently
        hidden = torch.cat(
            [
                pad_chunks(a.hidden, chunks, empty(0, first)),
                pad_chunks(b.hidden, chunks, empty(1, second)),
            ],
            dim=-1,
        )
        return EncodedText(hidden, b.pooled, chunks, max(a.tokens, b.tokens))

    return encode


def encode_prompts_sdxl(model: SdxlModel, prompt: str, negative_prompt: str) -> SdxlEmbeds:
    """The base's embeddings of a prompt pair with A1111 emphasis, BREAK and chunking, padded
    to one length; an empty negative prompt is zeros where the pipeline's
    `force_zeros_for_empty_prompt` says so (as diffusers does)."""
    encode = _joint(*_base_encoders(model))
    with torch.no_grad():
        pos = encode(parse_attention(prompt))
        neg = encode(parse_attention(negative_prompt))
        empty = encode([("", 1.0)]).hidden
    chunks = max(pos.chunks, neg.chunks)
    negative, negative_pooled = pad_chunks(neg.hidden, chunks, empty), neg.pooled
    assert pos.pooled is not None and negative_pooled is not None
    if negative_prompt == "" and model.base.pipe.config.force_zeros_for_empty_prompt:
        negative, negative_pooled = torch.zeros_like(negative), torch.zeros_like(negative_pooled)
    return SdxlEmbeds(
        prompt_embeds=pad_chunks(pos.hidden, chunks, empty),
        pooled=pos.pooled,
        negative=negative,
        negative_pooled=negative_pooled,
        chunks=chunks,
    )


def _zero_negative(schedule: PromptSchedule, pipe: Any, negative_prompt: str) -> Any:
    """`schedule.at`, with the negative side zeroed for an empty negative prompt when the
    pipeline's config asks for it (the SDXL base's does, the refiner's does not)."""
    if negative_prompt != "" or not pipe.config.force_zeros_for_empty_prompt:
        return schedule.at

    def at(step: int) -> StepConditioning:
        cond = schedule.at(step)
        assert cond.negative_pooled is not None
        return replace(
            cond,
            negative=torch.zeros_like(cond.negative),
            negative_pooled=torch.zeros_like(cond.negative_pooled),
        )

    return at


def _added_cond(neg_ids: torch.Tensor, pos_ids: torch.Tensor) -> AddedCond:
    """SDXL's micro-conditioning for the UNet: pooled text embeddings and time ids, in the
    loop's order [negative, positive 1, positive 2, ...], each repeated over the batch."""

    def added(cond: StepConditioning, batch: int) -> dict[str, torch.Tensor]:
        assert cond.negative_pooled is not None and cond.positive_pooled is not None
        pooled = [cond.negative_pooled, *cond.positive_pooled]
        ids = [neg_ids] + [pos_ids] * len(cond.positive_pooled)
        return {
            "text_embeds": torch.cat([p.expand(batch, -1) for p in pooled]),
            "time_ids": torch.cat([i.expand(batch, -1) for i in ids]),
        }

    return added


# --- generation ------------------------------------------------------------------------------


def _cutoff(frac: float, num_train_timesteps: int) -> int:
    # diffusers' discrete_timestep_cutoff, for denoising_end (base) and denoising_start (refiner)
    return round(num_train_timesteps - frac * num_train_timesteps)


def plan_steps(
    base_scheduler: Any, refiner_scheduler: Any | None, req: _Request
) -> tuple[int, int]:
    """How many denoising steps the base and the refiner will run, computed the way diffusers
    0.42 splits the schedule, so that progress has a right total from the first step.

    Base: its schedule of `steps` timesteps, cut to those >= the cutoff (1000 - frac*1000).
    Refiner: its own schedule of `stepsRefiner` timesteps over the whole range, of which it runs
    only those below the cutoff (+1 for second-order schedulers when even). So the refiner runs
    about (1 - highNoiseFrac) * stepsRefiner steps, not stepsRefiner.
    """
    base_scheduler.set_timesteps(req.steps, device="cpu")
    base_ts = base_scheduler.timesteps
    if refiner_scheduler is None or req.high_noise_frac >= 1.0:
        return len(base_ts), 0
    cut = _cutoff(req.high_noise_frac, base_scheduler.config.num_train_timesteps)
    base_count = int((base_ts >= cut).sum().item())
    refiner_scheduler.set_timesteps(req.steps_refiner, device="cpu")
    rcut = _cutoff(req.high_noise_frac, refiner_scheduler.config.num_train_timesteps)
    count = int((refiner_scheduler.timesteps < rcut).sum().item())
    if getattr(refiner_scheduler, "order", 1) == 2 and count % 2 == 0:
        count += 1
    return base_count, count


def generate(
    ctx: EngineContext,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    req = _Request.from_params(manifest, params)
    return generate_sdxl(model_for(ctx, manifest, params), manifest, req, on_step, should_stop)


def generate_sdxl(
    model: SdxlModel,
    manifest: Manifest,
    req: _Request,
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    started = time.monotonic()
    base = model.base.pipe
    refiner = model.refiner.pipe if model.refiner and req.refiner else None
    base.scheduler = make_scheduler(req.scheduler, model.base.scheduler_config)
    if refiner is not None:
        assert model.refiner is not None
        refiner.scheduler = make_scheduler(req.scheduler, model.refiner.scheduler_config)
    base_count, refiner_count = plan_steps(
        make_scheduler(req.scheduler, model.base.scheduler_config),
        make_scheduler(req.scheduler, model.refiner.scheduler_config)
        if refiner is not None and model.refiner
        else None,
        req,
    )
    # highNoiseFrac = 1 (or a split that leaves the refiner no timestep): the base does it all.
    run_refiner = refiner is not None and refiner_count > 0
    total = base_count + (refiner_count if run_refiner else 0)
    # Prompt editing counts steps over the whole run: the base's, then the refiner's.
    te1, te2 = _base_encoders(model)
    schedule = PromptSchedule(_joint(te1, te2), req.prompt, req.negative_prompt, total)
    seeds, generators = sample_seeds(req.seed, req.samples)
    device, dtype = model.device, model.dtype
    size = torch.tensor([[req.height, req.width]], dtype=dtype, device=device)
    crops = torch.zeros((1, 2), dtype=dtype, device=device)

    with callback_errors(), _model_errors(req):
        scheduler = base.scheduler
        scheduler.set_timesteps(req.steps, device=device)
        timesteps = scheduler.timesteps[:base_count]
        scale = base.vae_scale_factor
        shape = (req.samples, base.unet.config.in_channels, req.height // scale, req.width // scale)
        latents = randn_tensor(shape, generator=generators, device=device, dtype=dtype)
        latents = latents * scheduler.init_noise_sigma
        time_ids = torch.cat([size, crops, size], dim=1)
        latents = denoise(
            base.unet,
            scheduler,
            latents,
            timesteps,
            conditioning=_zero_negative(schedule, base, req.negative_prompt),
            guidance=req.scale,
            generators=generators,
            on_step=on_step,
            should_stop=should_stop,
            added_cond=_added_cond(time_ids, time_ids),
            total_steps=total,
            preview=SDXL_PREVIEW,
        )
        if run_refiner:
            assert refiner is not None
            latents = refine(
                refiner,
                te2,
                req,
                latents,
                generators,
                base_count=base_count,
                refiner_count=refiner_count,
                on_step=on_step,
                should_stop=should_stop,
            )
    base_run, refiner_run = base_count, refiner_count if run_refiner else 0
    with _model_errors(req):
        images = decode_each(lambda z: _decode(base, z), latents)
    files = output_files(req, images, seeds, model, manifest)
    info = {**run_info(req, model, seeds, base_run, refiner_run), **schedule.describe()}
    return result(files, info, started)


def refine(
    refiner: Any,
    te2: Any,
    req: _Request,
    latents: torch.Tensor,
    generators: list[torch.Generator],
    *,
    base_count: int,
    refiner_count: int,
    on_step: StepCallback,
    should_stop: StopCheck,
) -> torch.Tensor:
    """The refiner's share of the steps, from the base's latents (its own schedule, its own
    aesthetic-score conditioning; prompt editing goes on counting over the whole run)."""
    total = base_count + refiner_count
    device, dtype = latents.device, latents.dtype
    rschedule = PromptSchedule(_joint(None, te2), req.prompt, req.negative_prompt, total)
    rscheduler = refiner.scheduler
    rscheduler.set_timesteps(req.steps_refiner, device=device)
    t_start = len(rscheduler.timesteps) - refiner_count
    if hasattr(rscheduler, "set_begin_index"):
        rscheduler.set_begin_index(t_start)
    pos_ids = torch.tensor([[req.height, req.width, 0, 0, AESTHETIC]], dtype=dtype)
    neg_ids = torch.tensor([[req.height, req.width, 0, 0, NEGATIVE_AESTHETIC]], dtype=dtype)
    conditioning = _zero_negative(rschedule, refiner, req.negative_prompt)
    return denoise(
        refiner.unet,
        rscheduler,
        latents,
        rscheduler.timesteps[t_start:],
        conditioning=lambda i: conditioning(base_count + i),
        guidance=req.scale,
        generators=generators,
        on_step=on_step,
        should_stop=should_stop,
        added_cond=_added_cond(neg_ids.to(device), pos_ids.to(device)),
        step_offset=base_count,
        total_steps=total,
        preview=SDXL_PREVIEW,
    )


def output_files(
    req: _Request, images: list[Any], seeds: list[int], model: SdxlModel, manifest: Manifest
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
            "scheduler": req.scheduler,
            "refiner": "YES" if req.refiner else "NO",
            "high_noise_frac": req.high_noise_frac if req.refiner else None,
            "steps_refiner": req.steps_refiner if req.refiner else None,
            "loras": ", ".join(f"{lora.name}:{lora.weight:g}" for lora, _ in model.weights.loras),
            "model": manifest.key,
            "parameters": _parameters_text(req, model, manifest, seed),
            "toonforge-tiny": "true" if model.weights.tiny else None,
        }

    return image_files(images, seeds, text_for, req.output)


def run_info(
    req: _Request, model: SdxlModel, seeds: list[int], base_run: int, refiner_run: int
) -> dict[str, Any]:
    """What the task's debugoutput records of the run (besides the prompt schedule)."""
    return {
        **model.describe(),
        "seed": req.seed,
        "seeds": seeds,
        "scheduler": req.scheduler,
        "steps": req.steps,
        "scale": req.scale,
        "width": req.width,
        "height": req.height,
        "samples": req.samples,
        "refiner": "YES" if req.refiner else "NO",
        "highNoiseFrac": req.high_noise_frac if req.refiner else None,
        "stepsRefiner": req.steps_refiner if req.refiner else None,
        "base_steps_run": base_run,
        "refiner_steps_run": refiner_run,
        "active_adapters": [{"adapter": n, "weight": w} for n, w in model.active],
    }


def _parameters_text(req: _Request, model: SdxlModel, manifest: Manifest, seed: int) -> str:
    """AUTOMATIC1111's `parameters` text, with its refiner and LoRA notation."""
    prompt = req.prompt
    for lora, path in model.weights.loras:
        prompt += f" <lora:{Path(path).stem}:{lora.weight:g}>"
    lines = [prompt]
    if req.negative_prompt:
        lines.append(f"Negative prompt: {req.negative_prompt}")
    tail = (
        f"Steps: {req.steps}, Sampler: {req.scheduler}, CFG scale: {req.scale:g}, Seed: {seed}, "
        f"Size: {req.width}x{req.height}, Model: {manifest.key}"
    )
    if req.refiner:
        tail += f", Refiner: sdxl-refiner, Refiner switch at: {req.high_noise_frac:g}"
    lines.append(tail)
    return "\n".join(lines)


def _model_errors(req: _Request) -> AbstractContextManager[None]:
    job = f"{req.samples} x {req.width}x{req.height}"
    return model_errors("SDXL", job, "samples, width or height")


def _decode(pipe: Any, latents: torch.Tensor) -> Any:
    """One sample at a time. SDXL's VAE overflows in float16 (`force_upcast`): decode in
    float32 then, as the pipeline does."""
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    with torch.no_grad():
        if upcast:
            vae.to(torch.float32)
        try:
            z = latents.to(vae.dtype)
            mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
            if mean is not None and std is not None:
                m = torch.tensor(mean).view(1, -1, 1, 1).to(z)
                s = torch.tensor(std).view(1, -1, 1, 1).to(z)
                z = z * s / vae.config.scaling_factor + m
            else:
                z = z / vae.config.scaling_factor
            pixels = vae.decode(z, return_dict=False)[0]
        finally:
            if upcast:
                vae.to(torch.float16)
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]
