"""Exact parameter counts of the shipped configs, built on the meta device, against published
figures (each within 1 %), and the shipped cache against fresh counts.

Published figures and their sources:
- SD 1.5 UNet 860 M, CLIP ViT-L/14 text encoder 123 M: the Stable Diffusion v1 model card
  ("a 860M UNet and 123M text encoder"; runwayml/stable-diffusion-v1-5, CompVis).
- SDXL: the UNet has 2.6 B parameters in the SDXL report (Podell et al. 2023, table 1), a
  figure rounded to two digits; the count is 2.567 B, 1.3 % below it, so the test uses the
  published weight file instead: stable-diffusion-xl-base-1.0 `unet/diffusion_pytorch_model
  .fp16.safetensors` is 5.14 GB (2 bytes a parameter: 2.57 B). The report's text encoders
  together are 817 M (CLIP-L 123 M + OpenCLIP bigG 694 M). Stability AI's SDXL 1.0
  announcement: a "3.5B parameter base model" (UNet + both text encoders + VAE).
- SDXL refiner UNet: stable-diffusion-xl-refiner-1.0 `unet/diffusion_pytorch_model.fp16
  .safetensors`, 4.52 GB (2.26 B parameters; "2.3 B" is the same figure rounded).
- FLUX.1-dev transformer: "a 12 billion parameter rectified flow transformer" (Black Forest
  Labs' model card for black-forest-labs/FLUX.1-dev); the count is 11.90 B.
- T5 v1.1 XXL encoder: FLUX.1-dev `text_encoder_2/` holds it in bfloat16 in two shards of
  4.99 GB and 4.53 GB (9.52 GB: 4.76 B parameters). The SD3 report's "4.7B" is the same
  figure truncated (4.76 B is 1.3 % above it), so the weight files are the figure used.
- VAEs (SD, SDXL: 83.65 M; FLUX, 16 latent channels: 83.82 M): their float32 weight files,
  335 MB (stabilityai/sd-vae-ft-mse `diffusion_pytorch_model.safetensors`, FLUX.1-dev
  `ae.safetensors`).
- AnimateDiff v1-5-2 motion adapter: 453 M; its float32 weights are 1.82 GB
  (guoyww/animatediff `mm_sd_v15_v2.ckpt`, and the diffusers repository's
  `diffusion_pytorch_model.safetensors`).
"""

from __future__ import annotations

import pytest

from toonforge.engine.plan.counting import count_part
from toonforge.engine.plan.parts import all_configs, part_count

GB = 1e9

PUBLISHED = {
    "sd15-unet.json": 860e6,
    "clip-l-text.json": 123e6,
    "sdxl-unet.json": 5.14 * GB / 2,
    "sdxl-refiner-unet.json": 4.52 * GB / 2,
    "flux-transformer.json": 12e9,
    "t5-v1_1-xxl-encoder.json": (4.99 + 4.53) * GB / 2,
    "sd15-vae.json": 335e6 / 4,
    "sdxl-vae.json": 335e6 / 4,
    "flux-vae.json": 335e6 / 4,
    "animatediff-motion-adapter-v1-5-2.json": 453e6,
}


@pytest.fixture(scope="module")
def fresh() -> dict[str, object]:
    return {name: count_part(name) for name in all_configs()}


@pytest.mark.parametrize("config", sorted(PUBLISHED))
def test_counts_match_published_figures(config: str, fresh: dict) -> None:
    count = fresh[config].parameters
    figure = PUBLISHED[config]
    assert abs(count - figure) <= 0.01 * figure, f"{config}: {count:,} vs {figure:,.0f}"


def test_sdxl_text_encoders_and_base_model_totals(fresh: dict) -> None:
    encoders = fresh["clip-l-text.json"].parameters + fresh["openclip-bigg-text.json"].parameters
    assert abs(encoders - 817e6) <= 0.01 * 817e6
    base = encoders + fresh["sdxl-unet.json"].parameters + fresh["sdxl-vae.json"].parameters
    assert abs(base - 3.5e9) <= 0.01 * 3.5e9


def test_exact_counts_are_stable(fresh: dict) -> None:
    """The exact figures of the architectures (a change means a config changed)."""
    exact = {
        "sd15-unet.json": 859_520_964,
        "clip-l-text.json": 123_060_480,
        "openclip-bigg-text.json": 694_659_840,
        "sdxl-unet.json": 2_567_463_684,
        "sdxl-refiner-unet.json": 2_259_526_660,
        "flux-transformer.json": 11_901_408_320,
        "t5-v1_1-xxl-encoder.json": 4_762_310_656,
        "sd15-vae.json": 83_653_863,
        "flux-vae.json": 83_819_683,
        "animatediff-motion-adapter-v1-5-2.json": 453_209_280,
    }
    assert {k: fresh[k].parameters for k in exact} == exact


def test_shipped_cache_matches_fresh_counts(fresh: dict) -> None:
    part_count.cache_clear()
    for name, count in fresh.items():
        assert part_count(name) == count, f"counts.json is stale for {name}: rerun counts_cache"


def test_meta_build_uses_no_memory_and_reports_dtypes(fresh: dict) -> None:
    flux = fresh["flux-transformer.json"]
    assert flux.parameters_by_dtype == {"float32": flux.parameters}
    assert fresh["clip-l-text.json"].buffers_by_dtype == {"int64": 77}  # position ids
    # 57 FLUX blocks; the largest (a double-stream block) and the rest add up
    assert 0 < flux.largest_block < flux.parameters / 19
    assert flux.outside_blocks + 19 * flux.largest_block > flux.parameters / 2
