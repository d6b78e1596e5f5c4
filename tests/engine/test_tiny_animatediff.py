"""The tiny AnimateDiff stand-ins: every part in the format its real counterpart ships in."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from safetensors import safe_open

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest
from toonforge.engine.tiny.animatediff import (
    MOTION_MAX_SEQ_LENGTH,
    AnimateDiffPaths,
    ensure_tiny_animatediff,
)
from toonforge.engine.tiny.sd15 import ensure_tiny_sd15
from toonforge.tasks.private_models import check_checkpoint

TOOL = "wiro/animate-diff"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    m = load_catalog().by_key(TOOL)
    assert m is not None
    return m


@pytest.fixture(scope="module")
def paths(manifest: Manifest, tiny_root: Path) -> AnimateDiffPaths:
    b = manifest.backend
    return ensure_tiny_animatediff(
        tiny_root,
        [(x.id, x.checkpoint.file) for x in b.base_models],
        [(x.repo or x.name, x.file) for x in b.loras],
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bases_in_the_manifest_formats(manifest: Manifest, paths: AnimateDiffPaths) -> None:
    singles, folders = [], []
    for choice in manifest.backend.base_models:
        base = paths.base(choice.id, choice.checkpoint.file)
        if choice.checkpoint.file == "model_index.json":
            assert base.checkpoint is None
            for part in ("model_index.json", "unet/config.json", "vae/config.json"):
                assert (base.folder / part).is_file(), (choice.id, part)
            assert (base.folder / "tokenizer" / "vocab.json").is_file()
            folders.append(base.folder / "unet" / "diffusion_pytorch_model.safetensors")
        else:
            assert base.checkpoint is not None
            assert base.checkpoint.name == choice.checkpoint.file
            # A single LDM-layout file holding UNet, VAE and CLIP, like SD1.5 fine-tunes.
            info = check_checkpoint(base.checkpoint)
            assert info.tensors > 100
            assert base.folder == paths.sd15_config
            singles.append(base.checkpoint)
    assert len(singles) == 3 and len(folders) == 2
    # Five different models, none of them the CartoonMix stand-in.
    cartoonmix = ensure_tiny_sd15(paths.sd15_config.parent.parent).checkpoint
    digests = {_sha(p) for p in singles} | {_sha(p) for p in folders}
    assert len(digests) == 5
    assert _sha(cartoonmix) not in digests


def test_motion_adapter_matches_the_unet(paths: AnimateDiffPaths) -> None:
    config = json.loads((paths.motion_adapter / "config.json").read_text())
    unet = json.loads((paths.sd15_config / "unet" / "config.json").read_text())
    assert config["_class_name"] == "MotionAdapter"
    assert list(config["block_out_channels"]) == list(unet["block_out_channels"])
    assert config["motion_layers_per_block"] == unet["layers_per_block"]
    assert config["motion_max_seq_length"] == MOTION_MAX_SEQ_LENGTH == 32
    assert (paths.motion_adapter / "diffusion_pytorch_model.safetensors").is_file()


def test_eight_distinct_motion_loras(manifest: Manifest, paths: AnimateDiffPaths) -> None:
    files = [paths.lora(x.repo or x.name, x.file) for x in manifest.backend.loras]
    assert len(files) == 8
    digests = set()
    for path in files:
        with safe_open(str(path), "pt") as f:
            keys = list(f.keys())
            first = f.get_tensor(keys[0])
        assert keys and all(k.startswith("unet.") and "motion_modules" in k for k in keys)
        assert any("lora_A" in k for k in keys) and any("lora_B" in k for k in keys)
        assert first.abs().sum() > 0
        digests.add(_sha(path))
    assert len(digests) == 8


def test_built_once(manifest: Manifest, paths: AnimateDiffPaths, tiny_root: Path) -> None:
    adapter = paths.motion_adapter / "diffusion_pytorch_model.safetensors"
    before = adapter.stat().st_mtime_ns
    b = manifest.backend
    again = ensure_tiny_animatediff(
        tiny_root,
        [(x.id, x.checkpoint.file) for x in b.base_models],
        [(x.repo or x.name, x.file) for x in b.loras],
    )
    assert again.root == paths.root
    assert adapter.stat().st_mtime_ns == before
