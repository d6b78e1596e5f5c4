"""FLUX.1-dev family: one resident base shared by every FLUX tool, one LoRA adapter per tool.

The base (transformer, CLIP-L, T5, VAE) is one part of the pool, keyed by its folder
(`flux-base:<stamp>`), loaded with `FluxPipeline.from_pretrained`. Each tool's LoRA is loaded
onto it once as a named adapter (`load_lora_weights(path, adapter_name=<lora name>)`) and
stays loaded; a request activates only its tool's adapters with `set_adapters`, so going from
one FLUX tool to another swaps adapters and never loads the base again.

Prompts: a JSON object with "T5" and/or "CLIP-L" keys sends each text to its own encoder
(diffusers' `prompt` feeds CLIP-L, `prompt_2` feeds T5); with only one of the keys, the other
encoder gets the same text; anything else is a plain prompt that goes to both. `scale` is
FLUX.1-dev's distilled guidance (the guidance embedding), not classifier-free guidance. A
`negativePrompt` turns on true CFG only when the manifest sets `backend.true_cfg`; otherwise it
is ignored and the task's debug output says so.
"""

from __future__ import annotations

import contextlib
import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from toonforge.catalog.manifest import Lora, Manifest
from toonforge.engine.common import (
    LOAD_ERRORS,
    PipelineSteps,
    check_finite,
    check_image_request,
    model_errors,
)
from toonforge.engine.common import param as _param
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import (
    GeneratedFile,
    GenerationResult,
    ModelError,
    StepCallback,
    StopCheck,
    WeightsMissing,
)
from toonforge.engine.image_files import output_format
from toonforge.engine.placement import current_placement, place_pipeline
from toonforge.engine.pool import module_bytes
from toonforge.engine.preview import flux_preview
from toonforge.engine.rowwise import rowwise_flux
from toonforge.engine.steps import decode_each, image_files, result, sample_seeds
from toonforge.engine.weights import resolve_file, resolve_repo, stamp
from toonforge.prompts import PromptError
from toonforge.prompts.encoders import EncoderPrompts, split_encoder_prompt
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

# FLUX.1-dev was trained with 512 T5 tokens (schnell: 256).
MAX_SEQUENCE_LENGTH = 512
# Width and height must be multiples of 16: the VAE downsamples by 8 and the transformer
# packs latents in 2x2 patches (FluxPipeline silently resizes other sizes).
SIZE_MULTIPLE = 16
# The base folder's weight-bearing components (the hub repo also holds a 23 GB single file
# that from_pretrained does not read; it must not count in the memory estimate).
_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "vae")


@dataclass(frozen=True)
class FluxWeights:
    tiny: bool
    base_dir: Path  # diffusers folder in FLUX.1-dev's layout
    loras: tuple[tuple[Lora, Path], ...]
    # A quantized transformer replacing the base folder's (the memory plan's GGUF storage).
    transformer_gguf: Path | None = None

    @property
    def base_key(self) -> str:
        gguf = f"+{stamp(self.transformer_gguf)}" if self.transformer_gguf else ""
        return f"flux-base:{stamp(self.base_dir)}{gguf}"

    def estimate_bytes(self) -> int:
        total = 0
        for name in _COMPONENTS:
            folder = self.base_dir / name
            if folder.is_dir():
                total += sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
        return total


@dataclass
class FluxModel:
    """The shared base and the LoRA adapters loaded onto it so far."""

    pipe: Any  # FluxPipeline
    base_dir: Path
    tiny: bool
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    # adapter name -> stamp of the file it was loaded from
    adapters: dict[str, str] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        p = self.pipe
        return module_bytes(p.transformer, p.vae, p.text_encoder, p.text_encoder_2)

    def describe(self) -> dict[str, Any]:
        return {
            "family": "flux",
            "tiny": self.tiny,
            "loaded_from": str(self.base_dir),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
        }


def resolve_flux(settings: Settings, manifest: Manifest) -> FluxWeights:
    """The base folder and the tool's LoRA files: tiny stand-ins, or real files on this machine.

    Every missing file is named in one WeightsMissing, each with how to provide it.
    """
    backend = manifest.backend
    if backend.family != "flux":
        raise ModelError(f"resolve_flux is for flux tools, not {backend.family}")
    if settings.tiny:
        from toonforge.engine.tiny.flux import ensure_tiny_flux

        paths = ensure_tiny_flux(settings.tiny_models_dir)
        loras = []
        for lora in backend.loras:
            name = Path(lora.file).name
            if name not in paths.loras:
                raise ModelError(f"{manifest.key}: no tiny stand-in for LoRA {lora.file!r}")
            loras.append((lora, paths.loras[name]))
        return FluxWeights(True, paths.base_dir, tuple(loras), _tiny_gguf(paths.base_dir))
    if not backend.base_repo:
        raise ModelError(f"{manifest.key}: backend.base_repo is required for flux tools")
    missing: list[str] = []
    base_dir: Path | None = None
    try:
        base_dir = resolve_repo(settings, manifest, backend.base_repo, "model_index.json")
    except WeightsMissing as exc:
        missing.append(str(exc))
    resolved = []
    for lora in backend.loras:
        try:
            resolved.append((lora, resolve_file(settings, manifest, lora)))
        except WeightsMissing as exc:
            missing.append(str(exc))
    gguf: Path | None = None
    quantization = current_placement().quantization
    if quantization.startswith("gguf-"):
        choice = backend.gguf.get(quantization.removeprefix("gguf-"))
        if choice is None:
            missing.append(
                f"{manifest.key}: the memory plan stores the transformer as {quantization} but "
                f"backend.gguf names no such file (it names: {sorted(backend.gguf) or 'none'})"
            )
        else:
            try:
                gguf = resolve_file(settings, manifest, choice)
            except WeightsMissing as exc:
                missing.append(str(exc))
    if missing or base_dir is None:
        raise WeightsMissing(" | ".join(missing))
    return FluxWeights(False, base_dir, tuple(resolved), gguf)


def _tiny_gguf(base_dir: Path) -> Path | None:
    quantization = current_placement().quantization
    if not quantization.startswith("gguf-"):
        return None
    from toonforge.engine.gguf_weights import ensure_tiny_gguf

    return ensure_tiny_gguf(base_dir, quantization)


def load_flux(
    base_dir: Path,
    tiny: bool,
    device: torch.device,
    dtype: torch.dtype,
    transformer_gguf: Path | None = None,
) -> FluxModel:
    from diffusers import FluxPipeline

    started = time.monotonic()
    extra: dict[str, Any] = {}
    if transformer_gguf is not None:
        from toonforge.engine.gguf_weights import load_gguf_transformer

        extra["transformer"] = load_gguf_transformer(transformer_gguf, base_dir, dtype)
    elif current_placement().quantization == "nf4":
        extra["transformer"] = _load_nf4_transformer(base_dir, dtype)
    try:
        pipe = FluxPipeline.from_pretrained(
            str(base_dir), dtype=dtype, local_files_only=True, **extra
        )
    except LOAD_ERRORS as exc:
        raise ModelError(f"could not load the FLUX base from {base_dir}: {exc}") from exc
    place_pipeline(pipe, device)  # the memory plan: on the device, or offloaded
    pipe.set_progress_bar_config(disable=True)
    return FluxModel(
        pipe=pipe,
        base_dir=base_dir,
        tiny=tiny,
        device=device,
        dtype=dtype,
        load_seconds=time.monotonic() - started,
    )


def _load_nf4_transformer(base_dir: Path, dtype: torch.dtype) -> Any:
    """The transformer quantized to 4-bit NormalFloat by bitsandbytes while it loads."""
    from diffusers import BitsAndBytesConfig, FluxTransformer2DModel

    config = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
    )
    try:
        return FluxTransformer2DModel.from_pretrained(
            str(base_dir),
            subfolder="transformer",
            quantization_config=config,
            torch_dtype=dtype,
            local_files_only=True,
        )
    except (*LOAD_ERRORS, ImportError) as exc:
        raise ModelError(f"could not load the FLUX transformer in NF4: {exc}") from exc


def ensure_adapters(model: FluxModel, loras: tuple[tuple[Lora, Path], ...]) -> dict[str, bool]:
    """Load each LoRA onto the base once; returns name -> loaded now (False: already resident).

    A LoRA file replaced on disk (other size or mtime) is unloaded and loaded again.
    """
    out: dict[str, bool] = {}
    for lora, path in loras:
        current = stamp(path)
        if model.adapters.get(lora.name) == current:
            out[lora.name] = False
            continue
        if lora.name in model.adapters:
            model.pipe.delete_adapters([lora.name])
            del model.adapters[lora.name]
        started = time.monotonic()
        try:
            model.pipe.load_lora_weights(str(path), adapter_name=lora.name)
        except (*LOAD_ERRORS, AssertionError) as exc:
            # A failed load may leave a half-registered adapter behind: drop it.
            with contextlib.suppress(Exception):  # nothing was registered
                model.pipe.delete_adapters([lora.name])
            raise ModelError(f"could not load LoRA {lora.name!r} from {path}: {exc}") from exc
        model.adapters[lora.name] = current
        seconds = time.monotonic() - started
        logger.info("LoRA %s loaded onto the FLUX base in %.2fs", lora.name, seconds)
        out[lora.name] = True
    return out


def _sibling_loras(
    ctx: EngineContext, manifest: Manifest, weights: FluxWeights
) -> tuple[tuple[Lora, Path], ...]:
    """LoRAs of the other catalog tools that run on the same base files. A tool whose LoRA is
    not on this machine is skipped (its own task reports what is missing)."""
    from toonforge.catalog import load_catalog

    out: list[tuple[Lora, Path]] = []
    for other in load_catalog(ctx.settings.extra_tools_dirs):
        if other.key == manifest.key or other.backend.family != "flux":
            continue
        try:
            theirs = resolve_flux(ctx.settings, other)
        except ModelError:
            continue
        if theirs.base_key == weights.base_key:
            out += [item for item in theirs.loras if item not in out]
    return tuple(out)


def _weights_and_model(
    ctx: EngineContext, manifest: Manifest
) -> tuple[FluxWeights, FluxModel, dict[str, bool]]:
    weights = resolve_flux(ctx.settings, manifest)
    if weights.tiny:
        logger.warning(
            "OFFLINE MODE: tiny stand-in weights for %s (random weights from %s); "
            "outputs are not the real model's",
            manifest.key,
            weights.base_dir,
        )
    key = weights.base_key
    model = ctx.part(
        key,
        lambda: load_flux(
            weights.base_dir, weights.tiny, ctx.device, ctx.dtype, weights.transformer_gguf
        ),
        weights.estimate_bytes(),
    )
    if not model.adapters:
        # A base just loaded: also load the adapters of the other tools on this base, so
        # that going from one tool to another is only ever an adapter switch.
        siblings = ensure_adapters(model, _sibling_loras(ctx, manifest, weights))
        if siblings:
            logger.info("preloaded the LoRAs of tools on the same base: %s", sorted(siblings))
    loaded = ensure_adapters(model, weights.loras)
    for lora, path in weights.loras:
        # Adapters live on the base part; record them beside it, loaded now or resident.
        ctx.events.append(
            {
                "part": f"flux-lora:{lora.name}",
                "on": key,
                "file": str(path),
                "reused": not loaded[lora.name],
            }
        )
    return weights, model, loaded


def model_for(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> FluxModel:
    """The shared FLUX base with this tool's LoRA adapters loaded (not yet activated)."""
    return _weights_and_model(ctx, manifest)[1]


def prepare(ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> dict[str, Any]:
    _, model, loaded = _weights_and_model(ctx, manifest)
    return {
        **model.describe(),
        "load_seconds": round(model.load_seconds, 3),
        "lora": {
            "active": [lora.name for lora in manifest.backend.loras],
            "loaded_now": [name for name, now in loaded.items() if now],
            "already_resident": [name for name, now in loaded.items() if not now],
            "resident": sorted(model.adapters),
        },
    }


# -- request ------------------------------------------------------------------------------


def split_prompt(name: str, text: str) -> EncoderPrompts:
    """`toonforge.prompts.encoders.split_prompt`, its error as a model error."""
    try:
        return split_encoder_prompt(name, text)
    except PromptError as exc:
        raise ModelError(str(exc)) from exc


@dataclass
class _Request:
    prompt: str
    prompts: EncoderPrompts
    negative_prompt: str  # as sent ("" when absent)
    samples: int
    steps: int
    scale: float
    seed: int
    width: int
    height: int
    output: tuple[str, int] = ("png", 90)  # outputFormat, outputQuality

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Request:
        prompt = _param(params, "prompt", str)
        # Not an input of the FLUX pages, but the Toon-Renders examples send it: kept as sent.
        negative = params.get("negativePrompt")
        if negative is None:
            negative = ""
        if not isinstance(negative, str):
            raise ModelError(f"negativePrompt: expected a string, got {negative!r}")
        req = cls(
            prompt=prompt,
            prompts=split_prompt("prompt", prompt),
            negative_prompt=negative,
            samples=_param(params, "samples", int),
            steps=_param(params, "steps", int),
            scale=_param(params, "scale", float),
            seed=_param(params, "seed", int),
            width=_param(params, "width", int),
            height=_param(params, "height", int),
            output=output_format(params),
        )
        check_image_request(req.samples, req.steps, req.width, req.height, req.seed, SIZE_MULTIPLE)
        return req


def activate(model: FluxModel, loras: list[Lora]) -> list[dict[str, Any]]:
    """Make exactly this tool's adapters active; the others stay loaded but inactive."""
    pipe = model.pipe
    if not loras:
        if model.adapters:
            pipe.disable_lora()
        return []
    pipe.enable_lora()
    names = [lora.name for lora in loras]
    pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
    return [{"name": lora.name, "weight": lora.weight} for lora in loras]


def generate(
    ctx: EngineContext,
    manifest: Manifest,
    params: dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    req = _Request.from_params(params)  # before loading: a bad input costs no load
    _, model, _ = _weights_and_model(ctx, manifest)
    return generate_flux(model, manifest, req, on_step, should_stop)


def generate_flux(
    model: FluxModel,
    manifest: Manifest,
    req: _Request | dict[str, Any],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> GenerationResult:
    """The steps: request, adapters, guidance, seeds, denoise, decode, files
    (engine/steps.py)."""
    if not isinstance(req, _Request):
        req = _Request.from_params(req)
    started = time.monotonic()
    active = activate(model, manifest.backend.loras)
    guidance = _Guidance.of(manifest, req)
    seeds, generators = sample_seeds(req.seed, req.samples)
    latents = denoise_request(model, req, guidance, generators, on_step, should_stop)
    with _model_errors(req):
        images = decode_each(lambda z: _decode(model.pipe, z, req.height, req.width), latents)
    files = output_files(req, images, seeds, manifest, model, active, guidance)
    return result(files, run_info(req, model, seeds, active, guidance), started)


@dataclass
class _Guidance:
    """How the request is guided: FLUX.1-dev's distilled guidance, plus true CFG with the
    negative prompt when the manifest enables it (otherwise a negative prompt is noted and
    ignored)."""

    true_cfg: bool = False
    negative: EncoderPrompts | None = None
    pipe_args: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, manifest: Manifest, req: _Request) -> _Guidance:
        backend = manifest.backend
        if not req.negative_prompt.strip():
            return cls()
        if not backend.true_cfg:
            return cls(
                notes=[
                    "negativePrompt ignored: FLUX.1-dev is guidance-distilled and this tool's "
                    "manifest does not enable true CFG (backend.true_cfg is false)"
                ]
            )
        negative = split_prompt("negativePrompt", req.negative_prompt)
        args = {
            "negative_prompt": negative.clip,
            "negative_prompt_2": negative.t5,
            "true_cfg_scale": backend.true_cfg_scale,
        }
        return cls(True, negative, args)


def denoise_request(
    model: FluxModel,
    req: _Request,
    guidance: _Guidance,
    generators: list[torch.Generator],
    on_step: StepCallback,
    should_stop: StopCheck,
) -> torch.Tensor:
    """The pipeline's own loop up to latents, with progress, previews and kill between steps."""
    pipe = model.pipe
    # Sample i the same bytes as its seed run alone (see toonforge.engine.rowwise).
    rowwise_flux(pipe.transformer)
    preview = flux_preview(req.height, req.width, pipe.vae_scale_factor)
    step_end = PipelineSteps(on_step, should_stop, preview)
    with _model_errors(req):
        latents = pipe(
            prompt=req.prompts.clip,
            prompt_2=req.prompts.t5,
            num_images_per_prompt=req.samples,
            num_inference_steps=req.steps,
            guidance_scale=req.scale,
            width=req.width,
            height=req.height,
            generator=generators,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            output_type="latent",
            callback_on_step_end=step_end,
            **guidance.pipe_args,
        ).images
    step_end.raise_if_stopped()
    check_finite(latents, "after denoising")
    return latents


def output_files(
    req: _Request,
    images: list[Any],
    seeds: list[int],
    manifest: Manifest,
    model: FluxModel,
    active: list[dict[str, Any]],
    guidance: _Guidance,
) -> list[GeneratedFile]:
    """One image per sample with its parameters (AUTOMATIC1111/Forge's FLUX notation)."""
    backend = manifest.backend
    lora_text = ", ".join(f"{a['name']}:{a['weight']:g}" for a in active)
    true_cfg = guidance.true_cfg

    def text_for(seed: int) -> dict[str, Any]:
        parameters = "\n".join(
            [req.prompt]
            + ([f"Negative prompt: {req.negative_prompt}"] if true_cfg else [])
            + [
                f"Steps: {req.steps}, Sampler: Euler, Schedule type: Simple, CFG scale: "
                f"{backend.true_cfg_scale if true_cfg else 1:g}, Distilled CFG Scale: "
                f"{req.scale:g}, Seed: {seed}, Size: {req.width}x{req.height}, "
                f"Model: {manifest.key}, Lora: {lora_text}"
            ]
        )
        return {
            "prompt": req.prompt,
            "prompt_t5": req.prompts.t5,
            "prompt_clip_l": req.prompts.clip,
            "negative_prompt": req.negative_prompt if true_cfg else None,
            "seed": seed,
            "steps": req.steps,
            "guidance": req.scale,
            "model": manifest.key,
            "loras": lora_text,
            "parameters": parameters,
            "toonforge-tiny": "true" if model.tiny else None,
        }

    return image_files(images, seeds, text_for, req.output)


def run_info(
    req: _Request,
    model: FluxModel,
    seeds: list[int],
    active: list[dict[str, Any]],
    guidance: _Guidance,
) -> dict[str, Any]:
    """What the task's debugoutput records of the run."""
    info: dict[str, Any] = {
        **model.describe(),
        "seed": req.seed,
        "seeds": seeds,
        "steps": req.steps,
        "scale": req.scale,
        "guidance": "distilled (guidance embedding)",
        "width": req.width,
        "height": req.height,
        "samples": req.samples,
        "encoders": req.prompts.describe(),
        "active_adapters": active,
        "resident_adapters": sorted(model.adapters),
        "true_cfg": (
            {
                "scale": guidance.pipe_args["true_cfg_scale"],
                "negative": guidance.negative.describe(),
            }
            if guidance.true_cfg and guidance.negative is not None
            else False
        ),
    }
    if guidance.notes:
        info["notes"] = guidance.notes
    return info


def _model_errors(req: _Request) -> AbstractContextManager[None]:
    job = f"{req.samples} x {req.width}x{req.height}"
    return model_errors("FLUX", job, "samples, width or height")


def _decode(pipe: Any, packed: torch.Tensor, height: int, width: int) -> Any:
    """One sample at a time, as FluxPipeline decodes (unpack, unscale, unshift)."""
    vae = pipe.vae
    latents = pipe._unpack_latents(packed, height, width, pipe.vae_scale_factor)
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    with torch.no_grad():
        pixels = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]
