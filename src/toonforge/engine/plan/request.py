"""The page's default request for a tool, from its manifest: what the memory plan sizes.

Mirrors what the engines do with those inputs (kept in step by tests/engine/test_memory_plan.py):
- SD1.5 / SDXL: the UNet runs negative and positive prompt together (classifier-free guidance
  at scale != 1), so its batch is 2 x samples; images are decoded one at a time.
- AnimateDiff: every frame is in the UNet batch (2 x frames, guidance 7.5); the VAE decodes
  `ANIMATEDIFF_DECODE_CHUNK` frames per call (`engine.animatediff.DECODE_CHUNK`).
- FLUX.1-dev: guidance-distilled, one pass per sample; the T5 prompt is padded to 512 tokens
  (`engine.flux.MAX_SEQUENCE_LENGTH`); true CFG (when a tool enables it) doubles the batch.
- SDXL: the refiner runs when the page's `refiner` input defaults to "" (YES).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from toonforge.catalog.manifest import Manifest

ANIMATEDIFF_DECODE_CHUNK = 8
ANIMATEDIFF_GUIDANCE = 7.5
FLUX_TEXT_TOKENS = 512
CLIP_TOKENS = 77


@dataclass(frozen=True)
class DefaultRequest:
    width: int
    height: int
    samples: int  # images per request
    frames: int  # video frames (1 for images)
    cfg_copies: int  # denoiser passes batched per step: 2 with classifier-free guidance
    decode_batch: int  # images or frames per VAE decode call
    refiner: bool  # SDXL: the refiner runs

    @property
    def denoiser_batch(self) -> int:
        return self.samples * self.frames * self.cfg_copies

    def describe(self) -> str:
        what = f"{self.frames} frames" if self.frames > 1 else f"{self.samples} sample(s)"
        return f"{self.width}x{self.height}, {what}"


def _default(manifest: Manifest, name: str, fallback: Any) -> Any:
    spec = manifest.input(name)
    if spec is None or spec.default in ("", None):
        return fallback
    try:
        return (
            type(fallback)(float(spec.default))
            if isinstance(fallback, int | float)
            else spec.default
        )
    except (TypeError, ValueError):
        return fallback


def default_request(manifest: Manifest) -> DefaultRequest:
    family = manifest.backend.family
    size = 1024 if family in ("sdxl", "flux") else 512
    width = _default(manifest, "width", size)
    height = _default(manifest, "height", size)
    samples = max(1, _default(manifest, "samples", 1))
    if family == "animatediff":
        frames = max(1, _default(manifest, "frameNumber", 16))
        copies = 2 if ANIMATEDIFF_GUIDANCE != 1.0 else 1
        return DefaultRequest(
            width, height, 1, frames, copies, min(frames, ANIMATEDIFF_DECODE_CHUNK), False
        )
    if family == "flux":
        copies = 2 if manifest.backend.true_cfg else 1
        return DefaultRequest(width, height, samples, 1, copies, 1, False)
    scale = _default(manifest, "scale", 7.5)
    copies = 1 if scale == 1.0 else 2
    refiner = False
    if family == "sdxl" and manifest.backend.refiner_repo:
        spec = manifest.input("refiner")
        refiner = spec is None or spec.default == ""
    return DefaultRequest(width, height, samples, 1, copies, 1, refiner)


def request_for(manifest: Manifest, params: dict[str, Any]) -> DefaultRequest:
    """The tool's default request at a task's own size and guidance (for sizing a batch of
    such tasks): width and height from `params`, one classifier-free copy less when its
    guidance scale is 1 (SD) or when true CFG does not run (FLUX without a negative prompt)."""
    req = default_request(manifest)
    family = manifest.backend.family
    try:
        width = int(params.get("width", req.width))
        height = int(params.get("height", req.height))
        scale = float(params.get("scale", 7.5))
    except (TypeError, ValueError):
        return req
    copies = req.cfg_copies
    if family in ("sd15", "sdxl"):
        copies = 1 if scale == 1.0 else 2
    elif family == "flux":
        negative = str(params.get("negativePrompt") or "").strip()
        copies = 2 if manifest.backend.true_cfg and negative else 1
    return replace(req, width=width, height=height, cfg_copies=copies)
