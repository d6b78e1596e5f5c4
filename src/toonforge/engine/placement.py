"""Putting a loaded pipeline on its device the way the memory plan says.

The runtime computes the plan for a tool (engine/plan) and sets it for the load
(`placing(...)`); each family's loader calls `place_pipeline(pipe, device)` where it used to
call `pipe.to(device)`. What is applied:

- storage `fp8`: the denoiser's weights are stored in float8 (e4m3) and cast layer by layer
  to the compute dtype when used (diffusers' layerwise casting): a quarter of float32's
  bytes, half of bfloat16's, with normalization and embedding layers kept as they are;
- strategy `none`: the whole pipeline on the device; `model`: model CPU offload (each
  component moves to the device while it runs); `sequential`: sequential CPU offload (each
  leaf module; the least memory, the slowest); `group`: group offloading, block by block,
  with CUDA streams to overlap transfers where the plan says so.

Which plan is *applied* (as opposed to reported): on a GPU, the planner's own choice; on the
CPU, and for tiny stand-ins whose sizes have nothing to do with the real weights' plan, only
what TOONFORGE_OFFLOAD / TOONFORGE_QUANTIZATION or the manifest force.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from toonforge.engine.contract import ModelError

logger = logging.getLogger("toonforge.engine")

DENOISERS = ("unet", "transformer")


@dataclass(frozen=True)
class Placement:
    strategy: str = "none"  # none | group | model | sequential
    quantization: str = "none"  # none | fp8 | gguf-q8_0 ... | nf4 (the last two at load)
    use_stream: bool = False

    @property
    def key(self) -> str:
        """Part-key suffix: the same files placed differently are different parts."""
        if self.strategy == "none" and self.quantization == "none":
            return ""
        return f"+{self.strategy}+{self.quantization}"


RESIDENT = Placement()
_current: contextvars.ContextVar[Placement | None] = contextvars.ContextVar(
    "toonforge_placement", default=None
)


@contextmanager
def placing(placement: Placement) -> Iterator[None]:
    token = _current.set(placement)
    try:
        yield
    finally:
        _current.reset(token)


def current_placement() -> Placement:
    return _current.get() or RESIDENT


def place_pipeline(pipe: Any, device: torch.device) -> dict[str, Any]:
    """Store and place `pipe` as the current placement says; what was done."""
    placement = current_placement()
    done: dict[str, Any] = {}
    if placement.quantization == "fp8":
        for name in DENOISERS:
            module = getattr(pipe, name, None)
            if module is not None and hasattr(module, "enable_layerwise_casting"):
                module.enable_layerwise_casting(
                    storage_dtype=torch.float8_e4m3fn, compute_dtype=module.dtype
                )
                done["fp8"] = name
    elif placement.quantization.startswith("gguf-") or placement.quantization == "nf4":
        # Chosen while loading (engine/flux.py): only FLUX transformers are stored so.
        if not any(
            type(getattr(pipe, n, None)).__name__ == "FluxTransformer2DModel" for n in DENOISERS
        ):
            raise ModelError(
                f"quantization {placement.quantization!r} is for FLUX transformers; set "
                "TOONFORGE_QUANTIZATION to fp8 or none for this tool"
            )
        done["quantization"] = placement.quantization
    elif placement.quantization != "none":
        raise ModelError(f"quantization: unknown storage {placement.quantization!r}")
    strategy = placement.strategy
    if strategy != "none" and device.type == "cpu":
        logger.info("offload strategy %s means nothing on the CPU: ignored", strategy)
        strategy = "none"
    if strategy == "none":
        pipe.to(device)
    elif strategy == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif strategy == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif strategy == "group":
        pipe.enable_group_offload(
            onload_device=device,
            offload_device=torch.device("cpu"),
            offload_type="block_level",
            num_blocks_per_group=1,
            use_stream=placement.use_stream,
        )
    else:
        raise ModelError(f"offload: unknown strategy {strategy!r}")
    done["strategy"] = strategy
    return done
