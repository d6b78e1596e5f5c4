"""Preview images while sampling, from the latents, without the VAE.

Each family's latents map to RGB closely enough for a thumbnail through one fixed linear
map per pixel: `rgb = latent_channels @ FACTORS + BIAS`, then `(rgb + 1) / 2` clamped to
[0, 1]. The factors below are the ones ComfyUI publishes for its live previews
(comfy/latent_formats.py in github.com/comfyanonymous/ComfyUI: classes SD15, SDXL and Flux,
`latent_rgb_factors` and `latent_rgb_factors_bias`), fitted by regression between the
latents and the VAE-decoded images. They apply to latents in the sampler's space (scaled,
and for FLUX shifted, as diffusers keeps them), which is what the step callbacks see.

The preview is of the first sample (AnimateDiff: the first frame), at the latent's own
resolution (an eighth of the image) and never more than `MAX_SIDE` pixels a side.

The engine asks for a preview only when the worker's step callback says one is wanted
(`offer_preview`): nothing is computed for tasks nobody watches with previews on.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

logger = logging.getLogger("toonforge.engine")

MAX_SIDE = 128
WEBP_QUALITY = 60

# 4 latent channels -> R, G, B (ComfyUI `SD15.latent_rgb_factors`; no bias published).
SD15_FACTORS = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)
# ComfyUI `SDXL.latent_rgb_factors` and `latent_rgb_factors_bias`.
SDXL_FACTORS = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_BIAS = (0.1084, -0.0175, -0.0011)
# 16 latent channels -> R, G, B (ComfyUI `Flux.latent_rgb_factors` and `..._bias`).
FLUX_FACTORS = (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
)
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)

Unpack = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LatentPreview:
    """How one family's latents become a preview image."""

    factors: tuple[tuple[float, float, float], ...]
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # From what the sampler holds to (batch, channels, h, w) or (batch, channels, frames,
    # h, w); FLUX keeps its latents packed in 2x2 patches.
    unpack: Unpack | None = field(default=None, compare=False)

    def image(self, latents: torch.Tensor) -> Image.Image:
        return latents_to_rgb(latents, self)


SD15 = LatentPreview(SD15_FACTORS)
SDXL = LatentPreview(SDXL_FACTORS, SDXL_BIAS)
ANIMATEDIFF = SD15  # SD 1.5 latents, one set per frame


def flux_preview(height: int, width: int, vae_scale_factor: int = 8) -> LatentPreview:
    """FLUX's preview for an image of `height` x `width`: its packed latents
    (batch, h/2 * w/2, 16 * 4) are unpacked to (batch, 16, h, w) first."""
    h = 2 * (height // (vae_scale_factor * 2))
    w = 2 * (width // (vae_scale_factor * 2))

    def unpack(packed: torch.Tensor) -> torch.Tensor:
        batch, _, packed_channels = packed.shape
        channels = packed_channels // 4
        x = packed.view(batch, h // 2, w // 2, channels, 2, 2)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, h, w)

    return LatentPreview(FLUX_FACTORS, FLUX_BIAS, unpack)


def latents_to_rgb(latents: torch.Tensor, fmt: LatentPreview) -> Image.Image:
    """The first sample's latents as an RGB image, at most MAX_SIDE pixels a side."""
    with torch.no_grad():
        x = fmt.unpack(latents) if fmt.unpack is not None else latents
        x = x[0]
        if x.ndim == 4:  # (channels, frames, h, w): the first frame
            x = x[:, 0]
        if x.shape[0] != len(fmt.factors):
            raise ValueError(
                f"latents have {x.shape[0]} channels, the preview expects {len(fmt.factors)}"
            )
        x = x.detach().to("cpu", torch.float32)
        factors = torch.tensor(fmt.factors, dtype=torch.float32)
        bias = torch.tensor(fmt.bias, dtype=torch.float32)
        rgb = torch.einsum("chw,cr->hwr", x, factors) + bias
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    image = Image.fromarray(pixels, "RGB")
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR)
    return image


def data_url(image: Image.Image) -> str:
    """The preview as a `data:image/webp;base64,...` URL (a few kilobytes)."""
    buf = io.BytesIO()
    image.save(buf, format="WEBP", quality=WEBP_QUALITY, method=0)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def offer_preview(
    on_step: Any,
    step: int,
    total: int,
    latents: torch.Tensor | Callable[[], torch.Tensor | None] | None,
    fmt: LatentPreview,
) -> None:
    """Called by the samplers just before `on_step(step, total)`: when the step callback
    wants a preview of this step (`on_step.wants_preview(step, total)`, see
    contract.PreviewSink), make one and hand it over (`on_step.add_preview(step, url)`).
    Callbacks without those methods get nothing; a preview that fails is logged and
    skipped: it never fails the task."""
    wants = getattr(on_step, "wants_preview", None)
    if wants is None or not wants(step, total):
        return
    try:
        tensor = latents() if callable(latents) else latents
        if tensor is None:
            return
        on_step.add_preview(step, data_url(fmt.image(tensor)))
    except Exception as exc:  # a preview is a nicety: the run goes on without it
        logger.warning("preview at step %d skipped: %s", step, exc)
