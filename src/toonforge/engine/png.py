"""PNG output with the generation parameters embedded as text chunks.

Besides one chunk per parameter, a `parameters` chunk in AUTOMATIC1111's format is written,
because that is what image viewers and prompt tools in this community read back.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo


def png_bytes(image: Image.Image, text: Mapping[str, Any]) -> bytes:
    info = PngInfo()
    for key, value in text.items():
        if value is None:
            continue
        # iTXt keeps non-Latin-1 prompts intact; tEXt would reject them.
        info.add_itxt(key, str(value))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def a1111_parameters(
    prompt: str,
    negative_prompt: str,
    *,
    steps: int,
    sampler: str,
    scale: float,
    seed: int,
    width: int,
    height: int,
    clip_skip: int,
    model: str,
) -> str:
    lines = [prompt]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(
        f"Steps: {steps}, Sampler: {sampler}, CFG scale: {scale:g}, Seed: {seed}, "
        f"Size: {width}x{height}, Model: {model}, Clip skip: {clip_skip}"
    )
    return "\n".join(lines)
