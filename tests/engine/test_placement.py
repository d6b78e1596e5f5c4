"""Memory plans applied by the worker: the plan recorded on the task, fp8 layerwise storage
running end to end on the tiny SD 1.5 stand-in."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from engine_support import pixels

from toonforge.catalog.manifest import Manifest
from toonforge.engine.pool import module_bytes
from toonforge.settings import Settings


def test_the_plan_is_recorded_and_nothing_is_forced_on_the_cpu(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]
) -> None:
    info = runtime.prepare(cartoonmix, small_params)
    plan = info["plan"]
    assert plan["applied"] == {"strategy": "none", "quantization": "none"}
    # What the planner says of the real weights on this device (the CPU here).
    assert plan["device"].startswith("cpu") and plan["peak_gb"] > 0 and "fits" in plan


def test_fp8_layerwise_storage_runs_end_to_end(
    tiny_settings: Settings, cartoonmix: Manifest, small_params: dict[str, Any], runtime: Any
) -> None:
    from toonforge.engine.runtime import EngineRuntime

    fp8 = EngineRuntime(tiny_settings.model_copy(update={"quantization": "fp8"}))
    info = fp8.prepare(cartoonmix, small_params)
    assert info["plan"]["applied"]["quantization"] == "fp8"
    (part,) = [p for p in fp8.loaded() if p["part"].startswith("sd15")]
    assert part["part"].endswith("+none+fp8")

    plain_unet = runtime.model_for(cartoonmix, small_params).pipe.unet
    fp8_unet = fp8.model_for(cartoonmix, small_params).pipe.unet
    dtypes = {p.dtype for p in fp8_unet.parameters()}
    assert torch.float8_e4m3fn in dtypes
    # float32 -> float8 for the layers that are cast (norms and embeddings are kept): the
    # UNet must shrink to well under half of its float32 bytes.
    assert module_bytes(fp8_unet) < 0.5 * module_bytes(plain_unet)

    reference = runtime.generate(cartoonmix, small_params, lambda s, t: None, lambda: False)
    stored = fp8.generate(cartoonmix, small_params, lambda s, t: None, lambda: False)
    a = pixels(reference.files[0].data).astype(np.float64)
    b = pixels(stored.files[0].data).astype(np.float64)
    # The stated measure: PSNR of the fp8 image against the float32 one, above 20 dB (random
    # tiny weights are harsher on 3-bit mantissas than trained ones).
    mse = float(np.mean((a - b) ** 2))
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    assert psnr > 20, f"PSNR {psnr:.1f} dB"
