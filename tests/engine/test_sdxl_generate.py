"""SDXL generation on the tiny stand-ins: the refiner split, progress, adapters on a shared base,
prompt embeddings, interruption, and the missing-weights messages."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_support import pixels

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Lora, Manifest
from toonforge.catalog.validation import validate_inputs
from toonforge.engine import sdxl
from toonforge.engine.contract import GenerationInterrupted, ModelError, WeightsMissing
from toonforge.engine.runtime import EngineRuntime
from toonforge.engine.tiny.sdxl import DIFFUSERS, ensure_tiny_lora, ensure_tiny_sdxl
from toonforge.settings import Settings, load_settings

RETRO = "retroAIx/Retro-Cartoons"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def retro() -> Manifest:
    manifest = load_catalog().by_key(RETRO)
    assert manifest is not None
    return manifest


@pytest.fixture(scope="module")
def rt(tiny_settings: Settings) -> EngineRuntime:
    return EngineRuntime(tiny_settings)


@pytest.fixture
def params(retro: Manifest) -> dict[str, Any]:
    p = validate_inputs(retro, {})
    p.update(prompt="btstyle, a cartoon bat", samples=1, steps=10, stepsRefiner=20)
    p.update(width=64, height=64)
    return p


def run(rt: EngineRuntime, manifest: Manifest, params: dict[str, Any], **kw: Any) -> Any:
    steps: list[tuple[int, int]] = []
    params = {**params, **kw}
    result = rt.generate(manifest, params, lambda s, t: steps.append((s, t)), lambda: False)
    result.info["_steps"] = steps
    return result


def test_refiner_split_and_progress(rt: EngineRuntime, retro: Manifest, params: Any) -> None:
    result = run(rt, retro, params)
    info = result.info
    # Leading spacing, 10 base steps (901 ... 1), cutoff 1000 - 0.8 * 1000 = 200: the base runs
    # the 8 timesteps >= 200. The refiner sets its own 20-step schedule (951 ... 1) and runs the
    # 4 below 200: stepsRefiner is the length of the refiner's full schedule.
    assert (info["base_steps_run"], info["refiner_steps_run"]) == (8, 4)
    assert info["refiner"] == "YES" and info["refiner_loaded"] is True
    assert info["_steps"] == [(i, 12) for i in range(1, 13)], "one total, counted to the end"


def test_high_noise_frac_one_is_the_base_alone(
    rt: EngineRuntime, retro: Manifest, params: Any
) -> None:
    full = run(rt, retro, params, highNoiseFrac=1.0)
    assert (full.info["base_steps_run"], full.info["refiner_steps_run"]) == (10, 0)
    alone = run(rt, retro, params, refiner="--only_base_model")
    assert np.array_equal(pixels(full.files[0].data), pixels(alone.files[0].data))
    assert alone.info["_steps"][-1] == (10, 10)


def test_refiner_no_never_loads_the_refiner(
    tiny_settings: Settings, retro: Manifest, params: Any
) -> None:
    fresh = EngineRuntime(tiny_settings)
    info = fresh.prepare(retro, {**params, "refiner": "--only_base_model"})
    assert [p["part"].split(":")[0] for p in info["parts"]] == ["sdxl-base"]
    assert info["refiner_loaded"] is False and info["refiner_from"] is None
    result = run(fresh, retro, params, refiner="--only_base_model")
    assert result.info["refiner_steps_run"] == 0
    assert not [p for p in fresh.loaded() if p["part"].startswith("sdxl-refiner")]
    # YES afterwards: the base is reused, only the refiner is loaded.
    info = fresh.prepare(retro, params)
    assert [(p["part"].split(":")[0], p["reused"]) for p in info["parts"]] == [
        ("sdxl-base", True),
        ("sdxl-refiner", False),
    ]
    model = fresh.model_for(retro, params)
    assert model.refiner.pipe.text_encoder_2 is model.base.pipe.text_encoder_2
    assert model.refiner.pipe.vae is model.base.pipe.vae


def _other_tool(retro: Manifest) -> Manifest:
    lora = Lora(name="other-style", file="Other-Style.safetensors", note="test LoRA")
    backend = retro.backend.model_copy(update={"loras": [lora]})
    return retro.model_copy(update={"slug": "Other-Style", "backend": backend})


def test_second_tool_swaps_adapters_on_the_same_base(
    rt: EngineRuntime, retro: Manifest, params: Any
) -> None:
    other = _other_tool(retro)
    first = pixels(run(rt, retro, params).files[0].data)
    info = rt.prepare(other, params)
    assert all(p["reused"] for p in info["parts"]), "the base is never reloaded for a LoRA"
    assert len(info["adapters_on_base"]) == 2
    second = run(rt, other, params)
    assert [a["adapter"].rsplit("_", 1)[0] for a in second.info["active_adapters"]] == [
        "other_style"
    ]
    assert np.abs(pixels(second.files[0].data) - first).max() > 5
    # An SDXL tool without LoRAs on the same base: the adapters are switched off, not unloaded.
    plain_tool = retro.model_copy(
        update={"slug": "Plain", "backend": retro.backend.model_copy(update={"loras": []})}
    )
    plain = run(rt, plain_tool, params)
    assert plain.info["active_adapters"] == [] and len(plain.info["adapters_on_base"]) == 2
    assert np.abs(pixels(plain.files[0].data) - first).max() > 5
    again = pixels(run(rt, retro, params).files[0].data)
    assert np.array_equal(again, first), "switching back restores the tool's images exactly"
    bases = [p for p in rt.loaded() if p["part"].startswith("sdxl-base")]
    assert len(bases) == 1 and set(bases[0]["tools"]) >= {retro.key, other.key}


def test_diffusers_named_lora_on_the_base_part(
    rt: EngineRuntime, retro: Manifest, params: Any, tiny_settings: Settings
) -> None:
    kohya = run(rt, retro, params)
    model = rt.model_for(retro, params)
    path = ensure_tiny_lora(
        ensure_tiny_sdxl(tiny_settings.tiny_models_dir), "Retro-Cartoons.safetensors", DIFFUSERS
    )
    lora = Lora(name="retro-diffusers", file=path.name, weight=1.0)
    active = sdxl.ensure_adapters(model.base, ((lora, path),))
    req = sdxl._Request.from_params(retro, params)
    result = sdxl.generate_sdxl(
        dataclasses.replace(model, active=active), retro, req, lambda s, t: None, lambda: False
    )
    diff = np.abs(pixels(result.files[0].data) - pixels(kohya.files[0].data))
    assert diff.max() <= 1, "the same LoRA in diffusers naming gives the same image"


def test_empty_negative_prompt_follows_each_pipeline_config(
    rt: EngineRuntime, retro: Manifest, params: Any
) -> None:
    model = rt.model_for(retro, params)
    empty = sdxl.encode_prompts_sdxl(model, "a cat", "")
    assert not empty.negative.any() and not empty.negative_pooled.any()  # base: zeros
    assert model.refiner is not None
    assert model.refiner.pipe.config.force_zeros_for_empty_prompt is False  # refiner: encoded ""
    assert empty.prompt_embeds.shape == (1, 77, 64)  # te1 (32) and te2 (32) side by side
    blurry = sdxl.encode_prompts_sdxl(model, "a cat", "blurry")
    assert blurry.negative.abs().sum() > 0
    assert torch.equal(blurry.prompt_embeds, empty.prompt_embeds)


def test_long_prompts_are_chunked_not_cut(rt: EngineRuntime, retro: Manifest, params: Any) -> None:
    model = rt.model_for(retro, params)
    long = sdxl.encode_prompts_sdxl(model, "cat, " * 60, "")
    assert long.chunks >= 2 and long.prompt_embeds.shape == (1, 77 * long.chunks, 64)
    assert long.negative.shape == long.prompt_embeds.shape  # padded to the prompt's length
    result = rt.generate(
        retro,
        {**params, "prompt": "cat, " * 60, "negativePrompt": ""},
        lambda s, t: None,
        lambda: False,
    )
    assert result.info["prompt_chunks"] == long.chunks


def test_prompt_syntax_reaches_the_sdxl_unet(
    rt: EngineRuntime, retro: Manifest, params: Any
) -> None:
    def image(prompt: str) -> np.ndarray:
        run = rt.generate(retro, {**params, "prompt": prompt}, lambda s, t: None, lambda: False)
        return pixels(run.files[0].data)

    plain = image("a cat")
    assert np.array_equal(image("a (cat:1.0)"), plain)
    assert not np.array_equal(image("a (cat:1.5)"), plain)
    assert not np.array_equal(image("a [cat:dog:1]"), plain)
    assert not np.array_equal(image("a cat AND a dog"), plain)


@pytest.mark.parametrize("stop_after", [1, 9])  # in the base, in the refiner
def test_stop_between_steps(
    rt: EngineRuntime, retro: Manifest, params: Any, stop_after: int
) -> None:
    seen: list[int] = []
    with pytest.raises(GenerationInterrupted):
        rt.generate(retro, params, lambda s, t: seen.append(s), lambda: len(seen) >= stop_after)
    assert seen[-1] == stop_after


def test_bad_split_is_a_model_error(rt: EngineRuntime, retro: Manifest, params: Any) -> None:
    with pytest.raises(ModelError, match="highNoiseFrac"):
        run(rt, retro, params, highNoiseFrac=0.0)
    with pytest.raises(ModelError, match="refiner"):
        run(rt, retro, params, refiner="maybe")


def test_missing_real_weights_say_how_to_provide_them(tmp_path: Path, retro: Manifest) -> None:
    settings = load_settings(tiny=False, data_dir=tmp_path, models_dir=tmp_path / "m", device="cpu")
    with pytest.raises(WeightsMissing) as lora_missing:
        sdxl.resolve_sdxl(settings, retro, refiner=True)
    message = str(lora_missing.value)
    assert "Retro-Cartoons.safetensors" in message and "No public download is known" in message
    assert str(tmp_path / "m" / "Retro-Cartoons.safetensors") in message
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "Retro-Cartoons.safetensors").write_bytes(b"x")
    with pytest.raises(WeightsMissing, match=re.escape("stabilityai/stable-diffusion-xl-base-1.0")):
        sdxl.resolve_sdxl(settings, retro, refiner=False)


def test_the_loop_matches_the_diffusers_pipeline_on_a_plain_prompt(
    rt: EngineRuntime, retro: Manifest, params: Any
) -> None:
    """Base only (refiner NO): our sampling loop gives the pipeline's own image."""
    from toonforge.engine.schedulers import make_scheduler

    p = {**params, "prompt": "a cat", "negativePrompt": "ugly", "refiner": sdxl.REFINER_NO}
    p["steps"] = 4
    ours = pixels(rt.generate(retro, p, lambda s, t: None, lambda: False).files[0].data)
    model = rt.model_for(retro, p)
    pipe = model.base.pipe
    pipe.scheduler = make_scheduler(p["scheduler"], model.base.scheduler_config)
    embeds = sdxl.encode_prompts_sdxl(model, "a cat", "ugly")
    theirs = pipe(
        prompt_embeds=embeds.prompt_embeds,
        negative_prompt_embeds=embeds.negative,
        pooled_prompt_embeds=embeds.pooled,
        negative_pooled_prompt_embeds=embeds.negative_pooled,
        num_inference_steps=4,
        guidance_scale=p["scale"],
        width=64,
        height=64,
        generator=[torch.Generator("cpu").manual_seed(p["seed"])],
        output_type="np",
    ).images[0]
    assert np.abs(ours - np.round(theirs * 255).astype(np.int16)).max() <= 1
