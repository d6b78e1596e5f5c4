"""Timestep embeddings computed one row at a time, so that a row's values do not depend on
how many rows the UNet call has.

On CPU, a small matmul takes another kernel path at another row count (M): the UNet's
timestep embedding and each resnet's projection of it (`time_emb_proj`, M = batch) gave a row
~1e-7 apart in a batch of 2 and one of 16, enough to move a pixel now and then after a few
steps (which row counts differ depends on the CPU's instruction set: on an AVX-512 machine
already 2 and 4 rows did). The other UNet kernels work on M = batch x pixels or tokens and
measured row-independent (`tests/engine/test_rowwise.py`). Used by the lone sampling loop and
the batched one alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_ROWWISE = "_toonforge_rowwise"


def rowwise_embeddings(unet: Any) -> None:
    """Make the UNet's timestep (and SDXL's added-condition) embeddings, and every resnet's
    projection of them, compute one row at a time (identical rows once), so their values do
    not depend on the batch size. Idempotent; the module tree and the state dict are
    unchanged (only the instances' forward is)."""
    modules = [getattr(unet, name, None) for name in ("time_embedding", "add_embedding")]
    modules += [m for name, m in unet.named_modules() if name.endswith(".time_emb_proj")]
    for module in modules:
        if module is None or getattr(module, _ROWWISE, False):
            continue
        # The instance's own forward: hooks set on it (diffusers' layerwise fp8 casting, group
        # offload) must still run for each row.
        module.forward = _rowwise(module.forward)
        setattr(module, _ROWWISE, True)


def _rowwise(original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def forward(sample: torch.Tensor, *args: Any) -> torch.Tensor:
        if sample.shape[0] <= 1:
            return original(sample, *args)
        if bool((sample == sample[:1]).all()):
            one = original(sample[:1], *args)
            return one.expand(sample.shape[0], *one.shape[1:])
        return torch.cat([original(sample[i : i + 1], *args) for i in range(sample.shape[0])])

    return forward
