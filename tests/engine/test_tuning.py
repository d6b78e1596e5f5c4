"""Throughput knobs: applied to a freshly loaded pipeline, recorded, and harmless to results."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from engine_support import pixels

from toonforge.catalog.manifest import Manifest
from toonforge.settings import Settings


def test_knobs_are_applied_on_load_and_recorded(
    tiny_settings: Settings, cartoonmix: Manifest, small_params: dict[str, Any], runtime: Any
) -> None:
    from toonforge.engine.runtime import EngineRuntime

    tuned = EngineRuntime(
        tiny_settings.model_copy(
            update={"vae_slicing": "on", "vae_tiling": "on", "channels_last": True}
        )
    )
    info = tuned.prepare(cartoonmix, small_params)
    (event,) = [e for e in info["parts"] if not e["reused"]]
    assert event["tuning"]["vae_slicing"] and event["tuning"]["vae_tiling"]
    assert event["tuning"]["channels_last"] is True
    # diffusers' default on torch 2: scaled-dot-product attention.
    assert event["tuning"]["attention"] == ["AttnProcessor2_0"]
    pipe = tuned.model_for(cartoonmix, small_params).pipe
    assert pipe.vae.use_slicing and pipe.vae.use_tiling
    conv = pipe.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)

    params = {**small_params, "samples": 2}
    plain = runtime.generate(cartoonmix, params, lambda s, t: None, lambda: False)
    knobs = tuned.generate(cartoonmix, params, lambda s, t: None, lambda: False)
    for a, b in zip(plain.files, knobs.files, strict=True):
        # Same images up to the last float bits (memory layout and one-at-a-time decode).
        assert np.abs(pixels(a.data) - pixels(b.data)).max() <= 2


def test_on_the_cpu_auto_leaves_the_vae_alone(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]
) -> None:
    pipe = runtime.model_for(cartoonmix, small_params).pipe
    assert not pipe.vae.use_slicing and not pipe.vae.use_tiling
