"""Tiny Stable Diffusion 1.5 stand-in, saved the way real SD1.5 weights are published.

Same classes as SD1.5 (UNet2DConditionModel, CLIPTextModel, AutoencoderKL, PNDM scheduler
config), random weights at tiny widths, written as
- a diffusers config folder (model_index.json, component configs, tokenizer; no weights), the
  role the `stable-diffusion-v1-5` repository plays for a real single-file checkpoint;
- one LDM-layout `.safetensors` checkpoint, as CartoonMix and most SD1.5 fine-tunes ship;
- A1111 textual-inversion files for the CartoonMix negative-prompt tokens.
Production code then loads them with the very calls it uses for real weights.

The VAE keeps the real 8x downsampling (four levels) so 512x512 requests run with the real
latent shapes, and the text encoder has CLIP-L's twelve layers so clip skip 1..12 all
differ.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

from toonforge.engine.tiny._cache import build_once, write_file_atomic
from toonforge.engine.tiny.ldm_export import save_ldm_checkpoint
from toonforge.engine.tiny.tokenizer import special_token_ids, write_clip_tokenizer

# Bump when the architecture or the init changes: old builds stay in their own folder.
VERSION = "v1"
SEED = 1234
# CLIP ViT-L's depth, so every clip skip the catalog allows (1..12) has a layer to stop at.
TEXT_LAYERS = 12
TEXT_DIM = 32
CHECKPOINT_NAME = "tiny-sd15.safetensors"
UNET_OUT_GAIN = 3.0

# The CartoonMix negative prompt's embeddings, with the file names and formats their authors
# publish. Vector counts are stand-ins; the 75-vector one overflows a single 77-token window,
# which is exactly what the real file does.
CARTOONMIX_EMBEDDINGS: dict[str, tuple[str, int]] = {
    "bad-hands-5": ("bad-hands-5.pt", 6),
    "EasyNegativeV2": ("EasyNegativeV2.safetensors", 16),
    "ng_deepnegative_v1_75t": ("ng_deepnegative_v1_75t.pt", 75),
}


@dataclass(frozen=True)
class Sd15Paths:
    checkpoint: Path  # single-file LDM checkpoint
    config_dir: Path  # diffusers layout: configs and tokenizer only
    embeddings_dir: Path
    root: Path


def ensure_tiny_sd15(root: Path) -> Sd15Paths:
    """Build the stand-in under `root` once (atomically) and return where its parts are."""
    folder = build_once(root / f"sd15-{VERSION}", _build)
    return Sd15Paths(
        checkpoint=folder / CHECKPOINT_NAME,
        config_dir=folder / "diffusers-config",
        embeddings_dir=folder / "embeddings",
        root=folder,
    )


def build_tiny_sd15_models(tokenizer_dir: Path) -> dict[str, object]:
    """Fresh tiny models (deterministic), for the builder and for round-trip tests."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    ids = special_token_ids(tokenizer_dir)
    # fork_rng: building must not disturb the caller's global random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        # Cross-attention only at the middle level: at the top level (64x64 latents for
        # 512 px) attention over 4096 tokens made a 20-step request take a minute on CPU.
        # The mix of plain and attention blocks still covers every LDM key pattern
        # (upsampler in slot 1 and in slot 2, downsampler after either kind).
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            layers_per_block=2,
            block_out_channels=(16, 32, 32),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=TEXT_DIM,
            attention_head_dim=8,
            norm_num_groups=16,
        )
        # A fresh UNet predicts noise with std ~0.3 that hardly changes along a trajectory;
        # then every deterministic solver (Euler, DDIM, LMS, DPM++, PNDM) lands on the same
        # image and the scheduler input would have no visible effect. A trained noise
        # predictor outputs unit variance: scale the output layer to that.
        with torch.no_grad():
            unet.conv_out.weight.mul_(UNET_OUT_GAIN)
            unet.conv_out.bias.mul_(UNET_OUT_GAIN)
        torch.manual_seed(SEED + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 16, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=512,
            scaling_factor=0.18215,
        )
        torch.manual_seed(SEED + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=TEXT_DIM,
                intermediate_size=64,
                num_hidden_layers=TEXT_LAYERS,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=TEXT_DIM,
                hidden_act="quick_gelu",
                **ids,
            )
        )
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    # SD1.5's own scheduler config (stable-diffusion-v1-5). `from_config` rather than the
    # constructor: `clip_sample` belongs to DDIM and is only carried along for it.
    scheduler = PNDMScheduler.from_config(
        {
            "num_train_timesteps": 1000,
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "skip_prk_steps": True,
            "set_alpha_to_one": False,
            "steps_offset": 1,
            "clip_sample": False,
            "trained_betas": None,
        }
    )
    for model in (unet, vae, text_encoder):
        model.eval()
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
    }


def _build(folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    tokenizer_dir = folder / "_tokenizer_src"
    write_clip_tokenizer(tokenizer_dir)
    parts = build_tiny_sd15_models(tokenizer_dir)
    pipe = StableDiffusionPipeline(
        **parts,  # type: ignore[arg-type]
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    config_dir = folder / "diffusers-config"
    pipe.save_pretrained(config_dir, safe_serialization=True)
    # Keep configs only: the weights must come from the single file, as in production.
    for weights in [*config_dir.rglob("*.safetensors"), *config_dir.rglob("*.bin")]:
        weights.unlink()
    # The SD1.5 repository ships vocab.json + merges.txt (not tokenizer.json): mirror it.
    shutil.rmtree(config_dir / "tokenizer")
    tokenizer_dir.rename(config_dir / "tokenizer")
    save_ldm_checkpoint(
        folder / CHECKPOINT_NAME, parts["unet"], parts["vae"], parts["text_encoder"]
    )
    emb_dir = folder / "embeddings"
    for token, (file_name, vectors) in CARTOONMIX_EMBEDDINGS.items():
        write_tiny_embedding(emb_dir / file_name, token, vectors)


def tiny_embedding_tensor(token: str, vectors: int, dim: int = TEXT_DIM) -> torch.Tensor:
    """Deterministic per token, so every build and every process agrees on the values."""
    seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
    gen = torch.Generator().manual_seed(seed)
    # CLIP token embeddings are initialised with std 0.02; stay at that scale.
    return torch.randn(vectors, dim, generator=gen) * 0.02


def write_tiny_embedding(path: Path, token: str, vectors: int = 4) -> Path:
    """An A1111 textual-inversion file: `.pt` (string_to_param) or `.safetensors` (emb_params)."""
    emb = tiny_embedding_tensor(token, vectors)
    if path.suffix == ".safetensors":
        data = save_safetensors({"emb_params": emb.contiguous()})
    else:
        buf = io.BytesIO()
        torch.save(
            {
                "string_to_token": {"*": 265},
                "string_to_param": {"*": emb},
                "name": token,
                "step": 0,
                "sd_checkpoint": None,
                "sd_checkpoint_name": "toonforge-tiny-sd15",
            },
            buf,
        )
        data = buf.getvalue()
    write_file_atomic(path, data)
    return path


def ensure_tiny_embedding(paths: Sd15Paths, token: str, file_name: str) -> Path:
    """The stand-in for an embedding a manifest names; tokens beyond CartoonMix's three get a
    4-vector embedding made on first use."""
    path = paths.embeddings_dir / file_name
    if not path.is_file():
        vectors = CARTOONMIX_EMBEDDINGS.get(token, (file_name, 4))[1]
        write_tiny_embedding(path, token, vectors)
    return path
