"""GGUF-quantized FLUX transformers: loading them, and writing the tiny stand-in's.

The community publishes FLUX.1-dev's transformer quantized in GGUF files (Q8_0, Q6_K, Q5_K_S,
Q4_K_S, ...); diffusers loads them with `from_single_file(..., quantization_config=
GGUFQuantizationConfig(compute_dtype=...))`: the weights stay quantized in memory and each
layer is dequantized when it runs. Block sizes fix the bytes per weight: Q8_0 stores 32
weights in 34 bytes (8.5 bits), the K-quants 256 weights in 210 (Q6_K), 176 (Q5_K) or 144
(Q4_K) bytes.

For tests and offline mode `ensure_tiny_gguf` writes the tiny FLUX transformer's weights in
GGUF with the `gguf` package (diffusers-named tensors, which diffusers loads without
conversion); tensors whose rows are not a whole number of blocks (biases, norms) stay float32,
as the community's converters also keep small tensors unquantized.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from toonforge.engine.contract import ModelError, WeightsMissing
from toonforge.engine.tiny._cache import build_once

logger = logging.getLogger("toonforge.engine")

# Planner name -> GGML type name.
GGUF_TYPES = {"gguf-q8_0": "Q8_0", "gguf-q6_k": "Q6_K", "gguf-q5_k": "Q5_K", "gguf-q4_k": "Q4_K"}
TINY_GGUF_VERSION = "v1"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as exc:
        raise ModelError(
            "GGUF quantization needs the `gguf` package (pip install gguf); or set "
            "TOONFORGE_QUANTIZATION to fp8 or none"
        ) from exc
    return gguf


def ensure_tiny_gguf(base_dir: Path, quantization: str) -> Path:
    """The tiny FLUX transformer of `base_dir` written as a GGUF file of `quantization`."""
    if quantization not in GGUF_TYPES:
        raise ModelError(f"quantization {quantization!r} is not a GGUF type")
    gguf = _gguf()
    qtype = getattr(gguf.GGMLQuantizationType, GGUF_TYPES[quantization])
    target = base_dir.parent / f"tiny-transformer-{TINY_GGUF_VERSION}-{GGUF_TYPES[quantization]}"

    def build(folder: Path) -> None:
        from safetensors.torch import load_file

        block, _type_size = gguf.GGML_QUANT_SIZES[qtype]
        state = load_file(str(base_dir / "transformer" / "diffusion_pytorch_model.safetensors"))
        writer = gguf.GGUFWriter(str(folder / "transformer.gguf"), arch="flux")
        for name, tensor in state.items():
            data = tensor.to(torch.float32).numpy()
            if data.ndim >= 2 and data.shape[-1] % block == 0:
                writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    return build_once(target, build) / "transformer.gguf"


def load_gguf_transformer(path: Path, base_dir: Path, compute_dtype: torch.dtype) -> Any:
    """FLUX's transformer from a GGUF file, the configuration from the base folder."""
    from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig

    _gguf()
    if not path.is_file():
        raise WeightsMissing(f"the GGUF transformer {path.name} is not in the models folder")
    try:
        return FluxTransformer2DModel.from_single_file(
            str(path),
            quantization_config=GGUFQuantizationConfig(compute_dtype=compute_dtype),
            config=str(base_dir),
            subfolder="transformer",
            dtype=compute_dtype,
            local_files_only=True,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"could not load the GGUF transformer {path.name}: {exc}") from exc
