"""Exact parameter counts of a part, from its shipped config, on the meta device.

The part is built with its diffusers/transformers class inside `torch.device("meta")`: every
tensor has a shape and a dtype but no storage, so nothing is downloaded and no memory is
used. Besides the totals, the count records what the planner needs to size offloading and
quantization: the largest leaf module (sequential offload moves one at a time), the largest
block of a top-level ModuleList and the parameters outside such lists (diffusers' block-level
group offloading moves one block at a time and keeps the rest as one more group), and the
weights of `nn.Linear` layers (what GGUF and NF4 quantize).

Importing this module does not import torch; `count_part` does.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class PartCount:
    config: str  # file name in configs/
    parameters: int
    buffers: int
    # as the class builds them (before any cast): {"float32": n, ...}
    parameters_by_dtype: dict[str, int] = field(default_factory=dict)
    buffers_by_dtype: dict[str, int] = field(default_factory=dict)
    largest_leaf: int = 0  # parameters of the largest module without children
    largest_block: int = 0  # parameters of the largest child of a top-level ModuleList
    outside_blocks: int = 0  # parameters not in a top-level ModuleList
    linear_weights: int = 0  # weights (not biases) of nn.Linear layers
    # nn.Linear weights whose input width is a multiple of 256 (k-quant super-blocks) / 32
    linear_weights_k256: int = 0
    linear_weights_k32: int = 0
    # parameters diffusers' layerwise casting stores in fp8: Linear/Conv layers whose names
    # do not match the model's skip patterns (norms, embeddings, proj_in/proj_out)
    fp8_castable: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def load_config(name: str) -> dict[str, Any]:
    return json.loads((CONFIG_DIR / name).read_text())


def build_part(config: dict[str, Any]) -> Any:
    """The part's module, built from its config on the current default device."""
    # Built in the classes' default precision (float32): the storage dtype is the planner's.
    config = {k: v for k, v in config.items() if k not in ("torch_dtype", "dtype")}
    cls_name = config.get("_class_name") or config["architectures"][0]
    if "_class_name" in config:
        import diffusers

        cls = getattr(diffusers, cls_name)
        return cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    import transformers

    cls = getattr(transformers, cls_name)
    config_cls = cls.config_class
    return cls(config_cls.from_dict(config))


def _params(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def count_part(name: str) -> PartCount:
    """Build `configs/<name>` on the meta device and count it."""
    import torch
    from torch import nn

    config = load_config(name)
    with torch.device("meta"):
        model = build_part(config)
    by_dtype: Counter[str] = Counter()
    for p in model.parameters():
        by_dtype[str(p.dtype).removeprefix("torch.")] += p.numel()
    buf_dtype: Counter[str] = Counter()
    for b in model.buffers():
        buf_dtype[str(b.dtype).removeprefix("torch.")] += b.numel()
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    largest_leaf = max((_params(m) for m in leaves), default=0)
    blocks = [
        block
        for child in model.children()
        if isinstance(child, nn.ModuleList | nn.Sequential)
        for block in child
    ]
    in_blocks = sum(_params(b) for b in blocks)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    castable = _fp8_castable(model)
    return PartCount(
        config=name,
        parameters=sum(by_dtype.values()),
        buffers=sum(buf_dtype.values()),
        parameters_by_dtype=dict(sorted(by_dtype.items())),
        buffers_by_dtype=dict(sorted(buf_dtype.items())),
        largest_leaf=largest_leaf,
        largest_block=max((_params(b) for b in blocks), default=0),
        outside_blocks=sum(by_dtype.values()) - in_blocks,
        linear_weights=sum(m.weight.numel() for m in linears),
        linear_weights_k256=sum(m.weight.numel() for m in linears if m.in_features % 256 == 0),
        linear_weights_k32=sum(m.weight.numel() for m in linears if m.in_features % 32 == 0),
        fp8_castable=castable,
    )


def _fp8_castable(model: Any) -> int:
    """What `enable_layerwise_casting` would store in fp8 (diffusers' own rules)."""
    import re

    from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
    from diffusers.hooks.layerwise_casting import DEFAULT_SKIP_MODULES_PATTERN

    patterns = getattr(model, "_skip_layerwise_casting_patterns", None) or ()
    patterns = tuple(patterns) + DEFAULT_SKIP_MODULES_PATTERN
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
            continue
        if any(re.search(p, name) for p in patterns):
            continue
        total += sum(p.numel() for p in module.parameters(recurse=False))
    return total
