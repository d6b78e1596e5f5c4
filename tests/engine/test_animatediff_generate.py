"""AnimateDiff on the tiny stand-ins through the engine runtime: bases, motion LoRAs, frame
bounds, the H.264 output, and the SD1.5 part shared with the image tools."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest, WeightFile
from toonforge.catalog.validation import validate_inputs
from toonforge.engine.contract import GenerationInterrupted, ModelError, WeightsMissing
from toonforge.settings import load_settings

TOOL = "wiro/animate-diff"


@pytest.fixture(scope="module")
def manifest() -> Manifest:
    m = load_catalog().by_key(TOOL)
    assert m is not None
    return m


def decode(data: bytes) -> tuple[dict[str, Any], np.ndarray]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        gen = imageio_ffmpeg.read_frames(f.name)
        meta = next(gen)
        w, h = meta["size"]
        frames = [np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in gen]
    return meta, np.stack(frames).astype(np.int16)


@pytest.fixture
def small(manifest: Manifest) -> Callable[..., dict[str, Any]]:
    def make(**overrides: Any) -> dict[str, Any]:
        body = {"frameNumber": 4, "steps": 2, "width": 64, "height": 64, "seed": "7"}
        return validate_inputs(manifest, {**body, **overrides})

    return make


def generate(runtime: Any, manifest: Manifest, params: dict[str, Any]) -> Any:
    steps: list[tuple[int, int]] = []
    result = runtime.generate(manifest, params, lambda s, t: steps.append((s, t)), lambda: False)
    result.info["_steps"] = steps
    return result


def test_video_has_the_frames_and_size_asked_for(
    runtime: Any, manifest: Manifest, small: Callable[..., dict[str, Any]]
) -> None:
    result = generate(runtime, manifest, small(frameNumber=5, steps=3, width=64, height=96))
    [out] = result.files
    assert (out.name, out.content_type) == ("0.mp4", "video/mp4")
    meta, frames = decode(out.data)
    assert meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert frames.shape == (5, 96, 64, 3)
    assert result.info["_steps"] == [(1, 3), (2, 3), (3, 3)]
    # The "60" default of the page means the documented default base.
    assert result.info["base_model"] == manifest.backend.default_base_model == "485"
    # Motion: the frames are not one image repeated.
    assert np.abs(frames[0] - frames[-1]).mean() > 0.5
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "0.mp4")
        Path(path).write_bytes(out.data)
        probe = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", path],
            capture_output=True,
            text=True,
        ).stderr
    assert "Video: h264" in probe and "yuv420p" in probe and "64x96" in probe
    # moov before mdat: browsers start playing before the whole file is downloaded.
    assert out.data.index(b"moov") < out.data.index(b"mdat")


def test_bases_differ_and_empty_means_default(
    runtime: Any, manifest: Manifest, small: Callable[..., dict[str, Any]]
) -> None:
    empty = generate(runtime, manifest, small(selectedModel=""))
    assert empty.info["base_model"] == "485"
    videos = {}
    for base in ("969", "965"):
        result = generate(runtime, manifest, small(selectedModel=base))
        assert result.info["base_model"] == base
        videos[base] = decode(result.files[0].data)[1]
    default = decode(empty.files[0].data)[1]
    assert np.abs(videos["969"] - default).mean() > 1
    assert np.abs(videos["965"] - default).mean() > 1


def test_motion_lora_switch_reuses_the_loaded_parts(
    runtime: Any, manifest: Manifest, small: Callable[..., dict[str, Any]]
) -> None:
    first = generate(runtime, manifest, small(loraType="FILE:169584"))
    info = runtime.prepare(manifest, small(loraType="FILE:169580"))
    assert info["reused"] is True, info["parts"]  # no base or motion UNet reloaded
    assert "FILE:169580" in info["motion_loras_loaded"]
    second = generate(runtime, manifest, small(loraType="FILE:169580"))
    assert second.info["motion_lora"] == "file_169580"
    assert second.info["motion_lora_loaded_now"] is False  # loaded once, by prepare
    again = generate(runtime, manifest, small(loraType="FILE:169584"))
    assert again.info["motion_lora_loaded_now"] is False
    a, b = decode(first.files[0].data)[1], decode(second.files[0].data)[1]
    assert np.abs(a - b).mean() > 0.5
    # Switching back gives the first clip again: the other adapter is fully off.
    assert np.array_equal(a, decode(again.files[0].data)[1])


def test_frame_bound_checked_against_the_adapter(
    runtime: Any, manifest: Manifest, small: Callable[..., dict[str, Any]]
) -> None:
    params = {**small(), "frameNumber": 33}  # past validation, as a direct engine call
    with pytest.raises(ModelError, match="frameNumber must be between 1 and 32"):
        runtime.generate(manifest, params, lambda s, t: None, lambda: False)


def test_stop_between_steps(
    runtime: Any, manifest: Manifest, small: Callable[..., dict[str, Any]]
) -> None:
    seen: list[int] = []
    with pytest.raises(GenerationInterrupted):
        runtime.generate(manifest, small(steps=6), lambda s, t: seen.append(s), lambda: bool(seen))
    assert seen == [1]


def _real_layout(models: Path, tiny: Path, manifest: Manifest) -> None:
    """The tiny files laid out as the real ones are found: models folder, repo folders."""
    from toonforge.engine.tiny.animatediff import ensure_tiny_animatediff

    b = manifest.backend
    paths = ensure_tiny_animatediff(
        tiny,
        [(x.id, x.checkpoint.file) for x in b.base_models],
        [(x.repo or x.name, x.file) for x in b.loras],
    )
    shutil.copytree(paths.sd15_config, models / "stable-diffusion-v1-5/stable-diffusion-v1-5")
    shutil.copytree(paths.motion_adapter, models / "guoyww/animatediff-motion-adapter-v1-5-2")
    for lora in b.loras:
        assert lora.repo
        target = models / lora.repo / lora.file
        target.parent.mkdir(parents=True)
        shutil.copy(paths.lora(lora.repo, lora.file), target)
    base = paths.base("969", "SDVN4-3DCuteVN.safetensors")
    assert base.checkpoint is not None
    shutil.copy(base.checkpoint, models / "SDVN4-3DCuteVN.safetensors")


def test_real_weights_share_the_sd15_part_with_an_image_tool(
    manifest: Manifest, tiny_root: Path, tmp_path: Path, small: Callable[..., dict[str, Any]]
) -> None:
    from toonforge.engine.runtime import EngineRuntime

    models = tmp_path / "models"
    settings = load_settings(data_dir=tmp_path / "data", models_dir=models, device="cpu")
    runtime = EngineRuntime(settings)
    with pytest.raises(WeightsMissing, match=r"SDVN4-3DCuteVN\.safetensors"):
        runtime.prepare(manifest, small(selectedModel="969"))
    _real_layout(models, tiny_root, manifest)
    # An image tool whose checkpoint is the same file as the video tool's base 969.
    cartoonmix = load_catalog().by_key("futurist/CartoonMix v1.0")
    assert cartoonmix is not None
    backend = cartoonmix.backend.model_copy(
        update={"checkpoint": WeightFile(file="SDVN4-3DCuteVN.safetensors"), "embeddings": []}
    )
    image_tool = cartoonmix.model_copy(update={"backend": backend})
    image_info = runtime.prepare(image_tool, None)
    [image_part] = [e["part"] for e in image_info["parts"]]
    video_info = runtime.prepare(manifest, small(selectedModel="969"))
    events = {e["part"]: e["reused"] for e in video_info["parts"]}
    assert events[image_part] is True, events  # the very same SD1.5 part
    assert any(k.startswith("animatediff:") and not v for k, v in events.items())
    result = generate(runtime, manifest, small(selectedModel="969"))
    assert result.info["tiny"] is False
    assert decode(result.files[0].data)[1].shape == (4, 64, 64, 3)
