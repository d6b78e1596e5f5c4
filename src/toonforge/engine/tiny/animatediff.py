"""Tiny AnimateDiff stand-ins: motion adapter, five SD1.5 bases and eight camera-motion LoRAs.

Built from the tiny SD1.5 recipe (`tiny/sd15.py`) and saved the way the real weights are
published:
- `motion-adapter/`: a diffusers `MotionAdapter` folder (config.json + safetensors), as
  `guoyww/animatediff-motion-adapter-v1-5-2`; its block widths and layers match the tiny
  UNet, and it keeps the real adapter's 32 positional embeddings (`motion_max_seq_length`).
- `bases/<id>/...`: the page's five bases, each a differently perturbed copy of the tiny SD1.5
  UNet (so every base draws differently), in the format the manifest names: one LDM-layout
  `.safetensors` for 969/959/814 (configured from the tiny `stable-diffusion-v1-5` config
  folder, as the real single files are), a full diffusers folder for 485/965.
- `loras/<repo name>/diffusion_pytorch_model.safetensors`: peft LoRAs on the motion modules'
  attention, written with `save_lora_weights`, one per camera motion, each with its own
  random weights.

None of the bases is the CartoonMix stand-in file: the real bases are different checkpoints
from CartoonMix, so the tiny ones are too. Sharing of the SD1.5 part is by file identity.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from toonforge.engine.tiny._cache import build_once
from toonforge.engine.tiny.sd15 import build_tiny_sd15_models, ensure_tiny_sd15

VERSION = "v1"
MOTION_MAX_SEQ_LENGTH = 32  # as guoyww/animatediff-motion-adapter-v1-5-2
LORA_RANK = 4
# How far each base's UNet is moved away from the tiny SD1.5 one (relative to each tensor's
# spread): enough for visibly different videos, small enough to stay a working denoiser.
BASE_PERTURBATION = 0.25


@dataclass(frozen=True)
class TinyBase:
    id: str
    checkpoint: Path | None  # single-file LDM checkpoint, or None for a diffusers folder
    folder: Path  # the config folder (single file) or the whole diffusers model


@dataclass(frozen=True)
class AnimateDiffPaths:
    root: Path
    motion_adapter: Path
    sd15_config: Path  # the tiny `stable-diffusion-v1-5` config folder

    def base(self, base_id: str, file_name: str) -> TinyBase:
        """Where the stand-in of a manifest base lives (`file_name` as in the manifest)."""
        folder = self.root / "bases" / base_id
        if file_name == "model_index.json":
            return TinyBase(base_id, None, folder)
        return TinyBase(base_id, folder / Path(file_name).name, self.sd15_config)

    def lora(self, repo: str, file_name: str) -> Path:
        return self.root / "loras" / repo.rsplit("/", 1)[-1] / Path(file_name).name


def ensure_tiny_animatediff(
    root: Path,
    bases: list[tuple[str, str]],
    loras: list[tuple[str, str]],
) -> AnimateDiffPaths:
    """Build once under `root`: `bases` are (id, manifest file name), `loras` (repo, file)."""
    sd15 = ensure_tiny_sd15(root)
    # The folder name carries the requested set, so a manifest that changes it builds anew.
    digest = hashlib.sha256(repr((sorted(bases), sorted(loras))).encode()).hexdigest()[:10]
    folder = build_once(
        root / f"animatediff-{VERSION}-{digest}",
        lambda tmp: _build(tmp, sd15.config_dir, bases, loras),
    )
    return AnimateDiffPaths(folder, folder / "motion-adapter", sd15.config_dir)


def tiny_motion_adapter() -> object:
    """The deterministic tiny MotionAdapter (matches the tiny UNet's blocks and layers)."""
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(4321)
        adapter = MotionAdapter(
            block_out_channels=(16, 32, 32),
            motion_layers_per_block=2,
            motion_mid_block_layers_per_block=1,
            motion_num_attention_heads=2,
            motion_norm_num_groups=8,
            motion_max_seq_length=MOTION_MAX_SEQ_LENGTH,
            use_motion_mid_block=True,
        )
    return adapter.eval()


def _perturb(unet: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in unet.parameters():
            spread = p.std() if p.numel() > 1 else p.abs()
            noise = torch.randn(p.shape, generator=gen)
            p.add_(noise * spread.clamp(min=1e-3) * BASE_PERTURBATION)


def _build(
    folder: Path,
    sd15_config: Path,
    bases: list[tuple[str, str]],
    loras: list[tuple[str, str]],
) -> None:
    from diffusers import AnimateDiffPipeline, StableDiffusionPipeline, UNetMotionModel

    from toonforge.engine.tiny.ldm_export import save_ldm_checkpoint

    adapter = tiny_motion_adapter()
    adapter.save_pretrained(folder / "motion-adapter", safe_serialization=True)  # type: ignore[attr-defined]
    paths = AnimateDiffPaths(folder, folder / "motion-adapter", sd15_config)
    first_parts = None
    for base_id, file_name in bases:
        parts = build_tiny_sd15_models(sd15_config / "tokenizer")
        seed = int.from_bytes(hashlib.sha256(base_id.encode()).digest()[:4], "little")
        _perturb(parts["unet"], seed)  # type: ignore[arg-type]
        first_parts = first_parts or parts
        target = paths.base(base_id, file_name)
        if target.checkpoint is not None:
            target.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_ldm_checkpoint(
                target.checkpoint, parts["unet"], parts["vae"], parts["text_encoder"]
            )
        else:
            pipe = StableDiffusionPipeline(
                **parts,  # type: ignore[arg-type]
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.save_pretrained(target.folder, safe_serialization=True)
            # As the SD1.5 repositories: vocab.json + merges.txt, no tokenizer.json.
            shutil.rmtree(target.folder / "tokenizer")
            shutil.copytree(sd15_config / "tokenizer", target.folder / "tokenizer")
    if not loras:
        return
    if first_parts is None:
        first_parts = build_tiny_sd15_models(sd15_config / "tokenizer")
    for index, (repo, file_name) in enumerate(loras):
        path = paths.lora(repo, file_name)
        # A fresh motion UNet per LoRA: injecting adapters changes the module tree.
        unet = UNetMotionModel.from_unet2d(first_parts["unet"], adapter)  # type: ignore[arg-type]
        state = _motion_lora_state(unet, seed=9000 + index)
        AnimateDiffPipeline.save_lora_weights(
            path.parent, unet_lora_layers=state, weight_name=path.name, safe_serialization=True
        )


def _motion_lora_state(unet: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A peft LoRA on the motion modules' attention projections, with random A and B (a fresh
    peft LoRA has B = 0 and would change nothing)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model

    targets = [
        name
        for name, module in unet.named_modules()
        if "motion_modules" in name
        and isinstance(module, torch.nn.Linear)
        and (name.rsplit(".", 1)[-1] in ("to_q", "to_k", "to_v") or name.endswith("to_out.0"))
    ]
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_RANK, target_modules=targets)
    model = inject_adapter_in_model(config, unet, adapter_name="tiny")
    gen = torch.Generator().manual_seed(seed)
    state = get_peft_model_state_dict(model, adapter_name="tiny")
    return {key: torch.randn(v.shape, generator=gen) * 0.3 for key, v in sorted(state.items())}
