"""Memory estimates: the bytes of each part in a storage format, and the activation peak of
each phase of a request. Every figure is a formula over the shipped configs and the request;
the constants below say what they count.

Weights (bytes of one part):
- native: (parameters + buffers) x dtype size (2 for float16/bfloat16).
- fp8 (diffusers layerwise casting): the Linear/Conv parameters diffusers casts
  (`PartCount.fp8_castable`) at 1 byte, the rest (norms, embeddings, proj_in/out) native.
- GGUF: nn.Linear weights whose input width is a multiple of the block (32 weights for Q8_0,
  256 for the k-quants) at the block's bytes per weight (Q8_0 34/32, Q6_K 210/256,
  Q5_K 176/256, Q4_K 144/256); biases, norms and the few narrow layers native.
- NF4 (bitsandbytes, double quantization): nn.Linear weights at 4 bits plus one 8-bit
  absmax per 64 weights and one float32 per 256 absmaxes: 0.5 + 1/64 + 4/16384 bytes.

Activations (bytes, b = the compute dtype's size):
- UNet step, per level l with C_l channels at T_l = (H/8 * W/8) / 4^l latent pixels and a
  batch B = samples x frames x cfg copies:
    B * b * max_l(K_l * C_l * T_l) + B * b * sum_l((layers_per_block + 1) * C_l * T_l)
  K_l = 19 at a level with attention (block input, norm, q, k, v, attention output, output
  projection, GEGLU projection 8C, its gated half 4C), 8 at a ResNet-only level (up-path
  concatenated input 2C, its norm 2C, SiLU, conv out, second norm, conv, shortcut). The sum
  is the skip connections the down path keeps for the up path. Attention goes through
  PyTorch SDPA (flash / memory-efficient kernels): no T x T matrix is stored.
  AnimateDiff's temporal attention works on the same tensors (frames are in B).
- FLUX step: B * b * T * 3072 * 20 with T = (H/16 * W/16) + 512 text tokens: a single-stream
  block holds its input, norm, q/k/v, attention output, the 4x MLP input and its GELU, the
  concatenation (5x) and the output (20 widths in all); SDPA again stores no T x T matrix.
- Text encoders: tokens x (4 x hidden + 2 x feed-forward) x b (one prompt at a time).
- VAE decode at full output size, per decode call of D images/frames:
    D * H * W * (3 * c1 + 2 * c0) * bv
  c0, c1 = the VAE's first two block_out_channels (128, 256): the last upsampler's output
  (c1 channels at full size), its norm and SiLU, then the first full-size ResNet's conv and
  shortcut outputs (c0). bv = 4 when the engine upcasts the VAE to float32 (SDXL's VAE
  overflows in float16: `force_upcast`), which also adds the float32 copy of its weights.
- Fixed: `CONTEXT_BYTES` for the CUDA context, cuBLAS/cuDNN workspaces and the latents, plus
  `FRAGMENTATION` x the activation peak for the caching allocator's unused blocks.
"""

from __future__ import annotations

from toonforge.engine.plan.counting import PartCount, load_config
from toonforge.engine.plan.parts import PartSpec, part_count
from toonforge.engine.plan.request import CLIP_TOKENS, FLUX_TEXT_TOKENS, DefaultRequest

GB = 1024**3
CONTEXT_BYTES = int(0.5 * GB)
FRAGMENTATION = 0.10
K_ATTENTION_LEVEL = 19
K_RESNET_LEVEL = 8
K_FLUX_BLOCK = 20

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# GGUF block sizes: (weights per block, bytes per block)
GGUF_BLOCKS = {
    "gguf-q8_0": (32, 34),
    "gguf-q6_k": (256, 210),
    "gguf-q5_k": (256, 176),
    "gguf-q4_k": (256, 144),
}
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / 16384
QUANTIZATIONS = ("fp8", *GGUF_BLOCKS, "nf4")


def storage_label(quantization: str, dtype: str) -> str:
    return dtype if quantization == "none" else quantization


def weight_bytes(count: PartCount, dtype: str, quantization: str = "none") -> int:
    b = DTYPE_BYTES[dtype]
    total = count.parameters + count.buffers
    if quantization == "none":
        return total * b
    if quantization == "fp8":
        return count.fp8_castable + (total - count.fp8_castable) * b
    if quantization in GGUF_BLOCKS:
        per_block, block_bytes = GGUF_BLOCKS[quantization]
        quantized = count.linear_weights_k32 if per_block == 32 else count.linear_weights_k256
        return round(quantized * block_bytes / per_block) + (total - quantized) * b
    if quantization == "nf4":
        q = count.linear_weights
        return round(q * NF4_BYTES_PER_WEIGHT) + (total - q) * b
    raise ValueError(f"unknown quantization {quantization!r}")


def unet_activation(config: dict, req: DefaultRequest, b: int) -> int:
    h, w = req.height // 8, req.width // 8
    batch = req.denoiser_batch
    per_block = config.get("layers_per_block", 2) + 1
    peak = skips = 0
    for level, (channels, kind) in enumerate(
        zip(config["block_out_channels"], config["down_block_types"], strict=True)
    ):
        tokens = (h * w) // (4**level)
        k = K_ATTENTION_LEVEL if "CrossAttn" in kind or req.frames > 1 else K_RESNET_LEVEL
        peak = max(peak, k * channels * tokens)
        skips += per_block * channels * tokens
    return batch * b * (peak + skips)


def flux_activation(config: dict, req: DefaultRequest, b: int) -> int:
    width = config["num_attention_heads"] * config["attention_head_dim"]
    tokens = (req.height // 16) * (req.width // 16) + FLUX_TEXT_TOKENS
    return req.samples * req.cfg_copies * b * tokens * width * K_FLUX_BLOCK


def text_activation(config: dict, b: int) -> int:
    if "d_model" in config:  # T5
        return FLUX_TEXT_TOKENS * (4 * config["d_model"] + 2 * config["d_ff"]) * b
    return CLIP_TOKENS * (4 * config["hidden_size"] + 2 * config["intermediate_size"]) * b


def vae_upcasts(family: str, config: dict, dtype: str) -> bool:
    """Only the SDXL engine upcasts its VAE to float32 to decode (`engine.sdxl._decode`)."""
    return family == "sdxl" and dtype == "float16" and bool(config.get("force_upcast"))


def vae_activation(
    family: str, config: dict, count: PartCount, req: DefaultRequest, dtype: str
) -> int:
    c0, c1 = config["block_out_channels"][:2]
    upcast = vae_upcasts(family, config, dtype)
    bv = 4 if upcast else DTYPE_BYTES[dtype]
    peak = req.decode_batch * req.height * req.width * (3 * c1 + 2 * c0) * bv
    if upcast:
        peak += (count.parameters + count.buffers) * (4 - DTYPE_BYTES[dtype])
    return peak


def activation(family: str, spec: PartSpec, req: DefaultRequest, dtype: str) -> int:
    """The activation peak while `spec` runs, for the default request."""
    config = load_config(spec.config)
    b = DTYPE_BYTES[dtype]
    if spec.role == "text_encoder":
        return text_activation(config, b)
    if spec.role == "vae":
        return vae_activation(family, config, part_count(spec.config), req, dtype)
    if spec.name == "transformer":
        return flux_activation(config, req, b)
    if spec.name == "motion_adapter":
        return 0  # its tensors are the UNet's (counted with `unet`)
    return unet_activation(config, req, b)
