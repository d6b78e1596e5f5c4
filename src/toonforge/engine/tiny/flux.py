"""Tiny FLUX.1-dev stand-in and two FLUX LoRAs, saved the way the real ones are published.

The base is written as a diffusers folder laid out like the `black-forest-labs/FLUX.1-dev`
repository (model_index.json with the same seven components, `transformer/`, `vae/`,
`text_encoder/` (CLIP-L), `text_encoder_2/` (T5), `tokenizer/`, `tokenizer_2/` with a
sentencepiece `spiece.model`, `scheduler/`), with the same classes and the same config keys
that matter (`guidance_embeds=True` as in dev, 16 latent channels, the real VAE scaling and
shift factors, FLUX.1-dev's dynamic-shift flow-matching scheduler config). Production code then
loads it with `FluxPipeline.from_pretrained`, exactly as for the real repository.

The LoRAs are written in the two layouts FLUX LoRAs are published in:
- Kohya / sd-scripts (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`, `.alpha`):
  what Civitai's trainer and kohya produce, and the most likely format of the Civitai-hosted
  Toon Renders file;
- diffusers / PEFT (`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`): what
  ai-toolkit and diffusers' own training scripts produce (used for Comics Factory).
Both go through `FluxPipeline.load_lora_weights`, which converts the Kohya names itself.

`FluxSize` sets the widths; `TINY` is what offline mode and the tests use, `BENCH` is a larger
stand-in for bench/switch.py (so that load and swap times mean something).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from toonforge.engine.tiny._cache import build_once
from toonforge.engine.tiny.tokenizer import CORPUS, special_token_ids, write_clip_tokenizer

# Bump when the architecture or the init changes: old builds stay in their own folder.
VERSION = "v2"
SEED = 4321
BASE_REPO = "black-forest-labs/FLUX.1-dev"

# The hub repository's model_index.json, component for component.
MODEL_INDEX = {
    "_class_name": "FluxPipeline",
    "_diffusers_version": "0.30.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "FluxTransformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# FLUX.1-dev's scheduler/scheduler_config.json.
SCHEDULER_CONFIG = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}

# The LoRAs the FLUX manifests name, with the layout each is written in.
LORA_FORMATS = {
    "Toon-Renders.safetensors": "kohya",
    "Comics-Factory-v1.safetensors": "diffusers",
}


@dataclass(frozen=True)
class FluxSize:
    double_layers: int = 1
    single_layers: int = 1
    heads: int = 2
    head_dim: int = 16
    axes_dims_rope: tuple[int, int, int] = (4, 6, 6)  # must sum to head_dim
    t5_dim: int = 32
    t5_layers: int = 2
    clip_dim: int = 32
    clip_layers: int = 2
    vae_channels: tuple[int, int, int, int] = (8, 16, 32, 32)  # four levels: 8x, as the real VAE
    lora_rank: int = 4
    # LoRA up-projection std: large enough that each LoRA visibly changes the image.
    lora_std: float = 0.3

    @property
    def name(self) -> str:
        if self == TINY:
            return "tiny"
        return f"d{self.double_layers}s{self.single_layers}h{self.heads}x{self.head_dim}"


TINY = FluxSize()
# About 230M transformer parameters (0.9 GB in float32, 6 + 12 blocks): the stand-in
# bench/switch.py measures. Real FLUX.1-dev: 12B parameters in 57 blocks, plus T5-XXL.
BENCH = FluxSize(
    double_layers=6,
    single_layers=12,
    heads=12,
    head_dim=64,
    axes_dims_rope=(16, 24, 24),
    t5_dim=256,
    t5_layers=4,
    clip_dim=128,
    clip_layers=4,
    vae_channels=(32, 64, 128, 128),
    lora_rank=16,
    lora_std=0.05,
)


@dataclass(frozen=True)
class FluxPaths:
    base_dir: Path  # diffusers folder, FLUX.1-dev's layout
    loras: dict[str, Path]  # file name -> .safetensors
    root: Path


def ensure_tiny_flux(root: Path, size: FluxSize = TINY) -> FluxPaths:
    """Build the stand-in base and both LoRAs under `root` once (atomically)."""
    folder = build_once(root / f"flux-{size.name}-{VERSION}", lambda tmp: _build(tmp, size))
    return FluxPaths(
        base_dir=folder / BASE_REPO,
        loras={name: folder / "loras" / name for name in LORA_FORMATS},
        root=folder,
    )


def write_t5_tokenizer(folder: Path) -> None:
    """A sentencepiece unigram model trained offline on the prompt corpus, saved as FLUX.1-dev's
    tokenizer_2 (spiece.model + configs) via T5TokenizerFast."""
    import io

    import sentencepiece as spm
    from transformers import T5TokenizerFast

    corpus = [line for line in CORPUS.splitlines() if line.strip()]
    corpus += [line.upper() for line in corpus[:10]] + ["0 1 2 3 4 5 6 7 8 9 1024 2026"]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=200,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        character_coverage=1.0,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    # Loading from the folder converts spiece.model to a fast tokenizer (the constructor with
    # vocab_file= does not, in transformers 5); saving adds tokenizer.json and the configs,
    # as in FLUX.1-dev's tokenizer_2.
    tok = T5TokenizerFast.from_pretrained(folder, extra_ids=100, model_max_length=512)
    tok.save_pretrained(folder)


def build_flux_models(tokenizer_dir: Path, t5_dir: Path, size: FluxSize) -> dict[str, object]:
    """Fresh deterministic models for a FluxPipeline."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        T5Config,
        T5EncoderModel,
        T5TokenizerFast,
    )

    assert sum(size.axes_dims_rope) == size.head_dim, "axes_dims_rope must sum to head_dim"
    ids = special_token_ids(tokenizer_dir)
    tokenizer_2 = T5TokenizerFast.from_pretrained(t5_dir, model_max_length=512)
    latent_channels = 16
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=latent_channels * 4,  # 2x2 patches of 16 channels
            num_layers=size.double_layers,
            num_single_layers=size.single_layers,
            attention_head_dim=size.head_dim,
            num_attention_heads=size.heads,
            joint_attention_dim=size.t5_dim,
            pooled_projection_dim=size.clip_dim,
            guidance_embeds=True,  # FLUX.1-dev is guidance-distilled
            axes_dims_rope=size.axes_dims_rope,
        )
        _sharpen_text_attention(transformer)
        torch.manual_seed(SEED + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=size.vae_channels,
            layers_per_block=1,
            latent_channels=latent_channels,
            norm_num_groups=8,
            sample_size=1024,
            scaling_factor=0.3611,  # FLUX.1-dev's VAE
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        torch.manual_seed(SEED + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=size.clip_dim,
                intermediate_size=size.clip_dim * 2,
                num_hidden_layers=size.clip_layers,
                num_attention_heads=4,
                max_position_embeddings=77,
                projection_dim=size.clip_dim,
                hidden_act="quick_gelu",
                **ids,
            )
        )
        torch.manual_seed(SEED + 3)
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=size.t5_dim,
                d_kv=8,
                d_ff=size.t5_dim * 2,
                num_layers=size.t5_layers,
                num_heads=4,
                feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's t5-xxl
                is_encoder_decoder=False,
                pad_token_id=0,
                eos_token_id=1,
            )
        )
    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
    for model in (transformer, vae, text_encoder, text_encoder_2):
        model.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": scheduler,
    }


# A trained FLUX attends sharply to the prompt's tokens. A random one spreads attention evenly
# over 512 mostly-padding T5 tokens, so a different T5 text moved pixels by under one level.
# Sharper attention (QK-norm gains) and stronger text values make the T5 text matter as much
# as the CLIP-L text does.
QK_NORM_GAIN = 3.0
TEXT_VALUE_GAIN = 4.0


def _sharpen_text_attention(transformer: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, module in transformer.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                module.weight.mul_(QK_NORM_GAIN)
            elif leaf == "add_v_proj":
                module.weight.mul_(TEXT_VALUE_GAIN)


def _build(folder: Path, size: FluxSize) -> None:
    from diffusers import FluxPipeline

    work = folder / "_src"
    write_clip_tokenizer(work / "clip")
    write_t5_tokenizer(work / "t5")
    parts = build_flux_models(work / "clip", work / "t5", size)
    pipe = FluxPipeline(**parts)  # type: ignore[arg-type]
    base = folder / BASE_REPO
    pipe.save_pretrained(base, safe_serialization=True)
    (base / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2) + "\n")
    # The hub repo ships CLIP's vocab.json + merges.txt: mirror it.
    shutil.rmtree(base / "tokenizer")
    (work / "clip").rename(base / "tokenizer")
    # tokenizer_2 as in the hub repo: spiece.model beside tokenizer.json (transformers 5 saves
    # only the latter).
    shutil.copy(work / "t5" / "spiece.model", base / "tokenizer_2" / "spiece.model")
    shutil.rmtree(work)
    (folder / "size.json").write_text(json.dumps(asdict(size)))
    transformer = parts["transformer"]
    for i, (name, fmt) in enumerate(LORA_FORMATS.items()):
        tensors = lora_tensors(transformer, fmt, size, seed=SEED + 10 + i)
        path = folder / "loras" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": "pt", "ss_network_dim": str(size.lora_rank)}
        save_file(tensors, str(path), metadata=meta)


def lora_tensors(
    transformer: torch.nn.Module, fmt: str, size: FluxSize, seed: int
) -> dict[str, torch.Tensor]:
    """Random LoRA weights for every attention and MLP projection of each block.

    `fmt` "kohya": BFL module names (fused qkv, `img_mlp_0` ...) with lora_down/lora_up/alpha;
    "diffusers": diffusers module names with a `transformer.` prefix and lora_A/lora_B.
    """
    gen = torch.Generator().manual_seed(seed)
    r = size.lora_rank
    inner = size.heads * size.head_dim
    mlp = inner * 4
    out: dict[str, torch.Tensor] = {}

    def pair(down_key: str, up_key: str, n_in: int, n_out: int) -> None:
        out[down_key] = torch.randn(r, n_in, generator=gen) / n_in**0.5
        out[up_key] = torch.randn(n_out, r, generator=gen) * size.lora_std

    if fmt == "kohya":
        for i in range(size.double_layers):
            for side in ("img", "txt"):
                for mod, n_in, n_out in (
                    ("attn_qkv", inner, 3 * inner),
                    ("attn_proj", inner, inner),
                    ("mlp_0", inner, mlp),
                    ("mlp_2", mlp, inner),
                ):
                    key = f"lora_unet_double_blocks_{i}_{side}_{mod}"
                    pair(f"{key}.lora_down.weight", f"{key}.lora_up.weight", n_in, n_out)
                    out[f"{key}.alpha"] = torch.tensor(float(r))
        # Single blocks: `linear2` only. Real Kohya files also carry `linear1` (fused qkv +
        # MLP in), but diffusers' converter splits it with FLUX.1's real widths
        # (3072, 3072, 3072, 12288) hard-coded, which a stand-in of other widths cannot match.
        for i in range(size.single_layers):
            key = f"lora_unet_single_blocks_{i}_linear2"
            pair(f"{key}.lora_down.weight", f"{key}.lora_up.weight", inner + mlp, inner)
            out[f"{key}.alpha"] = torch.tensor(float(r))
        return out
    if fmt != "diffusers":
        raise ValueError(f"unknown LoRA format {fmt!r}")
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if not name.startswith(("transformer_blocks.", "single_transformer_blocks.")):
            continue
        if ".norm" in name:  # adaptive-norm modulation: most LoRAs leave it alone
            continue
        key = f"transformer.{name}"
        pair(
            f"{key}.lora_A.weight", f"{key}.lora_B.weight", module.in_features, module.out_features
        )
    return out
