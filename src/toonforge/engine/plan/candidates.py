"""The peak device memory of one way to run a tool: an offload strategy and a storage format.

Strategies (diffusers' names in brackets):
- `none`: every part resident on the device.
- `group` (`apply_group_offloading`, block level, one block per group, with a CUDA stream
  that prefetches the next block): a part with top-level block lists keeps its other
  parameters and two blocks on the device (one without a stream); a part without block lists
  (text encoders, VAE) is offloaded at leaf level (its largest layer, twice with a stream).
- `model` (`enable_model_cpu_offload`): one whole model at a time on the device.
- `sequential` (`enable_sequential_cpu_offload`): one layer at a time.
The peak of a strategy is, over the modules that run one after another (text encoders, the
denoiser(s), the VAE), the largest of: what is on the device while that module runs plus its
activation peak (x 1 + FRAGMENTATION), plus CONTEXT_BYTES. Fully resident holds every module.
"""

from __future__ import annotations

from dataclasses import dataclass

from toonforge.engine.plan.estimate import (
    CONTEXT_BYTES,
    DTYPE_BYTES,
    FRAGMENTATION,
    activation,
    weight_bytes,
)
from toonforge.engine.plan.parts import PartSpec, part_count
from toonforge.engine.plan.request import DefaultRequest

STRATEGIES = ("none", "group", "model", "sequential")


@dataclass(frozen=True)
class Candidate:
    strategy: str
    quantization: str
    peak_bytes: int
    weights_bytes: int  # every part, as stored
    host_bytes: int  # what offloading keeps in host memory (0 when fully resident)
    peak_module: str  # the module running at the peak


def part_storage(spec: PartSpec, quantization: str) -> str:
    """The storage format a part gets under a plan's quantization."""
    return quantization if quantization in spec.quantizations else "none"


def _on_device(spec: PartSpec, strategy: str, stored: int, stream: bool) -> int:
    """Bytes of `spec` on the device while it runs, under an offload strategy."""
    count = part_count(spec.config)
    if strategy == "model":
        return stored
    per_param = stored / max(1, count.parameters + count.buffers)
    copies = 2 if stream else 1
    if strategy == "group" and count.largest_block:
        return round((count.outside_blocks + copies * count.largest_block) * per_param)
    if strategy == "group":
        return round(copies * count.largest_leaf * per_param)
    return round(count.largest_leaf * per_param)  # sequential


def evaluate(
    family: str,
    specs: tuple[PartSpec, ...],
    req: DefaultRequest,
    dtype: str,
    strategy: str,
    quantization: str,
    stream: bool,
) -> Candidate:
    b = DTYPE_BYTES[dtype]
    stored: dict[str, int] = {}
    for spec in specs:
        storage = part_storage(spec, quantization)
        stored[spec.name] = weight_bytes(part_count(spec.config), dtype, storage)
    total = sum(stored.values())
    units: dict[str, list[PartSpec]] = {}
    for spec in specs:
        units.setdefault(spec.unit, []).append(spec)
    peak, where = 0, ""
    for unit, members in units.items():
        act = sum(activation(family, s, req, dtype) for s in members)
        # a quantized layer is expanded to the compute dtype while it runs
        quantized = [s for s in members if part_storage(s, quantization) != "none"]
        if quantized:
            act += max(part_count(s.config).largest_leaf for s in quantized) * b
        act = round(act * (1 + FRAGMENTATION))
        if strategy == "none":
            need = total + act
        else:
            need = sum(_on_device(s, strategy, stored[s.name], stream) for s in members) + act
        if need > peak:
            peak, where = need, unit
    return Candidate(
        strategy=strategy,
        quantization=quantization,
        peak_bytes=peak + CONTEXT_BYTES,
        weights_bytes=total,
        host_bytes=0 if strategy == "none" else total,
        peak_module=where,
    )
