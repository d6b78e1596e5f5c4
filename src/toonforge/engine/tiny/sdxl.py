"""Tiny SDXL stand-ins (base, refiner, LoRAs), saved the way the real weights are published.

- base: a diffusers folder laid out like `stabilityai/stable-diffusion-xl-base-1.0`
  (model_index.json, unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2,
  scheduler), same classes, tiny widths, random weights;
- refiner: a folder like `stabilityai/stable-diffusion-xl-refiner-1.0` (no first text encoder,
  `requires_aesthetics_score`, its own copy of text_encoder_2 and the VAE, as the hub repo has);
- LoRAs: `.safetensors` files with the same low-rank weights in two namings, Kohya/A1111
  (`lora_unet_input_blocks_7_1_..._attn1_to_q.lora_down.weight`, `lora_te1_...`, `lora_te2_...`,
  `.alpha`; the SGM block names sd-scripts writes for SDXL, as Civitai LoRAs are published) and
  diffusers/peft (`unet.down_blocks...to_q.lora_A.weight`, `text_encoder....`). Both encode the
  same update, so loading either gives the same images.

Sizes follow TINY_MODELS.md: the base UNet conditions on 32 + 32 = 64-wide token embeddings
and a pooled vector of 32 plus six 8-wide time ids (80); the refiner's on 32 and 32 + five (72).
The VAE keeps the real 8x downsampling so page sizes run with the real latent shapes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save

from toonforge.engine.tiny._cache import build_once, write_file_atomic
from toonforge.engine.tiny.tokenizer import special_token_ids, write_clip_tokenizer

VERSION = "v2"
SEED = 4321
TEXT_DIM = 32  # both encoders; the base's cross-attention is their concatenation (64)
TEXT_LAYERS = 4
TIME_DIM = 8
UNET_OUT_GAIN = 3.0  # see tiny/sd15.py: makes a random noise predictor unit-variance
LORA_RANK = 4
LORA_ALPHA = 2.0  # not equal to the rank, so a loader that ignores `.alpha` gives other images
LAYERS_PER_BLOCK = 2  # SDXL's; the SGM block numbering in Kohya names depends on it
BASE_BLOCKS = (16, 32, 32)
# Attention at the lowest resolution only (real SDXL has it at the two lower levels): at the
# pages' 1024x1024 (128x128 latents) attention at the 64x64 level made a step 7x slower.
BASE_DOWN = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
BASE_UP = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")

# Scheduler config of both SDXL 1.0 repositories (scheduler/scheduler_config.json).
SDXL_SCHEDULER = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

# LoRA file namings. Manifests' LoRAs get Kohya stand-ins, as Civitai publishes SDXL LoRAs.
KOHYA = "kohya"
DIFFUSERS = "diffusers"


@dataclass(frozen=True)
class SdxlPaths:
    base_dir: Path
    refiner_dir: Path
    lora_dir: Path
    root: Path


def ensure_tiny_sdxl(root: Path) -> SdxlPaths:
    """Build base and refiner under `root` once (atomically) and say where they are."""
    folder = build_once(root / f"sdxl-{VERSION}", _build)
    return SdxlPaths(
        base_dir=folder / "stable-diffusion-xl-base-1.0",
        refiner_dir=folder / "stable-diffusion-xl-refiner-1.0",
        lora_dir=folder / "loras",
        root=folder,
    )


def ensure_tiny_lora(paths: SdxlPaths, file_name: str, fmt: str = KOHYA) -> Path:
    """The stand-in LoRA file `file_name` in naming `fmt` (written atomically on first use;
    its weights depend only on the name, so racing writers write the same bytes)."""
    path = paths.lora_dir / fmt / file_name
    if not path.is_file():
        write_file_atomic(path, tiny_lora_bytes(paths.base_dir, Path(file_name).stem, fmt))
    return path


# --- models ----------------------------------------------------------------------------------


def _text_config(ids: dict[str, int], projection: bool) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=TEXT_LAYERS,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=TEXT_DIM,
        hidden_act="gelu" if projection else "quick_gelu",
        **ids,
    )


def _unet(cross_dim: int, class_dim: int) -> Any:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=128,
        in_channels=4,
        out_channels=4,
        layers_per_block=LAYERS_PER_BLOCK,
        block_out_channels=BASE_BLOCKS,
        down_block_types=BASE_DOWN,
        up_block_types=BASE_UP,
        cross_attention_dim=cross_dim,
        attention_head_dim=8,
        norm_num_groups=16,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=class_dim,
    )
    with torch.no_grad():
        unet.conv_out.weight.mul_(UNET_OUT_GAIN)
        unet.conv_out.bias.mul_(UNET_OUT_GAIN)
    return unet


def build_tiny_sdxl_models(tok1: Path, tok2: Path) -> dict[str, Any]:
    """Fresh tiny base and refiner parts (deterministic)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    ids1, ids2 = special_token_ids(tok1), special_token_ids(tok2)
    ids2["pad_token_id"] = 0  # SDXL's second tokenizer pads with "!" (id 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        # Pooled text (32) + six time ids (original size, crop, target size) x 8.
        unet = _unet(2 * TEXT_DIM, TEXT_DIM + 6 * TIME_DIM)
        torch.manual_seed(SEED + 1)
        # Refiner: second encoder only (32); pooled 32 + five time ids (with aesthetic score).
        refiner_unet = _unet(TEXT_DIM, TEXT_DIM + 5 * TIME_DIM)
        torch.manual_seed(SEED + 2)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        )
        torch.manual_seed(SEED + 3)
        text_encoder = CLIPTextModel(_text_config(ids1, projection=False))
        torch.manual_seed(SEED + 4)
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(ids2, projection=True))
    for model in (unet, refiner_unet, vae, text_encoder, text_encoder_2):
        model.eval()
    return {
        "unet": unet,
        "refiner_unet": refiner_unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": CLIPTokenizer.from_pretrained(tok1, model_max_length=77),
        "tokenizer_2": CLIPTokenizer.from_pretrained(tok2, model_max_length=77, pad_token="!"),
        "scheduler": EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
    }


def _build(folder: Path) -> None:
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    tok1, tok2 = folder / "_tok1", folder / "_tok2"
    write_clip_tokenizer(tok1)
    write_clip_tokenizer(tok2)
    _second_tokenizer_config(tok2)
    parts = build_tiny_sdxl_models(tok1, tok2)
    refiner_unet = parts.pop("refiner_unet")
    base = StableDiffusionXLPipeline(**parts, force_zeros_for_empty_prompt=True)
    base_dir = folder / "stable-diffusion-xl-base-1.0"
    base.save_pretrained(base_dir, safe_serialization=True)
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=parts["vae"],
        text_encoder=None,
        text_encoder_2=parts["text_encoder_2"],
        tokenizer=None,
        tokenizer_2=parts["tokenizer_2"],
        unet=refiner_unet,
        scheduler=parts["scheduler"],
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )
    refiner.save_pretrained(folder / "stable-diffusion-xl-refiner-1.0", safe_serialization=True)
    # The hub repos ship vocab.json + merges.txt tokenizers: mirror that.
    for repo, name, src in (
        (base_dir, "tokenizer", tok1),
        (base_dir, "tokenizer_2", tok2),
        (folder / "stable-diffusion-xl-refiner-1.0", "tokenizer_2", tok2),
    ):
        shutil.rmtree(repo / name)
        shutil.copytree(src, repo / name)
    shutil.rmtree(tok1)
    shutil.rmtree(tok2)
    for fmt in (KOHYA, DIFFUSERS):
        (folder / "loras" / fmt).mkdir(parents=True, exist_ok=True)


def _second_tokenizer_config(folder: Path) -> None:
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["pad_token"] = "!"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    special_path = folder / "special_tokens_map.json"
    special = json.loads(special_path.read_text())
    special["pad_token"] = "!"
    special_path.write_text(json.dumps(special, indent=2))


# --- LoRA files ------------------------------------------------------------------------------


def _sgm_name(module: str) -> str | None:
    """diffusers UNet module path -> SGM (LDM) path, for the attention layers a LoRA trains."""
    parts = module.split(".")
    lpb = LAYERS_PER_BLOCK
    if parts[0] == "down_blocks" and parts[2] == "attentions":
        block, layer = int(parts[1]), int(parts[3])
        return ".".join(["input_blocks", str(1 + block * (lpb + 1) + layer), "1", *parts[4:]])
    if parts[0] == "mid_block" and parts[1] == "attentions":
        return ".".join(["middle_block", "1", *parts[3:]])
    if parts[0] == "up_blocks" and parts[2] == "attentions":
        block, layer = int(parts[1]), int(parts[3])
        return ".".join(["output_blocks", str(block * (lpb + 1) + layer), "1", *parts[4:]])
    return None


def _targets(base_dir: Path) -> list[tuple[str, str, int, int]]:
    """(component, module path, in, out) of every layer the stand-in LoRA adapts: the UNet's
    attention projections and both encoders' self-attention, as Kohya's defaults train."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    out: list[tuple[str, str, int, int]] = []
    unet = UNet2DConditionModel.from_pretrained(base_dir / "unet")
    for name, mod in unet.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        attention = leaf in ("to_q", "to_k", "to_v") or name.endswith("to_out.0")
        if "transformer_blocks" in name and isinstance(mod, torch.nn.Linear) and attention:
            out.append(("unet", name, mod.in_features, mod.out_features))
    for component, cls in (
        ("text_encoder", CLIPTextModel),
        ("text_encoder_2", CLIPTextModelWithProjection),
    ):
        model = cls.from_pretrained(base_dir / component)
        for name, mod in model.named_modules():
            if name.endswith(("q_proj", "k_proj", "v_proj", "out_proj")):
                # Published names always carry `text_model.` (transformers < 5.6 layout).
                full = name if name.startswith("text_model.") else f"text_model.{name}"
                out.append((component, full, mod.in_features, mod.out_features))
    return out


def lora_tensors(base_dir: Path, name: str) -> dict[tuple[str, str], tuple[torch.Tensor, ...]]:
    """(component, module) -> (down [r, in], up [out, r]); deterministic per LoRA name."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for component, module, fan_in, fan_out in _targets(base_dir):
        down = torch.randn(LORA_RANK, fan_in, generator=gen) / fan_in**0.5
        # Large enough that the LoRA visibly changes a random model's output.
        up = torch.randn(fan_out, LORA_RANK, generator=gen) * 0.5
        out[(component, module)] = (down, up)
    return out


def kohya_key(component: str, module: str) -> str:
    prefix = {"unet": "lora_unet", "text_encoder": "lora_te1", "text_encoder_2": "lora_te2"}
    if component == "unet":
        sgm = _sgm_name(module)
        if sgm is None:
            raise ValueError(f"no SGM name for {module}")
        module = sgm
    return f"{prefix[component]}_{module.replace('.', '_')}"


def tiny_lora_bytes(base_dir: Path, name: str, fmt: str = KOHYA) -> bytes:
    """The LoRA `name` as a .safetensors file in Kohya naming (`.alpha` = LORA_ALPHA) or in
    diffusers/peft naming (the alpha/rank scale folded into the up weights, as diffusers'
    converter does): both files are the same LoRA."""
    tensors: dict[str, torch.Tensor] = {}
    scale = LORA_ALPHA / LORA_RANK
    for (component, module), (down, up) in lora_tensors(base_dir, name).items():
        if fmt == KOHYA:
            key = kohya_key(component, module)
            tensors[f"{key}.lora_down.weight"] = down.contiguous()
            tensors[f"{key}.lora_up.weight"] = up.contiguous()
            tensors[f"{key}.alpha"] = torch.tensor(LORA_ALPHA)
        elif fmt == DIFFUSERS:
            tensors[f"{component}.{module}.lora_A.weight"] = down.contiguous()
            tensors[f"{component}.{module}.lora_B.weight"] = (up * scale).contiguous()
        else:
            raise ValueError(f"unknown LoRA format {fmt!r}")
    if fmt == KOHYA:
        metadata = {"ss_network_module": "networks.lora", "ss_base_model_version": "sdxl_base_v1-0"}
    else:
        metadata = {"format": "pt"}
    return save(tensors, metadata=metadata)
