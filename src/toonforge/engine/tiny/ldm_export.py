"""Diffusers state dicts -> the original (LDM / CompVis) single-file key layout.

Single-file SD1.5 checkpoints such as CartoonMix are published in the LDM layout, and
production loads them with `from_single_file`. To exercise that same loader on tiny stand-ins
we need to write the layout, and diffusers only converts the other way. This module is the
inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and the
`cond_stage_model.transformer.` CLIP prefix, written for any block count; the tests prove it by
round trip (export -> `from_single_file` -> bit-identical parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

_UNET_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}


class ExportError(ValueError):
    """A diffusers key has no LDM counterpart (an architecture this exporter does not know)."""


def _split(key: str, prefix: str) -> str | None:
    return key[len(prefix) :] if key.startswith(prefix) else None


def _resnet_rest(rest: str) -> str:
    for old, new in _UNET_RESNET:
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    raise ExportError(f"unknown UNet resnet parameter {rest!r}")


def unet_key_map(keys: list[str], config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers UNet2DConditionModel key -> LDM key (without the `model.diffusion_model.`)."""
    per_block = int(config["layers_per_block"])
    # The upsampler sits after the attention when its block has one (slot 2), else slot 1.
    with_attn = {
        k.split(".")[1] for k in keys if k.startswith("up_blocks.") and ".attentions." in k
    }
    return {key: _unet_key(key, per_block, with_attn) for key in keys}


def _unet_key(key: str, per_block: int, up_with_attn: set[str]) -> str:
    module, _, param = key.rpartition(".")
    if module in _UNET_FIXED:
        return f"{_UNET_FIXED[module]}.{param}"
    parts = key.split(".")
    if parts[0] == "down_blocks":
        block = int(parts[1])
        kind, rest = parts[2], ".".join(parts[4:])
        if kind == "downsamplers":  # downsamplers.0.conv.* -> input_blocks.N.0.op.*
            index = 1 + block * (per_block + 1) + per_block
            return f"input_blocks.{index}.0.op.{rest.removeprefix('conv.')}"
        index = 1 + block * (per_block + 1) + int(parts[3])
        if kind == "resnets":
            return f"input_blocks.{index}.0.{_resnet_rest(rest)}"
        if kind == "attentions":
            return f"input_blocks.{index}.1.{rest}"
    elif parts[0] == "mid_block":
        kind, layer, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":  # resnet, attention, resnet -> middle_block.0 / .1 / .2
            return f"middle_block.{layer * 2}.{_resnet_rest(rest)}"
        if kind == "attentions":
            return f"middle_block.{layer * 2 + 1}.{rest}"
    elif parts[0] == "up_blocks":
        block = int(parts[1])
        kind, rest = parts[2], ".".join(parts[4:])
        if kind == "upsamplers":
            index = block * (per_block + 1) + per_block
            slot = 2 if parts[1] in up_with_attn else 1
            return f"output_blocks.{index}.{slot}.{rest}"
        index = block * (per_block + 1) + int(parts[3])
        if kind == "resnets":
            return f"output_blocks.{index}.0.{_resnet_rest(rest)}"
        if kind == "attentions":
            return f"output_blocks.{index}.1.{rest}"
    raise ExportError(f"no LDM name for UNet parameter {key!r}")


def vae_key_map(keys: list[str], config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers AutoencoderKL key -> LDM key (without the `first_stage_model.`)."""
    n_up = len(config["up_block_types"])
    return {key: _vae_key(key, n_up) for key in keys}


def _vae_key(key: str, n_up: int) -> str:
    if key.startswith(("quant_conv.", "post_quant_conv.")):
        return key
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        raise ExportError(f"no LDM name for VAE parameter {key!r}")
    parts = rest.split(".")
    if parts[0] in ("conv_in", "conv_out"):
        return key
    if parts[0] == "conv_norm_out":
        return f"{side}.norm_out.{parts[1]}"
    tail = ".".join(parts[4:]) if len(parts) > 4 else ""
    if parts[0] in ("down_blocks", "up_blocks"):
        block = int(parts[1])
        # LDM numbers decoder levels from the lowest resolution upwards; diffusers reverses.
        level = block if parts[0] == "down_blocks" else n_up - 1 - block
        ldm_side = "down" if parts[0] == "down_blocks" else "up"
        if parts[2] == "resnets":
            tail = tail.replace("conv_shortcut", "nin_shortcut")
            return f"{side}.{ldm_side}.{level}.block.{parts[3]}.{tail}"
        if parts[2] in ("downsamplers", "upsamplers"):
            sampler = "downsample" if parts[2] == "downsamplers" else "upsample"
            return f"{side}.{ldm_side}.{level}.{sampler}.{tail}"
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            return f"{side}.mid.block_{int(parts[2]) + 1}.{'.'.join(parts[3:])}"
        if parts[1] == "attentions":
            module, _, param = ".".join(parts[3:]).rpartition(".")
            if module in _VAE_ATTENTION:
                return f"{side}.mid.attn_1.{_VAE_ATTENTION[module]}.{param}"
    raise ExportError(f"no LDM name for VAE parameter {key!r}")


def text_encoder_to_ldm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel weights under `cond_stage_model.transformer.text_model.` as SD1.x files
    store them (transformers >= 5.6 flattened the module, so the `text_model.` is added back)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("position_ids"):
            continue
        name = key if key.startswith("text_model.") else f"text_model.{key}"
        out[CLIP_PREFIX + name] = value
    return out


def unet_to_ldm(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    names = unet_key_map(list(state_dict), config)
    return {UNET_PREFIX + names[k]: v for k, v in state_dict.items()}


def vae_to_ldm(
    state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]
) -> dict[str, torch.Tensor]:
    names = vae_key_map(list(state_dict), config)
    out = {}
    for key, value in state_dict.items():
        ldm = names[key]
        # LDM's VAE attention uses 1x1 convolutions where diffusers uses linear layers.
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + ldm] = value
    return out


def pipeline_to_ldm(unet: Any, vae: Any, text_encoder: Any) -> dict[str, torch.Tensor]:
    """The three models of an SD1.x pipeline as one LDM-layout state dict."""
    out: dict[str, torch.Tensor] = {}
    out.update(unet_to_ldm(unet.state_dict(), unet.config))
    out.update(vae_to_ldm(vae.state_dict(), vae.config))
    out.update(text_encoder_to_ldm(text_encoder.state_dict()))
    return out


def save_ldm_checkpoint(path: Path, unet: Any, vae: Any, text_encoder: Any) -> None:
    state = pipeline_to_ldm(unet, vae, text_encoder)
    # safetensors refuses shared or strided storage; copies are cheap at tiny sizes.
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}
    save_file(state, str(path), metadata={"format": "pt"})
