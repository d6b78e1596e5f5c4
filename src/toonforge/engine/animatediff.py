"""AnimateDiff family: a motion adapter over a Stable Diffusion 1.5 base, with camera-motion LoRAs.

Parts in the pool (see `context.EngineContext.part`):
- `sd15:<ResolvedWeights.identity>`: the base's SD1.5 pipeline, the very part the image tools
  (`engine.sd15`) load when their checkpoint is the same file. Its text encoder, tokenizer and
  VAE serve the video pipeline as they are.
- `animatediff:<base identity>|adapter=...|loras=...`: the motion UNet
  (`UNetMotionModel.from_unet2d(base.unet, adapter)`) and an `AnimateDiffPipeline` built from
  the shared components. Each camera-motion LoRA is loaded onto it once, as a named adapter,
  the first time a request asks for it (all eight are resolved up front, so a missing file is
  reported before anything runs); later requests only switch the active adapter
  (`set_adapters`), never reloading the base.

Requests: `selectedModel` picks one of the manifest's bases ("60", the page's default, names
none of them and means `backend.default_base_model`); a non-empty `selectedModelPrivate` (the
id of a checkpoint the calling project registered, checked by the API) takes precedence.
Frames are bounded by the adapter's positional embeddings (`motion_max_seq_length`, 32 for
v1-5-2); longer requests are refused, never truncated. The clip is encoded as H.264 yuv420p
MP4 (`0.mp4`), which browsers play.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toonforge.catalog.manifest import BaseModelChoice, Manifest
from toonforge.engine.common import MAX_SEED, PipelineSteps, check_finite, model_errors
from toonforge.engine.common import param as _param
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import (
    GeneratedFile,
    GenerationInterrupted,
    GenerationResult,
    ModelError,
    StepCallback,
    StopCheck,
)
from toonforge.engine.pool import module_bytes
from toonforge.engine.preview import ANIMATEDIFF as ANIMATEDIFF_PREVIEW
from toonforge.engine.prompt_embeds import encode_prompts
from toonforge.engine.sd15 import Sd15Model, load_sd15
from toonforge.engine.steps import result
from toonforge.engine.weights import (
    SD15_CONFIG_REPO,
    ResolvedWeights,
    resolve_file,
    resolve_repo,
    stamp,
)

logger = logging.getLogger("toonforge.engine")

FPS = 8  # AnimateDiff's own export rate (16 frames = 2 s)
GUIDANCE_SCALE = 7.5  # the page has no scale input; diffusers' AnimateDiff default
DECODE_CHUNK = 8  # frames per VAE decode call: bounds the memory peak
# The "default" markers of selectedModel: the page's "60" and an empty value.
DEFAULT_MARKERS = ("", "60")


@dataclass
class MotionModel:
    pipe: Any  # AnimateDiffPipeline sharing the base's text encoder, tokenizer and VAE
    base: Sd15Model
    adapter_dir: Path
    max_frames: int
    lora_files: dict[str, Path]  # loraType value -> file
    lora_weights: dict[str, float]  # loraType value -> weight
    scheduler_config: dict[str, Any]
    adapters: dict[str, str] = field(default_factory=dict)  # loaded: value -> adapter name
    load_seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        # The motion UNet is this part's own; the rest is counted in the SD1.5 part.
        return module_bytes(self.pipe.unet)

    def use_lora(self, value: str) -> bool:
        """Make the motion LoRA `value` the only active adapter, loading it onto the pipeline
        the first time it is asked for (then kept: later requests only switch). Returns
        whether it was loaded now."""
        if value not in self.lora_files:
            known = ", ".join(self.lora_files) or "none"
            raise ModelError(f"loraType: unknown motion LoRA {value!r}; expected one of {known}")
        loaded_now = value not in self.adapters
        if loaded_now:
            name, path = _adapter_name(value), self.lora_files[value]
            try:
                self.pipe.load_lora_weights(
                    str(path.parent), weight_name=path.name, adapter_name=name
                )
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise ModelError(f"could not load motion LoRA {value} from {path}: {exc}") from exc
            self.adapters[value] = name
        name = self.adapters[value]
        self.pipe.set_adapters([name], adapter_weights=[self.lora_weights.get(value, 1.0)])
        return loaded_now


@dataclass(frozen=True)
class BaseChoice:
    label: str  # "485", or "private:12"
    weights: ResolvedWeights


# ---------------------------------------------------------------- weights


def _tiny_paths(ctx: EngineContext, manifest: Manifest) -> Any:
    from toonforge.engine.tiny.animatediff import ensure_tiny_animatediff

    backend = manifest.backend
    return ensure_tiny_animatediff(
        ctx.settings.tiny_models_dir,
        [(b.id, b.checkpoint.file) for b in backend.base_models],
        [(lora.repo or lora.name, lora.file) for lora in backend.loras],
    )


def _base_weights(
    ctx: EngineContext, manifest: Manifest, choice: BaseModelChoice
) -> ResolvedWeights:
    wf = choice.checkpoint
    if ctx.tiny:
        target = _tiny_paths(ctx, manifest).base(choice.id, wf.file)
        return ResolvedWeights("sd15", True, target.folder, target.checkpoint)
    if wf.file == "model_index.json":
        if not wf.repo:
            raise ModelError(f"base model {choice.id}: a diffusers folder needs a repo")
        return ResolvedWeights(
            "sd15", False, resolve_repo(ctx.settings, manifest, wf.repo, wf.file)
        )
    checkpoint = resolve_file(ctx.settings, manifest, wf)
    config = resolve_repo(
        ctx.settings, manifest, manifest.backend.base_repo or SD15_CONFIG_REPO, "model_index.json"
    )
    return ResolvedWeights("sd15", False, config, checkpoint)


def _private_weights(ctx: EngineContext, manifest: Manifest, value: str) -> ResolvedWeights:
    from toonforge.tasks.private_models import checkpoint_path

    if not value.isdigit():
        raise ModelError(f"selectedModelPrivate: expected a private model id, got {value!r}")
    path = checkpoint_path(ctx.settings, int(value))
    if not path.is_file():
        raise ModelError(f"selectedModelPrivate: private model {value} is no longer registered")
    if ctx.tiny:
        config = _tiny_paths(ctx, manifest).sd15_config
    else:
        repo = manifest.backend.base_repo or SD15_CONFIG_REPO
        config = resolve_repo(ctx.settings, manifest, repo, "model_index.json")
    return ResolvedWeights("sd15", ctx.tiny, config, path)


def choose_base(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> BaseChoice:
    private = str(params.get("selectedModelPrivate") or "").strip()
    if private:
        return BaseChoice(f"private:{private}", _private_weights(ctx, manifest, private))
    backend = manifest.backend
    value = str(params.get("selectedModel") or "").strip()
    if value in DEFAULT_MARKERS:
        value = backend.default_base_model or ""
    choice = next((b for b in backend.base_models if b.id == value), None)
    if choice is None:
        known = ", ".join(b.id for b in backend.base_models)
        raise ModelError(f"selectedModel: unknown base model {value!r}; expected one of {known}")
    return BaseChoice(choice.id, _base_weights(ctx, manifest, choice))


def _adapter_dir(ctx: EngineContext, manifest: Manifest) -> Path:
    if ctx.tiny:
        return Path(_tiny_paths(ctx, manifest).motion_adapter)
    repo = manifest.backend.motion_adapter_repo
    if not repo:
        raise ModelError(f"{manifest.key}: the manifest names no motion adapter")
    return resolve_repo(ctx.settings, manifest, repo, "config.json")


def _lora_files(ctx: EngineContext, manifest: Manifest) -> dict[str, Path]:
    if ctx.tiny:
        paths = _tiny_paths(ctx, manifest)
        return {
            lora.name: paths.lora(lora.repo or lora.name, lora.file)
            for lora in manifest.backend.loras
        }
    return {
        lora.name: resolve_file(ctx.settings, manifest, lora) for lora in manifest.backend.loras
    }


def _adapter_name(lora_value: str) -> str:
    # peft adapter names become module-dict keys: keep them plain ("FILE:169584" -> file_169584).
    return "".join(c if c.isalnum() else "_" for c in lora_value).lower()


# ---------------------------------------------------------------- loading


def sd15_part(ctx: EngineContext, weights: ResolvedWeights) -> Sd15Model:
    """The SD1.5 part for these files, under the key `engine.sd15` uses for the same files."""
    estimate = sum(p.stat().st_size for p in weights.files if p.is_file())
    return ctx.part(
        f"sd15:{weights.identity}", lambda: load_sd15(weights, ctx.device, ctx.dtype), estimate
    )


def _load_motion(
    base: Sd15Model,
    adapter_dir: Path,
    loras: dict[str, Path],
    lora_weights: dict[str, float],
    device: torch.device,
    dtype: torch.dtype,
) -> MotionModel:
    from diffusers import AnimateDiffPipeline, MotionAdapter, UNetMotionModel

    started = time.monotonic()
    try:
        adapter = MotionAdapter.from_pretrained(
            str(adapter_dir), dtype=dtype, local_files_only=True
        )
        unet = UNetMotionModel.from_unet2d(base.pipe.unet, adapter)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load the motion adapter from {adapter_dir}: {exc}") from exc
    p = base.pipe
    pipe = AnimateDiffPipeline(
        vae=p.vae,
        text_encoder=p.text_encoder,
        tokenizer=p.tokenizer,
        unet=unet,
        motion_adapter=adapter,
        scheduler=p.scheduler,
        feature_extractor=None,
        image_encoder=None,
    )
    if unet.dtype != dtype:
        unet.to(dtype=dtype)
    unet.to(device)
    pipe.set_progress_bar_config(disable=True)
    return MotionModel(
        pipe=pipe,
        base=base,
        adapter_dir=adapter_dir,
        max_frames=int(adapter.config.motion_max_seq_length),
        lora_files=dict(loras),
        lora_weights=dict(lora_weights),
        scheduler_config=dict(base.scheduler_config),
        load_seconds=time.monotonic() - started,
    )


def model_for(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> MotionModel:
    """The motion pipeline for the request's base, from the shared parts pool."""
    choice = choose_base(ctx, manifest, params)
    weights = choice.weights
    if weights.tiny:
        logger.warning(
            "OFFLINE MODE: tiny stand-in weights for %s (base %s from %s); "
            "outputs are not the real model's",
            manifest.key,
            choice.label,
            weights.checkpoint or weights.base_dir,
        )
    base = sd15_part(ctx, weights)
    adapter_dir = _adapter_dir(ctx, manifest)
    loras = _lora_files(ctx, manifest)
    lora_weights = {lora.name: lora.weight for lora in manifest.backend.loras}
    adapter_file = adapter_dir / "diffusion_pytorch_model.safetensors"
    key = "|".join(
        [
            f"animatediff:{weights.identity}",
            f"adapter={stamp(adapter_file if adapter_file.is_file() else adapter_dir)}",
            *(f"{value}={stamp(path)}" for value, path in sorted(loras.items())),
        ]
    )
    estimate = 2 * sum(p.stat().st_size for p in weights.files if p.is_file())
    return ctx.part(
        key,
        lambda: _load_motion(base, adapter_dir, loras, lora_weights, ctx.device, ctx.dtype),
        estimate,
    )


def describe(model: MotionModel, base_label: str) -> dict[str, Any]:
    w = model.base.weights
    return {
        "family": "animatediff",
        "tiny": w.tiny,
        "base_model": base_label,
        "loaded_from": str(w.checkpoint or w.base_dir),
        "motion_adapter": str(model.adapter_dir),
        "max_frames": model.max_frames,
        "motion_loras_loaded": sorted(model.adapters),
        "device": str(model.base.device),
        "dtype": str(model.base.dtype).removeprefix("torch."),
    }


def prepare(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> dict[str, Any]:
    model = model_for(ctx, manifest, params)
    label = choose_base(ctx, manifest, params).label
    info = {**describe(model, label), "load_seconds": round(model.load_seconds, 3)}
    lora = params.get("loraType")
    if isinstance(lora, str) and lora:
        started = time.monotonic()
        if model.use_lora(lora):
            info["motion_lora_load_seconds"] = round(time.monotonic() - started, 3)
        info["motion_loras_loaded"] = sorted(model.adapters)
    return info


# ---------------------------------------------------------------- generation


@dataclass
class _Request:
    prompt: str
    negative_prompt: str
    lora: str
    frames: int
    steps: int
    seed: int
    width: int
    height: int

    @classmethod
    def from_params(cls, params: dict[str, Any], model: MotionModel) -> _Request:
        req = cls(
            prompt=_param(params, "prompt", str),
            negative_prompt=_param(params, "negativePrompt", str),
            lora=_param(params, "loraType", str),
            frames=_param(params, "frameNumber", int),
            steps=_param(params, "steps", int),
            seed=_param(params, "seed", int),
            width=_param(params, "width", int),
            height=_param(params, "height", int),
        )
        if not 1 <= req.frames <= model.max_frames:
            raise ModelError(
                f"frameNumber must be between 1 and {model.max_frames} for this motion adapter "
                f"(its positional embeddings cover {model.max_frames} frames), got {req.frames}"
            )
        if req.steps < 1:
            raise ModelError(f"steps must be at least 1, got {req.steps}")
        for name, value in (("width", req.width), ("height", req.height)):
            if value < 8 or value % 8:
                raise ModelError(f"{name} must be a positive multiple of 8, got {value}")
        if not 0 <= req.seed <= MAX_SEED:
            raise ModelError(f"seed must be between 0 and {MAX_SEED}")
        if req.lora not in model.lora_files:
            known = ", ".join(model.lora_files) or "none"
            raise ModelError(f"loraType: unknown motion LoRA {req.lora!r}; expected one of {known}")
        return req


def generate(
    ctx: EngineContext,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    label = choose_base(ctx, manifest, params).label
    model = model_for(ctx, manifest, params)
    return generate_video(model, label, manifest, params, on_step, should_stop)


def make_scheduler(config: dict[str, Any]) -> Any:
    """AnimateDiff's own sampling setup (guoyww's inference config): DDIM, linear betas."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(
        config,
        beta_schedule="linear",
        clip_sample=False,
        timestep_spacing="linspace",
        steps_offset=1,
    )


def generate_video(
    model: MotionModel,
    base_label: str,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    """The steps: request, motion LoRA, prompts, denoise, decode, MP4 (engine/steps.py)."""
    req = _Request.from_params(params, model)
    started = time.monotonic()
    model.pipe.scheduler = make_scheduler(model.scheduler_config)
    lora_loaded_now = model.use_lora(req.lora)
    embeds = encode_request_prompts(model, req)
    latents = denoise_request(model, req, embeds, on_step, should_stop)
    frames = decode_frames(model, req, latents)
    if should_stop():
        raise GenerationInterrupted("generation was stopped before encoding")
    video = GeneratedFile("0.mp4", encode_mp4(frames, FPS), "video/mp4")
    info = {
        **describe(model, base_label),
        "seed": req.seed,
        "loraType": req.lora,
        "motion_lora": model.adapters[req.lora],
        "motion_lora_loaded_now": lora_loaded_now,
        "scheduler": "DDIMScheduler",
        "guidance_scale": GUIDANCE_SCALE,
        "steps": req.steps,
        "frameNumber": req.frames,
        "fps": FPS,
        "width": req.width,
        "height": req.height,
        "prompt_chunks": embeds.chunks,
    }
    return result([video], info, started)


def encode_request_prompts(model: MotionModel, req: _Request) -> Any:
    """The prompt and negative prompt through the base's CLIP (A1111 syntax, 77-token chunks)."""
    pipe = model.pipe
    try:
        return encode_prompts(
            pipe.tokenizer, pipe.text_encoder, req.prompt, req.negative_prompt, 1, {}
        )
    except ValueError as exc:  # PromptError: a prompt AUTOMATIC1111 itself cannot run
        raise ModelError(f"prompt: {exc}") from exc


def denoise_request(
    model: MotionModel,
    req: _Request,
    embeds: Any,
    on_step: StepCallback,
    should_stop: StopCheck,
) -> torch.Tensor:
    """All frames denoised together from one seed, with progress, previews and kill."""
    pipe = model.pipe
    generator = torch.Generator("cpu").manual_seed(req.seed)
    step_end = PipelineSteps(on_step, should_stop, ANIMATEDIFF_PREVIEW)
    dtype = model.base.dtype
    with _model_errors(req):
        latents = pipe(
            prompt_embeds=embeds.positive.to(dtype),
            negative_prompt_embeds=embeds.negative.to(dtype),
            num_frames=req.frames,
            num_inference_steps=req.steps,
            guidance_scale=GUIDANCE_SCALE,
            width=req.width,
            height=req.height,
            generator=generator,
            output_type="latent",
            callback_on_step_end=step_end,
        ).frames
    step_end.raise_if_stopped()
    check_finite(latents, "after denoising")
    return latents


def decode_frames(model: MotionModel, req: _Request, latents: torch.Tensor) -> np.ndarray:
    """The frames as [F, H, W, 3] floats, decoded DECODE_CHUNK frames at a time."""
    pipe = model.pipe
    with _model_errors(req), torch.no_grad():
        video = pipe.decode_latents(latents, decode_chunk_size=DECODE_CHUNK)
        return pipe.video_processor.postprocess_video(video=video, output_type="np")[0]


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 yuv420p MP4 (browsers' baseline), moov atom first so playback starts at once.

    `frames` is [F, H, W, 3] floats in 0..1; H and W are multiples of 8, as H.264 with 4:2:0
    chroma needs even sizes.
    """
    import imageio_ffmpeg

    count, height, width = frames.shape[:3]
    pixels = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
    fd, name = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = imageio_ffmpeg.write_frames(
            name,
            (width, height),
            fps=fps,
            codec="libx264",
            pix_fmt_in="rgb24",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            quality=None,
            output_params=["-crf", "18", "-movflags", "+faststart"],
            ffmpeg_log_level="error",
        )
        writer.send(None)  # start the encoder
        for i in range(count):
            writer.send(np.ascontiguousarray(pixels[i]))
        writer.close()
        return Path(name).read_bytes()
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"could not encode the video: {exc}") from exc
    finally:
        Path(name).unlink(missing_ok=True)


def _model_errors(req: _Request) -> AbstractContextManager[None]:
    job = f"{req.frames} frames at {req.width}x{req.height}"
    return model_errors("AnimateDiff", job, "frameNumber, width or height")
