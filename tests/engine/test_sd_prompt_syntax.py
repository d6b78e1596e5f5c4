"""AUTOMATIC1111 prompt syntax in the SD1.5 engine: the conditioning really changes.

The parser's own semantics are tested in tests/prompts; here each construct is shown to reach
the UNet: equal where A1111 says the prompts are equal, different where they are not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from engine_support import pixels

from toonforge.catalog.manifest import Manifest

Run = Callable[..., Any]


def image(run: Run, **overrides: Any) -> np.ndarray:
    return pixels(run(**overrides).files[0].data)


def differ(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).max() > 2)


def changed(a: np.ndarray, b: np.ndarray) -> bool:
    """For runs with the same batch shape, which are bit-for-bit deterministic: any change.
    (A change of text in the late, low-noise steps moves the tiny model's pixels little.)"""
    return not np.array_equal(a, b)


@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"])
def test_the_loop_matches_the_diffusers_pipeline_on_a_plain_prompt(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any], scheduler: str
) -> None:
    from toonforge.engine.prompt_embeds import encode_prompts
    from toonforge.engine.schedulers import make_scheduler

    params = {**small_params, "prompt": "a cat", "negativePrompt": "ugly", "clipSkip": 1}
    params["scheduler"] = scheduler
    ours = pixels(
        runtime.generate(cartoonmix, params, lambda s, t: None, lambda: False).files[0].data
    )
    model = runtime.model_for(cartoonmix)
    pipe = model.pipe
    pipe.scheduler = make_scheduler(scheduler, model.scheduler_config)
    embeds = encode_prompts(pipe.tokenizer, pipe.text_encoder, "a cat", "ugly", 1)
    theirs = pipe(
        prompt_embeds=embeds.positive,
        negative_prompt_embeds=embeds.negative,
        num_inference_steps=params["steps"],
        guidance_scale=params["scale"],
        width=64,
        height=64,
        generator=[torch.Generator("cpu").manual_seed(params["seed"])],
        output_type="np",
    ).images[0]
    assert np.abs(ours - np.round(theirs * 255).astype(np.int16)).max() <= 1


def test_emphasis_weights(run: Run) -> None:
    plain = image(run, prompt="a cat, purple hair")
    assert np.array_equal(image(run, prompt="a cat, (purple hair:1.0)"), plain)
    # Same batch shape, so runs are bit-for-bit deterministic: any change is the weight's.
    assert changed(image(run, prompt="a cat, (purple hair:1.6)"), plain)
    assert changed(image(run, prompt="a cat, [purple hair]"), plain)
    assert changed(
        image(run, prompt="a cat, ((purple hair))"), image(run, prompt="a cat, (purple hair)")
    )


def test_weighted_embeddings_stay_finite(runtime: Any, cartoonmix: Manifest) -> None:
    """A1111's mean restoration divides by the weighted chunk's mean; the tiny CLIP's final
    layer norm makes that mean ~0, where the division must not produce inf or NaN."""
    from toonforge.engine.prompt_embeds import ClipEncoder, encode_fragments, final_norm_layer
    from toonforge.prompts import parse_attention

    model = runtime.model_for(cartoonmix)
    pipe = model.pipe
    for clip_skip in (1, 4):
        layer = final_norm_layer(pipe.text_encoder, clip_skip)
        encoder = ClipEncoder(pipe.tokenizer, pipe.text_encoder, layer, model.embedding_ids)
        plain = encode_fragments(encoder, parse_attention("a cat, purple hair")).hidden
        for prompt in ("a cat, (purple hair)", "a cat, [purple hair]", "(a cat:1.6), hair"):
            weighted = encode_fragments(encoder, parse_attention(prompt)).hidden
            assert torch.isfinite(weighted).all(), (clip_skip, prompt)
            assert not torch.allclose(weighted, plain)


def test_prompt_editing_switches_at_the_given_step(run: Run) -> None:
    cat, dog = image(run, prompt="a cat"), image(run, prompt="a dog")
    # `when` past the last step: the first text for the whole run, identical to plain "a cat".
    assert np.array_equal(image(run, prompt="a [cat:dog:10]"), cat)
    assert np.array_equal(image(run, prompt="a [cat:dog:0]"), dog)
    # As in AUTOMATIC1111, the sampler's 0-based step is compared with `when`: "cat" is in
    # force for sampler steps 0..2 (three steps), "dog" for the remaining three.
    result = run(prompt="a [cat:dog:2]", steps=6)
    edited = pixels(result.files[0].data)
    assert changed(edited, image(run, prompt="a cat", steps=6))
    assert changed(edited, image(run, prompt="a dog", steps=6))
    assert [s["steps"] for s in result.info["prompt_schedule"]] == [[1, 3], [4, 6]]
    from toonforge.prompts import schedule

    assert schedule("a [cat:dog:0.5]", 6) == schedule("a [cat:dog:3]", 6)
    half = run(prompt="a [cat:dog:0.5]", steps=6)
    assert np.array_equal(pixels(half.files[0].data), image(run, prompt="a [cat:dog:3]", steps=6))


def test_alternation_changes_every_step(run: Run) -> None:
    result = run(prompt="a [cat|dog]")
    alternating = pixels(result.files[0].data)
    assert changed(alternating, image(run, prompt="a cat"))
    assert changed(alternating, image(run, prompt="a dog"))
    # A1111's schedule for 4 steps is cat, dog, cat, dog ending at 1, 2, 3, 4; compared with
    # the 0-based sampler step, that runs cat on steps 1-2, dog on 3, cat on 4.
    spans = [(s["text"], s["steps"]) for s in result.info["prompt_schedule"]]
    assert spans == [("a cat", [1, 2]), ("a dog", [3, 3]), ("a cat", [4, 4])]


def test_and_composition(run: Run) -> None:
    cat = image(run, prompt="a cat")
    # A part of weight 0 adds nothing: the same image up to batching noise.
    assert np.abs(image(run, prompt="a cat AND a dog :0") - cat).max() <= 2
    assert differ(image(run, prompt="a cat AND a dog"), cat)
    assert differ(image(run, prompt="a cat AND a dog :0.5"), image(run, prompt="a cat AND a dog"))


def test_break_starts_a_new_chunk(run: Run) -> None:
    result = run(prompt="a cat BREAK purple hair")
    assert result.info["prompt_chunks"] == 2
    assert differ(pixels(result.files[0].data), image(run, prompt="a cat purple hair"))


def test_scheduled_negative_prompt(run: Run) -> None:
    base = image(run, negativePrompt="ugly")
    assert np.array_equal(image(run, negativePrompt="[ugly:blurry:10]"), base)
    assert changed(image(run, negativePrompt="[ugly:blurry:1]"), base)


def test_an_embedding_in_the_negative_prompt_changes_the_result(run: Run) -> None:
    none = image(run, negativePrompt="")
    with_embedding = image(run, negativePrompt="EasyNegativeV2")
    assert differ(with_embedding, none)
    # A name that is not a loaded embedding is plain text (its BPE tokens), not an embedding.
    assert differ(image(run, negativePrompt="EasyNegativeV9"), with_embedding)


def test_an_unknown_embedding_name_is_tokenized_as_text(runtime: Any, cartoonmix: Manifest) -> None:
    from toonforge.engine.prompt_embeds import ClipEncoder, encode_fragments, final_norm_layer

    model = runtime.model_for(cartoonmix)
    pipe = model.pipe
    encoder = ClipEncoder(
        pipe.tokenizer,
        pipe.text_encoder,
        final_norm_layer(pipe.text_encoder, 1),
        model.embedding_ids,
    )
    known = encode_fragments(encoder, [("EasyNegativeV2", 1.0)])
    unknown = encode_fragments(encoder, [("EasyNegativeV9", 1.0)])
    text_ids = pipe.tokenizer("EasyNegativeV9", add_special_tokens=False).input_ids
    assert known.tokens == 16  # all vectors of the embedding
    assert unknown.tokens == len(text_ids) > 1
    # An embedding's weight scales its vectors like any token's.
    weighted = encode_fragments(encoder, [("EasyNegativeV2", 1.3)])
    assert not torch.allclose(weighted.hidden, known.hidden)


def test_unfinished_syntax_is_used_literally_as_a1111_does(run: Run) -> None:
    result = run(prompt="a [cat:dog:")
    assert result.info["prompt_schedule"] == [
        {"weight": 1.0, "steps": [1, 4], "text": "a [cat:dog:"}
    ]
