"""The plan for a tool on the device a worker (or `toonforge models plan`) runs on.

`plan_on_device(manifest, settings, device)` is what the worker calls before loading a tool:
it measures the device (or takes TOONFORGE_GPU_MEMORY_GB), applies the overrides
(TOONFORGE_OFFLOAD / TOONFORGE_QUANTIZATION, then the manifest's backend.offload /
backend.quantization) and the storage formats this machine has packages for, and returns
the `Plan`: `plan.strategy` (none | group | model | sequential), `plan.quantization`
(none | fp8 | gguf-q8_0 | ... | nf4), `plan.use_stream`, `plan.fits` and `plan.message`;
each of `plan.parts` has its storage `dtype` and, under group offloading, its `offload_type`.
Only measuring a CUDA device imports torch.

How a plan maps onto diffusers (for the code that applies it):
- strategy `none`: `pipe.to(device)`; `model`: `pipe.enable_model_cpu_offload(device=...)`;
  `sequential`: `pipe.enable_sequential_cpu_offload(device=...)`;
  `group`: per part, `diffusers.hooks.apply_group_offloading(part, onload_device=device,
  offload_type=part.offload_type, num_blocks_per_group=1, use_stream=plan.use_stream)`
  (diffusers models also have `part.enable_group_offload(...)`).
- a part stored as `fp8`: `part.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn,
  compute_dtype=<plan.compute_dtype>)`; `gguf-*`: the FLUX transformer loaded with
  `FluxTransformer2DModel.from_single_file(<gguf file>, quantization_config=
  GGUFQuantizationConfig(compute_dtype=torch.bfloat16))`; `nf4`: loaded with a
  bitsandbytes config (`load_in_4bit=True, bnb_4bit_quant_type="nf4"`, compute dtype as
  above).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from toonforge.catalog.manifest import Manifest
from toonforge.engine.plan.estimate import GB, GGUF_BLOCKS
from toonforge.engine.plan.planner import Device, Plan, plan_tool
from toonforge.settings import Settings


def available_quantizations(kind: str) -> tuple[str, ...]:
    """Storage formats this machine can run: fp8 layerwise casting always (PyTorch's float8
    dtypes), GGUF with the `gguf` package, NF4 with `bitsandbytes` on CUDA."""
    out = ["fp8"]
    if importlib.util.find_spec("gguf") is not None:
        out += list(GGUF_BLOCKS)
    if kind == "cuda" and importlib.util.find_spec("bitsandbytes") is not None:
        out.append("nf4")
    return tuple(out)


def host_memory_bytes() -> int:
    """Memory the host can give now (MemAvailable), else its physical memory."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cuda_memory(device: Any) -> int:
    """Free memory on a CUDA device plus what this process's allocator already holds."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device))


def detect_device(settings: Settings, device: Any = None) -> Device:
    """The device to plan for. `device`: a torch.device (the worker's); None: the setting
    TOONFORGE_GPU_MEMORY_GB if set, else the first CUDA device if there is one, else the CPU."""
    kind = getattr(device, "type", None)
    if settings.gpu_memory_gb is not None and kind in (None, "cuda"):
        return Device("cuda", int(settings.gpu_memory_gb * GB), "TOONFORGE_GPU_MEMORY_GB")
    if kind == "cuda":
        return Device("cuda", _cuda_memory(device), f"{device} free memory")
    if kind is None and (settings.device == "auto" or settings.device.startswith("cuda")):
        try:
            import torch

            if torch.cuda.is_available():
                name = "cuda" if settings.device == "auto" else settings.device
                target = torch.device(name)
                return Device("cuda", _cuda_memory(target), f"{target} free memory")
        except ImportError:
            pass
    return Device("cpu", host_memory_bytes(), "host memory available")


def overrides(manifest: Manifest, settings: Settings) -> dict[str, Any]:
    """What is forced for this tool: offload and quantization from the settings, else from
    the manifest's backend.offload / backend.quantization, else "auto"; the compute dtype
    from TOONFORGE_DTYPE unless it is "auto" (keyword arguments of `plan_tool`)."""
    backend = manifest.backend
    offload = settings.offload if settings.offload != "auto" else (backend.offload or "auto")
    quant = settings.quantization
    if quant == "auto":
        quant = backend.quantization or "auto"
    dtype = None if settings.dtype == "auto" else settings.dtype
    return {"offload": offload, "quantization": quant, "dtype": dtype}


def plan_on_device(manifest: Manifest, settings: Settings, device: Any = None) -> Plan:
    """The memory plan for `manifest`'s default request on this machine's device."""
    target = detect_device(settings, device)
    return plan_tool(
        manifest,
        target,
        **overrides(manifest, settings),
        available=available_quantizations(target.kind),
        host_memory=host_memory_bytes(),
    )
