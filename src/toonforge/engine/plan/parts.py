"""The parts each engine family loads, named as the engines name them, and their counts.

A family's parts are the components of the diffusers pipeline its engine builds
(`engine.sd15`, `engine.sdxl`, `engine.flux`, `engine.animatediff`): `unet`, `text_encoder`,
`text_encoder_2`, `vae`, `transformer`, plus the SDXL refiner's `refiner_unet` and
AnimateDiff's `motion_adapter` (merged into the UNet at load time). Each part points at the
public architecture config shipped in `configs/` (see configs/README.md for sources).

Counts come from `counts.json`, written by `python -m toonforge.engine.plan.counts_cache`
from meta-device builds (see `counting.py`); each entry records the sha256 of the config it
was counted from, and a stale entry is recounted (which needs torch). Reading the cache
needs neither torch nor weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from toonforge.engine.plan.counting import CONFIG_DIR, PartCount

CACHE = Path(__file__).with_name("counts.json")

Role = Literal["denoiser", "text_encoder", "vae"]


@dataclass(frozen=True)
class PartSpec:
    name: str  # the pipeline component's name, as the engine calls it
    config: str  # file in configs/
    role: Role
    # quantizations this part can be stored in (besides the family's own dtype)
    quantizations: frozenset[str] = frozenset()
    # the nn.Module it runs in, when not its own (the motion adapter runs inside the UNet)
    module: str | None = None

    @property
    def unit(self) -> str:
        return self.module or self.name


_GGUF = frozenset({"gguf-q8_0", "gguf-q6_k", "gguf-q5_k", "gguf-q4_k"})
_CLIP_L = PartSpec("text_encoder", "clip-l-text.json", "text_encoder")

FAMILY_PARTS: dict[str, tuple[PartSpec, ...]] = {
    "sd15": (
        PartSpec("unet", "sd15-unet.json", "denoiser", frozenset({"fp8", "nf4"})),
        _CLIP_L,
        PartSpec("vae", "sd15-vae.json", "vae"),
    ),
    "sdxl": (
        PartSpec("unet", "sdxl-unet.json", "denoiser", frozenset({"fp8", "nf4"})),
        # Loaded only when the request runs the refiner (the page's default does).
        PartSpec("refiner_unet", "sdxl-refiner-unet.json", "denoiser", frozenset({"fp8", "nf4"})),
        _CLIP_L,
        PartSpec("text_encoder_2", "openclip-bigg-text.json", "text_encoder"),
        PartSpec("vae", "sdxl-vae.json", "vae"),
    ),
    "flux": (
        PartSpec(
            "transformer", "flux-transformer.json", "denoiser", frozenset({"fp8", "nf4"}) | _GGUF
        ),
        _CLIP_L,
        PartSpec("text_encoder_2", "t5-v1_1-xxl-encoder.json", "text_encoder", frozenset({"nf4"})),
        PartSpec("vae", "flux-vae.json", "vae"),
    ),
    "animatediff": (
        PartSpec("unet", "sd15-unet.json", "denoiser", frozenset({"fp8"})),
        # The motion modules run inside the UNet (UNetMotionModel): same phase, same blocks.
        PartSpec(
            "motion_adapter",
            "animatediff-motion-adapter-v1-5-2.json",
            "denoiser",
            frozenset({"fp8"}),
            module="unet",
        ),
        _CLIP_L,
        PartSpec("vae", "sd15-vae.json", "vae"),
    ),
}

# Storage and compute dtype per family on CUDA: FLUX.1-dev is published in bfloat16, the
# Stable Diffusion families run in float16.
FAMILY_DTYPE = {"sd15": "float16", "sdxl": "float16", "flux": "bfloat16", "animatediff": "float16"}


def config_sha256(name: str) -> str:
    return hashlib.sha256((CONFIG_DIR / name).read_bytes()).hexdigest()


def _read_cache() -> dict[str, dict]:
    try:
        return json.loads(CACHE.read_text())
    except (OSError, ValueError):
        return {}


@cache
def part_count(config: str) -> PartCount:
    """The counts of `configs/<config>`: from the cache when its config is unchanged, else
    counted now on the meta device."""
    entry = _read_cache().get(config)
    if entry and entry.get("sha256") == config_sha256(config):
        fields = {k: v for k, v in entry.items() if k != "sha256"}
        return PartCount(**fields)
    from toonforge.engine.plan.counting import count_part

    return count_part(config)


def all_configs() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.glob("*.json"))
