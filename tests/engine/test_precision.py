"""The dtype each family runs in, and FLUX really running in bfloat16 (tiny, on the CPU)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from engine_support import pixels

from toonforge.catalog import load_catalog
from toonforge.engine.precision import choose_precision
from toonforge.settings import Settings

CUDA = torch.device("cuda", 0)
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("family", "expected"),
    [("flux", "bfloat16"), ("sd15", "float16"), ("sdxl", "float16"), ("animatediff", "float16")],
)
def test_family_defaults_on_a_gpu(family: str, expected: str) -> None:
    assert choose_precision(family, CUDA, bf16=True).name == expected


@pytest.mark.parametrize("family", ["flux", "sd15", "sdxl", "animatediff"])
def test_the_cpu_defaults_to_float32(family: str) -> None:
    assert choose_precision(family, CPU).name == "float32"


def test_flux_on_a_gpu_without_bfloat16_falls_back_to_float32_and_says_why() -> None:
    chosen = choose_precision("flux", CUDA, bf16=False)
    assert chosen.dtype == torch.float32
    assert "bfloat16" in chosen.note and "float16" in chosen.note
    # The SD families are fine in float16 there.
    sd = choose_precision("sd15", CUDA, "bfloat16", bf16=False)
    assert sd.dtype == torch.float16 and sd.note


def test_setting_wins_over_manifest_which_wins_over_family() -> None:
    assert choose_precision("flux", CUDA, "auto", "float16", bf16=True).name == "float16"
    assert choose_precision("flux", CUDA, "float32", "float16", bf16=True).name == "float32"
    assert choose_precision("sd15", CPU, "auto", "bfloat16").name == "bfloat16"


def test_an_unknown_dtype_names_itself() -> None:
    with pytest.raises(ValueError, match="float8"):
        choose_precision("sd15", CPU, "float8")


def test_manifest_dtype_is_validated() -> None:
    manifest = load_catalog().by_key("WizardWhitebeard/Toon-Renders")
    assert manifest is not None
    data = manifest.model_dump()
    data["backend"]["dtype"] = "float8"
    with pytest.raises(ValueError, match="dtype"):
        type(manifest).model_validate(data)


def test_flux_runs_in_bfloat16_on_the_cpu(tiny_settings: Settings) -> None:
    from toonforge.engine.runtime import EngineRuntime

    manifest = load_catalog().by_key("WizardWhitebeard/Toon-Renders")
    assert manifest is not None
    data = manifest.model_dump()
    data["backend"]["dtype"] = "bfloat16"
    bf16_tool = type(manifest).model_validate(data)
    runtime = EngineRuntime(tiny_settings)
    params: dict[str, Any] = {
        "prompt": "w1z_r3nd3r, a potato with a face",
        "samples": 1,
        "steps": 3,
        "scale": 3.5,
        "seed": 26355552,
        "width": 64,
        "height": 64,
    }
    info = runtime.prepare(bf16_tool, params)
    assert info["precision"] == "bfloat16" and info["device"] == "cpu"
    result = runtime.generate(bf16_tool, params, lambda s, t: None, lambda: False)
    assert result.info["dtype"] == "bfloat16"
    image = pixels(result.files[0].data)
    assert image.shape == (64, 64, 3) and np.isfinite(image).all() and image.std() > 0
    # The float32 copy of the same files is a separate part: both are in the pool.
    float32 = runtime.generate(manifest, params, lambda s, t: None, lambda: False)
    assert float32.info["dtype"] == "float32"
    dtypes = {p["part"].rsplit("@", 1)[1] for p in runtime.loaded() if p["part"].startswith("flux")}
    assert dtypes == {"bfloat16", "float32"}
