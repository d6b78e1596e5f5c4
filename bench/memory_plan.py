"""The memory plan's activation estimates against measured CUDA peaks.

On a CUDA device, builds parts from the shipped configs with random weights (nothing is
downloaded) in the families' dtypes and measures `torch.cuda.max_memory_allocated` above the
weights for: an SD 1.5 UNet step at CartoonMix's default request (4 samples x 2 for CFG,
512x512), the SD 1.5 VAE decoding one 512x512 image, the SDXL VAE decoding one 1024x1024
image in float32 (as `engine.sdxl` does) and the FLUX VAE decoding 1024x1024 in bfloat16;
it prints each next to `engine.plan.estimate`'s figure. Without CUDA it prints the
estimates only (they are formulas; see estimate.py).

    HF_HUB_OFFLINE=1 python bench/memory_plan.py
"""

from __future__ import annotations

from collections.abc import Callable

from toonforge.engine.plan.counting import build_part, load_config
from toonforge.engine.plan.estimate import GB, unet_activation, vae_activation
from toonforge.engine.plan.parts import part_count
from toonforge.engine.plan.request import DefaultRequest

SD15 = DefaultRequest(512, 512, 4, 1, 2, 1, False)
XL = DefaultRequest(1024, 1024, 1, 1, 1, 1, False)


def estimates() -> dict[str, int]:
    return {
        "sd15 unet step (8 x 64x64 latents)": unet_activation(
            load_config("sd15-unet.json"), SD15, 2
        ),
        "sd15 vae decode 512x512 fp16": vae_activation(
            "sd15", load_config("sd15-vae.json"), part_count("sd15-vae.json"), SD15, "float16"
        ),
        "sdxl vae decode 1024x1024 fp32": vae_activation(
            "sdxl", load_config("sdxl-vae.json"), part_count("sdxl-vae.json"), XL, "float16"
        ),
        "flux vae decode 1024x1024 bf16": vae_activation(
            "flux", load_config("flux-vae.json"), part_count("flux-vae.json"), XL, "bfloat16"
        ),
    }


def measured() -> dict[str, int]:
    import torch

    device = torch.device("cuda")

    def peak(build: Callable[[], object], run: Callable[[object], object]) -> int:
        torch.cuda.empty_cache()
        with torch.device(device):
            model = build()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad():
            run(model)
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        del model
        return extra

    def unet() -> object:
        return build_part(load_config("sd15-unet.json")).to(torch.float16)

    def unet_step(model: object) -> None:
        x = torch.randn(8, 4, 64, 64, device=device, dtype=torch.float16)
        text = torch.randn(8, 77, 768, device=device, dtype=torch.float16)
        model(x, 500, encoder_hidden_states=text)

    def vae(name: str, dtype: torch.dtype) -> Callable[[], object]:
        return lambda: build_part(load_config(name)).to(dtype)

    def decode(channels: int, size: int, dtype: torch.dtype) -> Callable[[object], None]:
        def run(model: object) -> None:
            z = torch.randn(1, channels, size // 8, size // 8, device=device, dtype=dtype)
            model.decode(z)

        return run

    sdxl_upcast = part_count("sdxl-vae.json").parameters * 2  # the float32 copy's extra bytes
    return {
        "sd15 unet step (8 x 64x64 latents)": peak(unet, unet_step),
        "sd15 vae decode 512x512 fp16": peak(
            vae("sd15-vae.json", torch.float16), decode(4, 512, torch.float16)
        ),
        "sdxl vae decode 1024x1024 fp32": peak(
            vae("sdxl-vae.json", torch.float32), decode(4, 1024, torch.float32)
        )
        + sdxl_upcast,
        "flux vae decode 1024x1024 bf16": peak(
            vae("flux-vae.json", torch.bfloat16), decode(16, 1024, torch.bfloat16)
        ),
    }


def main() -> None:
    import torch

    est = estimates()
    got = measured() if torch.cuda.is_available() else {}
    if not got:
        print("no CUDA device: estimates only")
    for name, value in est.items():
        line = f"{name:<38} estimate {value / GB:6.2f} GB"
        if name in got:
            line += f"   measured {got[name] / GB:6.2f} GB   ratio {value / max(1, got[name]):.2f}"
        print(line)


if __name__ == "__main__":
    main()
