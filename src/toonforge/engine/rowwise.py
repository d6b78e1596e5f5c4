"""Timestep embeddings computed one row at a time, so that a row's values do not depend on
how many rows the UNet call has.

On CPU, a small matmul takes another kernel path at another row count (M): the UNet's
timestep embedding (M = batch) gave a row ~1e-7 apart in a batch of 2 and one of 16, enough to
move a pixel now and then after a few steps. Every other UNet kernel measured row-independent
for batches of 2 and more. Used by the lone sampling loop and the batched one alike.
"""

from __future__ import annotations

import types
from typing import Any

import torch

_ROWWISE = "_toonforge_rowwise"


def rowwise_embeddings(unet: Any) -> None:
    """Make the UNet's timestep (and SDXL's added-condition) embeddings compute one row at
    a time (identical rows once), so their values do not depend on the batch size. Idempotent;
    the module tree and the state dict are unchanged (only the instances' forward is)."""
    for name in ("time_embedding", "add_embedding"):
        module = getattr(unet, name, None)
        if module is None or getattr(module, _ROWWISE, False):
            continue
        original = type(module).forward

        def forward(self: Any, sample: torch.Tensor, *args: Any, _f: Any = original) -> Any:
            if sample.shape[0] <= 1:
                return _f(self, sample, *args)
            if bool((sample == sample[:1]).all()):
                return _f(self, sample[:1], *args).expand(sample.shape[0], -1)
            rows = [_f(self, sample[i : i + 1], *args) for i in range(sample.shape[0])]
            return torch.cat(rows)

        module.forward = types.MethodType(forward, module)
        setattr(module, _ROWWISE, True)
