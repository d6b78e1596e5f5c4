"""The memory planner on the five built-in tools, at the GPU sizes users own."""

from __future__ import annotations

import subprocess
import sys

import pytest

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest
from toonforge.engine.plan.counting import load_config
from toonforge.engine.plan.estimate import (
    GB,
    NF4_BYTES_PER_WEIGHT,
    QUANTIZATIONS,
    flux_activation,
    unet_activation,
    vae_activation,
    weight_bytes,
)
from toonforge.engine.plan.on_device import detect_device, plan_on_device
from toonforge.engine.plan.parts import part_count
from toonforge.engine.plan.planner import Device, images_that_fit, plan_tool
from toonforge.engine.plan.request import DefaultRequest, default_request, request_for
from toonforge.settings import load_settings

TOOLS = list(load_catalog([]))
FLUX = [m for m in TOOLS if m.backend.family == "flux"]
# what a machine with only PyTorch has, and one with the gguf and bitsandbytes packages
AVAILABILITY = [("fp8",), QUANTIZATIONS]


def cuda(gb: float) -> Device:
    return Device("cuda", int(gb * GB), "test")


def _tool(key: str) -> Manifest:
    return next(m for m in TOOLS if m.key == key)


@pytest.mark.parametrize("available", AVAILABILITY)
@pytest.mark.parametrize("gb", [12, 16, 24, 80])
def test_every_tool_gets_a_plan_that_fits(gb: int, available: tuple[str, ...]) -> None:
    for manifest in TOOLS:
        plan = plan_tool(manifest, cuda(gb), available=available)
        assert plan.fits, (manifest.key, plan.message)
        assert plan.peak_gb <= gb, (manifest.key, plan.peak_gb)
        assert not plan.message


@pytest.mark.parametrize("gb", [12, 16, 20, 24, 32])
def test_flux_is_not_resident_in_bfloat16_below_40_gb(gb: int) -> None:
    for manifest in FLUX:
        plan = plan_tool(manifest, cuda(gb))
        assert plan.compute_dtype == "bfloat16"
        assert (plan.strategy, plan.quantization) != ("none", "none"), plan


def test_flux_is_resident_in_bfloat16_on_80_gb() -> None:
    plan = plan_tool(FLUX[0], cuda(80))
    assert (plan.strategy, plan.quantization, plan.fits) == ("none", "none", True)
    # 11.9 B + 4.76 B + 123 M + 84 M parameters at 2 bytes
    assert 31 < plan.weights_gb < 32
    assert [p.dtype for p in plan.parts] == ["bfloat16"] * 4


def test_stable_diffusion_families_are_float16() -> None:
    for manifest in TOOLS:
        plan = plan_tool(manifest, cuda(24))
        expected = "bfloat16" if manifest.backend.family == "flux" else "float16"
        assert plan.compute_dtype == expected


def test_at_4_gb_it_says_what_cannot_fit() -> None:
    plans = {m.key: plan_tool(m, cuda(4), available=("fp8",)) for m in TOOLS}
    failing = {k: p for k, p in plans.items() if not p.fits}
    assert set(failing) == {"wiro/animate-diff", "retroAIx/Retro-Cartoons"}
    for plan in failing.values():
        assert plan.peak_gb > 4
        assert f"does not fit in 4.0 GB: {plan.request} needs at least" in plan.message
        assert "Device memory needed per option: " in plan.message
        assert set(plan.needs_gb) >= {"sequential"} or any(
            k.startswith("sequential") for k in plan.needs_gb
        )
        assert "a smaller request fits: " in plan.message, plan.message
    # the smaller request it names does fit
    manifest = _tool("wiro/animate-diff")
    assert "512x512, 6 frames" in failing[manifest.key].message
    smaller = DefaultRequest(512, 512, 1, 6, 2, 6, False)
    assert plan_tool(manifest, cuda(4), available=("fp8",), request=smaller).fits
    # the VAE decode at full size is what does not fit: no storage format helps
    assert failing[manifest.key].peak_module == "vae"


def test_nothing_fits_a_tiny_device_and_it_says_so() -> None:
    plan = plan_tool(_tool("WizardWhitebeard/Toon-Renders"), cuda(0.5))
    assert not plan.fits
    assert "no smaller request fits" in plan.message


def test_preference_order_on_a_16_gb_card() -> None:
    sd15 = plan_tool(_tool("futurist/CartoonMix v1.0"), cuda(16))
    assert (sd15.strategy, sd15.quantization) == ("none", "none")
    flux = plan_tool(FLUX[0], cuda(16))
    assert (flux.strategy, flux.quantization, flux.use_stream) == ("group", "none", True)
    assert flux.host_gb == flux.weights_gb  # offloaded weights wait in host memory
    types = {p.name: p.offload_type for p in flux.parts}
    assert types == {
        "transformer": "block_level",  # its transformer_blocks / single_transformer_blocks
        "text_encoder": "leaf_level",  # a transformers model: no top-level block list
        "text_encoder_2": "leaf_level",
        "vae": "leaf_level",
    }
    assert {p.offload_type for p in sd15.parts} == {""}


def test_host_memory_moves_flux_to_lower_precision() -> None:
    """With 24 GB of host RAM, FLUX's 31 GB of bfloat16 weights cannot wait there."""
    plan = plan_tool(FLUX[0], cuda(16), available=QUANTIZATIONS, host_memory=24 * GB)
    assert plan.fits and plan.quantization != "none"
    assert plan.host_gb <= 24
    transformer = next(p for p in plan.parts if p.name == "transformer")
    assert transformer.dtype == plan.quantization


def test_overrides_narrow_the_choice() -> None:
    tool = FLUX[0]
    plan = plan_tool(tool, cuda(24), offload="model")
    assert plan.strategy == "model"
    plan = plan_tool(tool, cuda(24), quantization="gguf-q4_k")
    assert plan.quantization == "gguf-q4_k" and plan.fits
    transformer = next(p for p in plan.parts if p.name == "transformer")
    assert transformer.dtype == "gguf-q4_k"
    assert transformer.bytes < 7 * GB
    t5 = next(p for p in plan.parts if p.name == "text_encoder_2")
    assert t5.dtype == "bfloat16"  # GGUF is for the FLUX transformer only
    # forced and not fitting: said, not silently replaced
    plan = plan_tool(tool, cuda(12), offload="none", quantization="none")
    assert not plan.fits and plan.strategy == "none"
    assert "without the forced offload/quantization, group fits" in plan.message
    # a storage format this machine lacks is planned as asked, and said
    plan = plan_tool(tool, cuda(24), quantization="gguf-q8_0", available=("fp8",))
    assert plan.fits and plan.quantization == "gguf-q8_0"
    assert "gguf-q8_0 was asked for but needs the gguf package" in plan.message
    # a storage format none of the parts takes is no quantization at all
    plan = plan_tool(_tool("futurist/CartoonMix v1.0"), cuda(12), quantization="gguf-q8_0")
    assert plan.quantization == "none"


def test_settings_and_manifest_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    tool = FLUX[0]
    custom = tool.model_copy(
        update={"backend": tool.backend.model_copy(update={"quantization": "fp8"})}
    )
    settings = load_settings(gpu_memory_gb=24)
    assert detect_device(settings) == Device("cuda", 24 * GB, "TOONFORGE_GPU_MEMORY_GB")
    assert plan_on_device(custom, settings).quantization == "fp8"
    settings = load_settings(gpu_memory_gb=24, quantization="none", offload="model")
    plan = plan_on_device(custom, settings)
    assert (plan.strategy, plan.quantization) == ("model", "none")
    monkeypatch.setenv("TOONFORGE_GPU_MEMORY_GB", "16")
    monkeypatch.setenv("TOONFORGE_OFFLOAD", "sequential")
    plan = plan_on_device(tool, load_settings())
    assert plan.strategy == "sequential" and plan.memory_gb == 16


def test_dtype_setting_is_the_compute_dtype() -> None:
    plan = plan_on_device(FLUX[0], load_settings(gpu_memory_gb=80, dtype="float32"))
    assert plan.compute_dtype == "float32"
    assert 62 < plan.weights_gb < 63  # 16.8 B parameters at 4 bytes
    assert (plan.strategy, plan.fits) == ("none", True) and plan.peak_gb > 66
    plan = plan_on_device(FLUX[0], load_settings(gpu_memory_gb=48, dtype="float32"))
    # bfloat16 would be resident on 48 GB, float32 is not (group offloading, or fp8 storage
    # where the host's memory cannot hold 62 GB of offloaded weights)
    assert (plan.strategy, plan.quantization) != ("none", "none")


def test_unknown_override_values_are_refused() -> None:
    with pytest.raises(ValueError, match="offload"):
        load_settings(offload="disk")
    with pytest.raises(ValueError, match="quantization"):
        load_settings(quantization="int3")


def test_cpu_plans_are_float32_and_resident() -> None:
    plan = plan_tool(_tool("futurist/CartoonMix v1.0"), Device("cpu", 20 * GB, "host"))
    assert (plan.strategy, plan.compute_dtype, plan.fits) == ("none", "float32", True)


def test_storage_formats_shrink_the_flux_transformer() -> None:
    count = part_count("flux-transformer.json")
    sizes = [weight_bytes(count, "bfloat16", q) for q in ("none", *QUANTIZATIONS)]
    bf16, fp8, q8, q6, q5, q4, nf4 = sizes
    assert bf16 == 2 * count.parameters
    assert bf16 > fp8 > q8 > q6 > q5 > q4
    # GGUF: bytes per weight from the block sizes, on the Linear weights it quantizes
    assert q4 == round(count.linear_weights_k256 * 144 / 256) + 2 * (
        count.parameters - count.linear_weights_k256
    )
    assert q8 == round(count.linear_weights_k32 * 34 / 32) + 2 * (
        count.parameters - count.linear_weights_k32
    )
    assert nf4 == round(count.linear_weights * NF4_BYTES_PER_WEIGHT) + 2 * (
        count.parameters - count.linear_weights
    )
    # city96/FLUX.1-dev-gguf publishes Q8_0 12.7 GB, Q6_K 9.86 GB, Q5_K_S 8.29 GB and
    # Q4_K_S 6.81 GB files (decimal GB; they keep a few more tensors in higher precision)
    for size, published in zip((q8, q6, q5, q4), (12.7e9, 9.86e9, 8.29e9, 6.81e9), strict=True):
        assert abs(size - published) <= 0.02 * published, (size, published)


def test_activation_formulas() -> None:
    req = DefaultRequest(512, 512, 1, 1, 2, 1, False)
    # SD VAE decode at 512x512: 512*512 pixels x (3*256 + 2*128) channels x 2 bytes
    vae = load_config("sd15-vae.json")
    assert vae_activation("sd15", vae, part_count("sd15-vae.json"), req, "float16") == (
        512 * 512 * 1024 * 2
    )
    # SDXL's VAE decodes in float32 (upcast): 4-byte tensors plus its float32 weights
    sdxl_vae = load_config("sdxl-vae.json")
    count = part_count("sdxl-vae.json")
    upcast = vae_activation("sdxl", sdxl_vae, count, req, "float16")
    assert upcast == 512 * 512 * 1024 * 4 + count.parameters * 2
    # FLUX at 1024x1024: (64*64 image + 512 text tokens) x 3072 x 20 widths x 2 bytes
    flux_req = DefaultRequest(1024, 1024, 1, 1, 1, 1, False)
    assert flux_activation(load_config("flux-transformer.json"), flux_req, 2) == (
        4608 * 3072 * 20 * 2
    )
    # SD1.5 UNet at 512x512, batch 2: the top level's attention block dominates
    unet = unet_activation(load_config("sd15-unet.json"), req, 2)
    top = 19 * 320 * 64 * 64
    skips = 3 * (320 * 4096 + 640 * 1024 + 1280 * 256 + 1280 * 64)
    assert unet == 2 * 2 * (top + skips)


def test_default_request_is_what_gets_planned() -> None:
    for manifest in TOOLS:
        plan = plan_tool(manifest, cuda(24))
        assert plan.request == default_request(manifest).describe()


def test_planning_imports_no_torch() -> None:
    code = (
        "import sys, toonforge.engine.plan.on_device, toonforge.cli.plan_cmd; "
        "from toonforge.catalog import load_catalog; "
        "from toonforge.engine.plan.planner import plan_tool, Device; "
        "[plan_tool(m, Device('cuda', 12 * 2**30, 't')) for m in load_catalog([])]; "
        "bad = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("key", "gb"), [("futurist/CartoonMix v1.0", 4), ("WizardWhitebeard/Toon-Renders", 3)]
)
def test_a_batch_holds_the_most_images_the_plan_fits(key: str, gb: int) -> None:
    """The cap on a batch's images from the memory plan: n images of the task's size fit on
    the device under the tool's plan, n + 1 do not (a full-sized device takes the cap)."""
    from dataclasses import replace

    tool = _tool(key)
    device = cuda(gb)
    plan = plan_tool(tool, device)
    assert plan.fits
    req = request_for(tool, {"width": 512, "height": 512, "scale": 7, "negativePrompt": ""})
    n = images_that_fit(tool, device, plan, req, 16)
    assert 1 < n < 16

    def fits(samples: int) -> bool:
        forced = plan_tool(
            tool,
            device,
            offload=plan.strategy,
            quantization=plan.quantization,
            request=replace(req, samples=samples),
        )
        return forced.fits

    assert fits(n) and not fits(n + 1)
    assert images_that_fit(tool, cuda(80), plan, req, 16) == 16
    assert images_that_fit(tool, device, plan, req, 1) == 1


def test_a_task_request_takes_its_size_and_guidance() -> None:
    sd = _tool("futurist/CartoonMix v1.0")
    assert request_for(sd, {"width": 320, "height": 448, "scale": 1}).cfg_copies == 1
    req = request_for(sd, {"width": 320, "height": 448, "scale": 6})
    assert (req.width, req.height, req.cfg_copies) == (320, 448, 2)
    flux = _tool("WizardWhitebeard/Toon-Renders")
    assert request_for(flux, {"negativePrompt": "blurry"}).cfg_copies == 1  # no true CFG
