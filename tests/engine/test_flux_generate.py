"""FLUX generation on the tiny stand-in: inputs, JSON prompts, true CFG, LoRA switching."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from engine_support import pixels
from PIL import Image

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest
from toonforge.engine.contract import GenerationInterrupted, ModelError
from toonforge.engine.flux import split_prompt

TOON = "WizardWhitebeard/Toon-Renders"
COMICS = "Adel_AI/Comics-Factory-v1"
SMALL = {
    "prompt": "w1z_r3nd3r, a potato with a face",
    "samples": 1,
    "steps": 3,
    "scale": 3.5,
    "seed": 26355552,
    "width": 64,
    "height": 64,
}
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def toon() -> Manifest:
    m = load_catalog().by_key(TOON)
    assert m is not None
    return m


@pytest.fixture(scope="module")
def comics() -> Manifest:
    m = load_catalog().by_key(COMICS)
    assert m is not None
    return m


@pytest.fixture
def gen(runtime: Any) -> Callable[..., Any]:
    def go(manifest: Manifest, **overrides: Any) -> Any:
        return runtime.generate(manifest, {**SMALL, **overrides}, lambda s, t: None, lambda: False)

    return go


@pytest.fixture
def run(gen: Callable[..., Any], toon: Manifest) -> Run:
    return lambda **kw: gen(toon, **kw)


def img(result: Any, i: int = 0) -> np.ndarray:
    return pixels(result.files[i].data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("prompt", "w1z_r3nd3r, a lemon with a face"),
        ("steps", 5),
        ("scale", 1.0),
        ("seed", 559664054),
    ],
)
def test_every_input_changes_the_image(run: Run, field: str, value: Any) -> None:
    base = img(run())
    changed = img(run(**{field: value}))
    assert np.abs(base - changed).max() > 2, field


def test_width_height_and_samples(run: Run) -> None:
    result = run(width=96, height=64, samples=3, seed=1000)
    assert [f.name for f in result.files] == ["0.png", "1.png", "2.png"]
    assert all(Image.open(io.BytesIO(f.data)).size == (96, 64) for f in result.files)
    assert result.info["seeds"] == [1000, 1001, 1002]
    solo = img(run(width=96, height=64, seed=1001))
    assert np.array_equal(img(result, 1), solo), "sample i is seed + i, the same bytes"
    assert np.abs(img(result, 0) - img(result, 1)).max() > 2


@pytest.mark.parametrize("samples", [2, 4])
def test_every_sample_is_the_same_bytes_as_its_seed_alone(run: Run, samples: int) -> None:
    """Each row of a several-sample run is computed as if alone: the transformer's small
    per-row matmuls run row-wise (toonforge.engine.rowwise.rowwise_flux)."""
    together = run(width=128, height=128, samples=samples, seed=2000)
    for i in range(samples):
        alone = run(width=128, height=128, seed=2000 + i)
        assert np.array_equal(img(together, i), img(alone)), f"sample {i} of {samples}"


def test_same_seed_same_pixels(run: Run) -> None:
    assert np.array_equal(img(run()), img(run()))


def test_json_prompt_sends_each_text_to_its_encoder(run: Run) -> None:
    plain = run(prompt="a cat")
    assert plain.info["encoders"]["T5"] == plain.info["encoders"]["CLIP-L"] == "a cat"
    both = run(prompt='{"T5": "a cat", "CLIP-L": "a cat"}')
    assert both.info["encoders"]["source"] == "JSON prompt"
    assert np.array_equal(img(both), img(plain)), "the same text to both encoders as plain"
    t5 = run(prompt='{"T5": "a dog in the rain", "CLIP-L": "a cat"}')
    clip = run(prompt='{"T5": "a cat", "CLIP-L": "a dog in the rain"}')
    assert t5.info["encoders"] == {
        "T5": "a dog in the rain",
        "CLIP-L": "a cat",
        "source": "JSON prompt",
    }
    assert np.abs(img(t5) - img(plain)).max() > 2, "the T5 text matters"
    assert np.abs(img(clip) - img(plain)).max() > 2, "the CLIP-L text matters"
    assert np.abs(img(clip) - img(t5)).max() > 2


def test_json_prompt_with_one_key_feeds_both_encoders(run: Run) -> None:
    only = run(prompt='{"T5": "a cat"}')
    assert only.info["encoders"]["CLIP-L"] == only.info["encoders"]["T5"] == "a cat"
    assert np.array_equal(img(only), img(run(prompt="a cat")))


@pytest.mark.parametrize(
    "text",
    ['{"style": "a cat"}', "{not json", '["T5", "CLIP-L"]', "a {T5} cat"],
)
def test_other_strings_are_plain_prompts(text: str) -> None:
    p = split_prompt("prompt", text)
    assert (p.clip, p.t5, p.json) == (text, text, False)


@pytest.mark.parametrize("doc", ['{"T5": 3, "CLIP-L": "a"}', '{"CLIP-L": ["a"]}'])
def test_json_prompt_with_a_non_string_value_is_an_error(run: Run, doc: str) -> None:
    with pytest.raises(ModelError, match=r"prompt: the JSON prompt's '(T5|CLIP-L)' value"):
        run(prompt=doc)


def test_negative_prompt_is_ignored_without_true_cfg(run: Run, toon: Manifest) -> None:
    assert toon.backend.true_cfg is False
    base = run()
    neg = run(negativePrompt="unknown")
    assert np.array_equal(img(base), img(neg))
    assert neg.info["true_cfg"] is False
    assert neg.info["notes"][0].startswith("negativePrompt ignored: ")
    assert "notes" not in base.info
    assert "Negative prompt" not in Image.open(io.BytesIO(neg.files[0].data)).info["parameters"]


def test_negative_prompt_turns_on_true_cfg_when_the_manifest_enables_it(
    runtime: Any, toon: Manifest
) -> None:
    backend = toon.backend.model_copy(update={"true_cfg": True, "true_cfg_scale": 3.0})
    enabled = toon.model_copy(update={"backend": backend})

    def go(**kw: Any) -> Any:
        return runtime.generate(enabled, {**SMALL, **kw}, lambda s, t: None, lambda: False)

    steps: list[int] = []
    no_negative = go()
    cfg = runtime.generate(
        enabled,
        {**SMALL, "negativePrompt": "blurry, ugly"},
        lambda s, t: steps.append(s),
        lambda: False,
    )
    assert steps == [1, 2, 3]
    assert cfg.info["true_cfg"]["scale"] == 3.0
    assert cfg.info["true_cfg"]["negative"]["T5"] == "blurry, ugly"
    assert "notes" not in cfg.info
    assert np.abs(img(cfg) - img(no_negative)).max() > 2
    other = go(negativePrompt="sloppy, messy, grainy")
    assert np.abs(img(cfg) - img(other)).max() > 2, "the negative text matters"
    meta = Image.open(io.BytesIO(cfg.files[0].data)).info
    assert "Negative prompt: blurry, ugly" in meta["parameters"]
    assert np.array_equal(img(go(negativePrompt="   ")), img(no_negative))


def test_switching_tools_swaps_adapters_on_one_base(
    runtime: Any, gen: Callable[..., Any], toon: Manifest, comics: Manifest
) -> None:
    first = runtime.prepare(toon, {**SMALL})
    a = gen(toon)
    info = runtime.prepare(comics, {**SMALL})
    b = gen(comics)
    again = runtime.prepare(toon, {**SMALL})
    a2 = gen(toon)
    bases = [p for p in runtime.loaded() if p["part"].startswith("flux-base:")]
    assert len(bases) == 1, "one FLUX base for both tools"
    assert bases[0]["tools"] == [COMICS, TOON]
    base_key = bases[0]["part"]
    assert info["parts"][0] == {"part": base_key, "reused": True}
    assert again["parts"][0] == {"part": base_key, "reused": True}
    assert again["lora"]["already_resident"] == ["toon-renders"]
    assert again["lora"]["resident"] == ["comics-factory-v1", "toon-renders"]
    assert again["reused"] is True
    assert first["lora"]["active"] == ["toon-renders"]
    assert b.info["active_adapters"] == [{"name": "comics-factory-v1", "weight": 1.0}]
    assert a2.info["active_adapters"] == [{"name": "toon-renders", "weight": 1.0}]
    assert np.abs(img(a) - img(b)).max() > 2, "each tool's LoRA changes the image"
    assert np.array_equal(img(a), img(a2)), "the other adapter is inactive, not merged"


def test_a_base_loads_with_every_tool_adapter_so_the_first_switch_is_a_swap(
    runtime: Any, toon: Manifest, comics: Manifest
) -> None:
    runtime.unload_all()
    first = runtime.prepare(toon, {**SMALL})
    assert first["parts"][0]["reused"] is False
    assert first["lora"]["resident"] == ["comics-factory-v1", "toon-renders"]
    switch = runtime.prepare(comics, {**SMALL})
    assert switch["reused"] is True
    assert switch["lora"]["loaded_now"] == []
    assert switch["lora"]["already_resident"] == ["comics-factory-v1"]


def test_should_stop_interrupts_between_steps(runtime: Any, toon: Manifest, run: Run) -> None:
    steps: list[tuple[int, int]] = []
    with pytest.raises(GenerationInterrupted):
        runtime.generate(
            toon, {**SMALL, "steps": 6}, lambda s, t: steps.append((s, t)), lambda: True
        )
    assert steps == [(1, 6)]
    assert len(run().files) == 1


def test_png_metadata(run: Run) -> None:
    result = run(seed=42, samples=2, prompt='{"T5": "a long text", "CLIP-L": "tags"}')
    meta = Image.open(io.BytesIO(result.files[1].data)).info
    assert meta["seed"] == "43" and meta["toonforge-tiny"] == "true"
    assert meta["prompt_t5"] == "a long text" and meta["prompt_clip_l"] == "tags"
    assert "Distilled CFG Scale: 3.5" in meta["parameters"] and "Seed: 43" in meta["parameters"]
    assert meta["loras"] == "toon-renders:1"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"width": 72}, "width"),
        ({"samples": 0}, "samples"),
        ({"seed": -1}, "seed"),
        ({"negativePrompt": 5}, "negativePrompt"),
    ],
)
def test_bad_parameters_name_the_parameter(run: Run, override: dict[str, Any], needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        run(**override)


def test_real_weights_mode_resolves_the_models_folder(
    tiny_root: Any, tmp_path: Any, toon: Manifest, comics: Manifest
) -> None:
    """Real mode on the stand-in's files laid out as an operator would: the models folder
    holds black-forest-labs/FLUX.1-dev and the LoRA files by the manifests' names."""
    from toonforge.engine.contract import WeightsMissing
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.engine.tiny.flux import ensure_tiny_flux
    from toonforge.settings import load_settings

    paths = ensure_tiny_flux(tiny_root)
    models = tmp_path / "models"
    settings = load_settings(tiny=False, models_dir=models, data_dir=tmp_path, device="cpu")
    rt = EngineRuntime(settings)
    noop = (lambda s, t: None, lambda: False)
    with pytest.raises(WeightsMissing) as missing:
        rt.prepare(toon, {**SMALL})
    text = str(missing.value)
    assert "'black-forest-labs/FLUX.1-dev'" in text and "'Toon-Renders.safetensors'" in text
    assert f"put the file at {models / 'Toon-Renders.safetensors'}" in text
    assert "No public download is known" in text

    (models / "black-forest-labs").mkdir(parents=True)
    (models / "black-forest-labs" / "FLUX.1-dev").symlink_to(paths.base_dir)
    (models / "Toon-Renders.safetensors").symlink_to(paths.loras["Toon-Renders.safetensors"])
    result = rt.generate(toon, {**SMALL}, *noop)
    assert result.info["tiny"] is False and "warning" not in result.info
    assert result.info["active_adapters"] == [{"name": "toon-renders", "weight": 1.0}]

    (models / "Comics-Factory-v1.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="could not load LoRA 'comics-factory-v1'"):
        rt.generate(comics, {**SMALL}, *noop)
    # The failed LoRA left the shared base usable for the other tool.
    again = rt.generate(toon, {**SMALL}, *noop)
    assert np.array_equal(img(again), img(result))
    assert [p["part"].split(":")[0] for p in rt.loaded()] == ["flux-base"]
