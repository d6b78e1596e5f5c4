"""Timestep embeddings computed one row at a time, so that a row's values do not depend on
how many rows the UNet call has.

On CPU, a small matmul takes another kernel path at another row count (M): the UNet's
timestep embedding and each resnet's projection of it (`time_emb_proj`, M = batch) gave a row
~1e-7 apart in a batch of 2 and one of 16, enough to move a pixel now and then after a few
steps (which row counts differ depends on the CPU's instruction set: on an AVX-512 machine
already 2 and 4 rows did). The other UNet kernels work on M = batch x pixels or tokens and
measured row-independent (`tests/engine/test_rowwise.py`). Used by the lone sampling loop and
the batched one alike.

FLUX's transformer has the same kind of small matmuls: its timestep, guidance and pooled-text
embeddings and every block's adaptive-norm modulation (`norm1.linear`, `norm1_context.linear`,
`norm.linear`, `norm_out.linear`, M = batch). Without row-wise ones, sample i of a 4-sample
FLUX run differed from the same seed run alone by one level in some pixels (tiny FLUX, this
CPU); with them, none did at 2, 4 or 8 samples (`tests/engine/test_flux_generate.py`).
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
    _make_rowwise(modules)


# The FLUX transformer's modules whose input is one row per image (module names of diffusers'
# FluxTransformer2DModel).
_FLUX_EMBEDDINGS = ("timestep_embedder", "guidance_embedder", "text_embedder")
_FLUX_MODULATION = ("norm1.linear", "norm1_context.linear", "norm.linear")


def rowwise_flux(transformer: Any) -> None:
    """The same for a FLUX transformer: its timestep, guidance and pooled-text embeddings and
    every block's adaptive-norm modulation. Call it before each run (it is idempotent): a
    LoRA loaded meanwhile may have wrapped a modulation layer in a new module, which is then
    made row-wise as a whole (base layer and LoRA)."""
    embed = getattr(transformer, "time_text_embed", None)
    modules = [getattr(embed, name, None) for name in _FLUX_EMBEDDINGS]
    modules.append(getattr(getattr(transformer, "norm_out", None), "linear", None))
    for name, module in transformer.named_modules():
        if name.startswith(("transformer_blocks.", "single_transformer_blocks.")) and any(
            name.endswith(f".{tail}") for tail in _FLUX_MODULATION
        ):
            modules.append(module)
    _make_rowwise(modules)


def _make_rowwise(modules: list[Any]) -> None:
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
