"""The tiny FLUX.1-dev stand-in: the hub repo's layout, working tokenizers, both LoRA formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from toonforge.engine.tiny.flux import (
    LORA_FORMATS,
    MODEL_INDEX,
    SCHEDULER_CONFIG,
    TINY,
    FluxPaths,
    ensure_tiny_flux,
)


@pytest.fixture(scope="module")
def paths(tiny_root: Path) -> FluxPaths:
    return ensure_tiny_flux(tiny_root)


@pytest.fixture(scope="module")
def pipe(paths: FluxPaths):  # type: ignore[no-untyped-def]
    from diffusers import FluxPipeline

    p = FluxPipeline.from_pretrained(
        str(paths.base_dir), dtype=torch.float32, local_files_only=True
    )
    p.set_progress_bar_config(disable=True)
    return p


def test_base_folder_has_the_hub_repos_layout(paths: FluxPaths) -> None:
    base = paths.base_dir
    assert base.parts[-2:] == ("black-forest-labs", "FLUX.1-dev")
    assert json.loads((base / "model_index.json").read_text()) == MODEL_INDEX
    for component in ("transformer", "vae"):
        assert (base / component / "diffusion_pytorch_model.safetensors").is_file()
    for component in ("text_encoder", "text_encoder_2"):
        assert (base / component / "model.safetensors").is_file()
    assert (base / "tokenizer" / "vocab.json").is_file()
    assert (base / "tokenizer" / "merges.txt").is_file()
    assert (base / "tokenizer_2" / "spiece.model").is_file()
    scheduler = json.loads((base / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["_class_name"] == "FlowMatchEulerDiscreteScheduler"
    assert {k: scheduler[k] for k in SCHEDULER_CONFIG} == SCHEDULER_CONFIG
    transformer = json.loads((base / "transformer" / "config.json").read_text())
    assert transformer["guidance_embeds"] is True
    assert sum(transformer["axes_dims_rope"]) == transformer["attention_head_dim"] == 16
    assert (transformer["num_layers"], transformer["num_single_layers"]) == (1, 1)
    vae = json.loads((base / "vae" / "config.json").read_text())
    assert vae["latent_channels"] == 16 and len(vae["block_out_channels"]) == 4


def test_loads_with_the_real_classes_and_tokenizers_work(pipe) -> None:  # type: ignore[no-untyped-def]
    assert type(pipe).__name__ == "FluxPipeline"
    assert type(pipe.text_encoder_2).__name__ == "T5EncoderModel"
    assert pipe.vae_scale_factor == 8
    t5 = pipe.tokenizer_2
    a = t5("a cat on the beach").input_ids
    b = t5("a dog in the forest").input_ids
    assert a != b and a[-1] == t5.eos_token_id == 1
    assert t5.unk_token_id not in a, "common words must not be unknown"
    assert t5("Hello WORLD 1024").input_ids.count(t5.unk_token_id) == 0
    assert pipe.tokenizer.model_max_length == 77


def test_lora_files_are_in_their_published_formats(paths: FluxPaths) -> None:
    assert LORA_FORMATS["Toon-Renders.safetensors"] == "kohya"
    with safe_open(str(paths.loras["Toon-Renders.safetensors"]), "pt") as f:
        kohya = set(f.keys())
    assert "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight" in kohya
    assert "lora_unet_double_blocks_0_txt_mlp_2.lora_up.weight" in kohya
    assert "lora_unet_single_blocks_0_linear2.alpha" in kohya
    with safe_open(str(paths.loras["Comics-Factory-v1.safetensors"]), "pt") as f:
        peft = set(f.keys())
    assert all(k.startswith("transformer.") for k in peft)
    assert "transformer.transformer_blocks.0.attn.to_q.lora_A.weight" in peft
    assert "transformer.single_transformer_blocks.0.proj_out.lora_B.weight" in peft


def test_both_loras_load_change_the_image_and_switch_cleanly(pipe, paths: FluxPaths) -> None:  # type: ignore[no-untyped-def]
    def image() -> np.ndarray:
        out = pipe(
            prompt="a cat",
            num_inference_steps=2,
            width=64,
            height=64,
            generator=torch.Generator().manual_seed(3),
            output_type="np",
        ).images[0]
        return np.asarray(out)

    base = image()
    pipe.load_lora_weights(str(paths.loras["Toon-Renders.safetensors"]), adapter_name="toon")
    pipe.load_lora_weights(str(paths.loras["Comics-Factory-v1.safetensors"]), adapter_name="comic")
    try:
        pipe.set_adapters(["toon"], [1.0])
        toon = image()
        pipe.set_adapters(["comic"], [1.0])
        comic = image()
        assert np.abs(toon - base).max() * 255 > 2
        assert np.abs(comic - base).max() * 255 > 2
        assert np.abs(comic - toon).max() * 255 > 2
        pipe.set_adapters(["toon"], [1.0])
        assert np.array_equal(image(), toon), "switching back is exact"
        pipe.disable_lora()
        assert np.array_equal(image(), base), "disabled adapters leave the base untouched"
    finally:
        pipe.unload_lora_weights()


def test_tiny_size_is_small(paths: FluxPaths) -> None:
    total = sum(p.stat().st_size for p in paths.root.rglob("*") if p.is_file())
    assert total < 10_000_000
    assert TINY.name == "tiny"
