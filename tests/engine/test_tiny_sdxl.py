"""The tiny SDXL stand-ins: real layouts, real loaders, both LoRA namings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open

from toonforge.engine.tiny.sdxl import (
    DIFFUSERS,
    KOHYA,
    LORA_ALPHA,
    SdxlPaths,
    ensure_tiny_lora,
    ensure_tiny_sdxl,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: one intra-op thread avoids spin-wait contention.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paths(tiny_root: Path) -> SdxlPaths:
    return ensure_tiny_sdxl(tiny_root)


def _json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def test_layouts_are_the_hub_repositories(paths: SdxlPaths) -> None:
    base = _json(paths.base_dir / "model_index.json")
    assert base["_class_name"] == "StableDiffusionXLPipeline"
    assert base["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert base["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert base["force_zeros_for_empty_prompt"] is True
    refiner = _json(paths.refiner_dir / "model_index.json")
    assert refiner["_class_name"] == "StableDiffusionXLImg2ImgPipeline"
    assert refiner["text_encoder"] == [None, None]
    assert refiner["requires_aesthetics_score"] is True
    unet = _json(paths.base_dir / "unet" / "config.json")
    assert unet["addition_embed_type"] == "text_time"
    assert (unet["addition_time_embed_dim"], unet["cross_attention_dim"]) == (8, 64)
    assert unet["projection_class_embeddings_input_dim"] == 80
    runet = _json(paths.refiner_dir / "unet" / "config.json")
    assert runet["cross_attention_dim"] == 32
    assert runet["projection_class_embeddings_input_dim"] == 72
    for folder in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert list((paths.base_dir / folder).glob("*.safetensors")), folder
    assert (paths.base_dir / "tokenizer_2" / "merges.txt").is_file()
    assert _json(paths.base_dir / "tokenizer_2" / "special_tokens_map.json")["pad_token"] == "!"


def _keys(path: Path) -> tuple[list[str], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return list(f.keys()), dict(f.metadata() or {})


def test_lora_files_in_kohya_and_diffusers_naming(paths: SdxlPaths) -> None:
    kohya, meta = _keys(ensure_tiny_lora(paths, "Retro-Cartoons.safetensors", KOHYA))
    prefixes = {k.split("_", 2)[0] + "_" + k.split("_", 2)[1] for k in kohya}
    assert prefixes == {"lora_unet", "lora_te1", "lora_te2"}
    assert any("input_blocks_7_1_transformer_blocks_0_attn1_to_q" in k for k in kohya)
    assert any(k.startswith("lora_unet_middle_block_1_") for k in kohya)
    assert any(k.startswith("lora_unet_output_blocks_") for k in kohya)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for k in kohya)
    downs = [k for k in kohya if k.endswith(".lora_down.weight")]
    assert len(downs) == len([k for k in kohya if k.endswith(".alpha")]) > 0
    assert meta["ss_network_module"] == "networks.lora"
    path = ensure_tiny_lora(paths, "Retro-Cartoons.safetensors", KOHYA)
    with safe_open(str(path), "pt") as f:
        assert float(f.get_tensor(downs[0].replace("lora_down.weight", "alpha"))) == LORA_ALPHA
    diffusers_keys, _ = _keys(ensure_tiny_lora(paths, "Retro-Cartoons.safetensors", DIFFUSERS))
    assert {k.split(".")[0] for k in diffusers_keys} == {"unet", "text_encoder", "text_encoder_2"}
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in diffusers_keys)
    assert len(diffusers_keys) == 2 * len(downs)


def _lora_layers(pipe: Any, adapter: str) -> dict[tuple[str, str], torch.Tensor]:
    """Effective update (scaling * B @ A) of every LoRA layer the adapter put in place."""
    out = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        for name, module in getattr(pipe, component).named_modules():
            if hasattr(module, "lora_A") and adapter in module.lora_A:
                a = module.lora_A[adapter].weight
                b = module.lora_B[adapter].weight
                out[(component, name)] = (b @ a * module.scaling[adapter]).detach()
    return out


def test_both_namings_load_as_the_same_lora_and_change_the_image(paths: SdxlPaths) -> None:
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(
        str(paths.base_dir), local_files_only=True, add_watermarker=False
    )
    pipe.set_progress_bar_config(disable=True)

    def image() -> np.ndarray:
        gen = torch.Generator().manual_seed(3)
        out = pipe(
            prompt="btstyle, a cartoon bat",
            num_inference_steps=3,
            width=64,
            height=64,
            generator=gen,
            output_type="np",
        )
        return np.asarray(out.images[0])

    plain = image()
    pipe.load_lora_weights(
        str(ensure_tiny_lora(paths, "Retro-Cartoons.safetensors", KOHYA)), adapter_name="kohya"
    )
    pipe.load_lora_weights(
        str(ensure_tiny_lora(paths, "Retro-Cartoons.safetensors", DIFFUSERS)),
        adapter_name="diffusers",
    )
    kohya, diffusers = _lora_layers(pipe, "kohya"), _lora_layers(pipe, "diffusers")
    # Every UNet attention projection and both encoders' self-attention layers.
    assert {c for c, _ in kohya} == {"unet", "text_encoder", "text_encoder_2"}
    assert kohya.keys() == diffusers.keys()
    for key in kohya:
        torch.testing.assert_close(kohya[key], diffusers[key])
    pipe.set_adapters(["kohya"], adapter_weights=[1.0])
    with_kohya = image()
    pipe.set_adapters(["diffusers"], adapter_weights=[1.0])
    with_diffusers = image()
    assert np.abs(with_kohya - plain).max() > 0.05, "the LoRA must change the image"
    np.testing.assert_allclose(with_kohya, with_diffusers, atol=1e-5)
