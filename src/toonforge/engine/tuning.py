"""Throughput knobs applied to a pipeline once, when it is loaded.

- Attention: PyTorch's scaled-dot-product attention (`AttnProcessor2_0`, and the FLUX
  processors built on it) is what diffusers installs on torch 2; it is recorded, not changed.
  It dispatches to flash or memory-efficient kernels on GPUs by itself.
- VAE slicing decodes the samples of a batch one at a time: the decode peak is that of one
  image instead of `samples` of them, at no cost in quality. VAE tiling decodes large images
  in overlapping tiles (above the VAE's native size: 512 px for SD 1.5, 1024 px for SDXL and
  FLUX): it bounds the peak of a 1024² or larger decode on a small card, and may leave faint
  seams, so `auto` turns it on only on GPUs.
- channels_last memory format helps convolution-heavy UNets on recent NVIDIA GPUs (cuDNN's
  NHWC kernels); off by default, since it helps little on the CPU and for transformers.
- `torch.compile` of the denoiser (UNet or FLUX transformer): minutes of compilation on the
  first run of each shape, then typically faster steps; off by default. The runtime runs a
  short warm-up request after a load when it is on, so the first user does not pay for it.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")


def _switch(setting: str, device: torch.device) -> bool:
    """`on`/`off`, or `auto`: on for GPUs."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def tune_pipeline(pipe: Any, settings: Settings, device: torch.device) -> dict[str, Any]:
    """Apply the knobs to a loaded pipeline in place; what was applied (for debugoutput)."""
    applied: dict[str, Any] = {}
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    vae = getattr(pipe, "vae", None)
    if denoiser is not None and hasattr(denoiser, "attn_processors"):
        kinds = {type(p).__name__ for p in denoiser.attn_processors.values()}
        applied["attention"] = sorted(kinds)
    if vae is not None:
        if _switch(settings.vae_slicing, device) and hasattr(vae, "enable_slicing"):
            vae.enable_slicing()
            applied["vae_slicing"] = True
        if _switch(settings.vae_tiling, device) and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
            applied["vae_tiling"] = True
    if settings.channels_last:
        for module in (denoiser, vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
        applied["channels_last"] = True
    if settings.compile != "off" and denoiser is not None:
        # In place (nn.Module.compile): the module keeps its type, config and adapters.
        denoiser.compile(mode=None if settings.compile == "default" else settings.compile)
        applied["compile"] = settings.compile
    logger.debug("tuned pipeline: %s", applied)
    return applied
