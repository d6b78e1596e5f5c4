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


def test_a_gguf_q8_0_flux_transformer_runs_end_to_end(tiny_settings: Settings) -> None:
    from toonforge.catalog import load_catalog
    from toonforge.engine.runtime import EngineRuntime

    toon = load_catalog().by_key("WizardWhitebeard/Toon-Renders")
    assert toon is not None
    params: dict[str, Any] = {
        "prompt": "w1z_r3nd3r, a potato with a face",
        "samples": 1,
        "steps": 3,
        "scale": 3.5,
        "seed": 26355552,
        "width": 64,
        "height": 64,
    }
    plain = EngineRuntime(tiny_settings)
    quant = EngineRuntime(tiny_settings.model_copy(update={"quantization": "gguf-q8_0"}))
    info = quant.prepare(toon, params)
    assert info["plan"]["applied"]["quantization"] == "gguf-q8_0"

    full = plain.model_for(toon, params).pipe.transformer
    q8 = quant.model_for(toon, params).pipe.transformer
    assert any(type(p).__name__ == "GGUFParameter" for p in q8.parameters())
    # Q8_0 keeps 34 bytes per 32 weights where float32 needs 128: the quantized matrices
    # shrink to 34/128 of their size (biases and norms stay float32).
    matrices = [
        n
        for n, p in full.named_parameters()
        if p.ndim == 2 and p.shape[-1] % 32 == 0 and "lora_" not in n  # LoRAs stay float32
    ]
    full_bytes = sum(full.get_parameter(n).nbytes for n in matrices)
    q8_bytes = sum(q8.get_parameter(n).nbytes for n in matrices)
    assert q8_bytes == full_bytes * 34 // 128

    a = pixels(plain.generate(toon, params, lambda s, t: None, lambda: False).files[0].data)
    b = pixels(quant.generate(toon, params, lambda s, t: None, lambda: False).files[0].data)
    # The stated measure: PSNR against the unquantized image above 30 dB (8-bit weights).
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    psnr = 10 * np.log10(255.0**2 / max(mse, 1e-12))
    assert psnr > 30, f"PSNR {psnr:.1f} dB"


def test_a_gpu_pool_leaves_room_for_the_largest_activation_peak() -> None:
    from toonforge.engine.runtime import device_pool_budget

    gb = 1024**3
    # 24 GB card, largest default request needs 4.5 GB of activations: 19.5 GB of parts.
    assert device_pool_budget(64 * gb, 24 * gb, [1.0, 4.5, 2.0]) == int(19.5 * gb)
    # The setting stays a ceiling.
    assert device_pool_budget(16 * gb, 80 * gb, [4.5]) == 16 * gb
    # Nothing planned: the whole device (up to the setting).
    assert device_pool_budget(16 * gb, 12 * gb, []) == 12 * gb
