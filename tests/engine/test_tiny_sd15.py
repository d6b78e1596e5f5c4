"""The tiny SD1.5 stand-in: layouts, the LDM exporter's round trip, the build-once cache."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from toonforge.engine.tiny._cache import MARKER, build_once
from toonforge.engine.tiny.sd15 import (
    CARTOONMIX_EMBEDDINGS,
    build_tiny_sd15_models,
    ensure_tiny_sd15,
    tiny_embedding_tensor,
)
from toonforge.engine.tiny.tokenizer import ensure_tiny_clip_tokenizer, special_token_ids


def test_single_file_round_trip_is_bit_exact(tiny_root: Path, tmp_path: Path) -> None:
    from diffusers import StableDiffusionPipeline

    paths = ensure_tiny_sd15(tiny_root)
    # The config folder plays the role of the SD1.5 repo: configs and tokenizer, no weights.
    assert not list(paths.config_dir.rglob("*.safetensors"))
    assert (paths.config_dir / "tokenizer" / "merges.txt").is_file()
    with safe_open(str(paths.checkpoint), "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "first_stage_model.decoder.up.3.block.0.conv1.weight" in keys
    assert "cond_stage_model.transformer.text_model.final_layer_norm.weight" in keys
    assert not any(k.startswith(("unet.", "vae.", "text_encoder.")) for k in keys)

    pipe = StableDiffusionPipeline.from_single_file(
        str(paths.checkpoint),
        config=str(paths.config_dir),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    # Fresh models from the same deterministic builder are the reference.
    reference = build_tiny_sd15_models(ensure_tiny_clip_tokenizer(tmp_path))
    for name in ("unet", "vae", "text_encoder"):
        want = reference[name].state_dict()  # type: ignore[attr-defined]
        got = getattr(pipe, name).state_dict()
        assert set(want) == set(got), name
        for key, tensor in want.items():
            assert torch.equal(tensor, got[key]), f"{name}.{key} differs after the round trip"
    assert pipe.vae_scale_factor == 8  # real latent shapes


def test_build_is_cached_and_deterministic(tiny_root: Path, tmp_path: Path) -> None:
    first = ensure_tiny_sd15(tiny_root)
    stamp = first.checkpoint.stat().st_mtime_ns
    assert ensure_tiny_sd15(tiny_root).checkpoint.stat().st_mtime_ns == stamp  # reused
    assert (first.root / MARKER).is_file()
    # A second, independent build writes the very same weights.
    other = ensure_tiny_sd15(tmp_path)
    a, b = load_file(str(first.checkpoint)), load_file(str(other.checkpoint))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_once_under_concurrency(tmp_path: Path) -> None:
    calls: list[int] = []

    def slow_build(folder: Path) -> None:
        calls.append(1)
        (folder / "half").write_text("x")
        time.sleep(0.2)
        (folder / "whole").write_text("y")

    seen: list[set[str]] = []

    def worker() -> None:
        out = build_once(tmp_path / "model", slow_build)
        seen.append({p.name for p in out.iterdir()})

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Everyone saw a complete folder; losers' temporary copies are gone.
    assert all(s == {"half", "whole", MARKER} for s in seen)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    before = len(calls)
    build_once(tmp_path / "model", slow_build)
    assert len(calls) == before  # a complete folder is reused, not rebuilt


def test_tokenizer_loads_offline_in_clip_layout(tiny_root: Path) -> None:
    folder = ensure_tiny_clip_tokenizer(tiny_root)
    tok = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    ids = special_token_ids(folder)
    assert tok.bos_token_id == ids["bos_token_id"] and tok.eos_token_id == ids["eos_token_id"]
    assert len(tok) == ids["vocab_size"]
    # Corpus words are single tokens; anything else still tokenizes byte by byte.
    pieces = tok.tokenize("masterpiece, purple hair, Zyxw 日本")
    assert pieces[:3] == ["masterpiece</w>", ",</w>", "purple</w>"]
    assert tok.model_max_length == 77


def test_embeddings_in_a1111_formats(tiny_root: Path) -> None:
    paths = ensure_tiny_sd15(tiny_root)
    for token, (file_name, vectors) in CARTOONMIX_EMBEDDINGS.items():
        path = paths.embeddings_dir / file_name
        if path.suffix == ".safetensors":
            emb = load_file(str(path))["emb_params"]
        else:
            emb = torch.load(path, weights_only=True)["string_to_param"]["*"]
        assert emb.shape == (vectors, 32)
        assert torch.equal(emb, tiny_embedding_tensor(token, vectors))


def test_exporter_covers_the_real_sd15_block_layout() -> None:
    """The real SD1.5 UNet shape (3 cross-attention levels + 1 plain, 2 layers per level) at
    tiny widths: diffusers' own LDM->diffusers converter inverts our export exactly, and the
    key diffusers uses to recognise a v1 checkpoint is where it expects it."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        CHECKPOINT_KEY_NAMES,
        convert_ldm_unet_checkpoint,
    )

    from toonforge.engine.tiny.ldm_export import unet_to_ldm

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=8,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    state = unet.state_dict()
    ldm = unet_to_ldm(state, unet.config)
    assert CHECKPOINT_KEY_NAMES["v1"] in ldm
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
