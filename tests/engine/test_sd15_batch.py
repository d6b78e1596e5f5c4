"""SD1.5 cross-task batching: each task of a batch gets the same PNG bytes as when run alone;
a stopped task leaves without disturbing the others; a bad input fails only its own task."""

from __future__ import annotations

from typing import Any

import pytest

from toonforge.catalog.manifest import Manifest
from toonforge.engine.contract import GenerationInterrupted, GenerationResult, ModelError

SCHEDULERS = ["EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler"]


def _tasks(small_params: dict[str, Any], **shared: Any) -> list[dict[str, Any]]:
    base = {**small_params, "steps": 3, "width": 96, "height": 64, **shared}
    return [
        {**base, "prompt": "a cartoon cat holding a lamp", "seed": 11, "samples": 2},
        # Prompt editing and AND (composable diffusion) change the conditioning per step.
        {**base, "prompt": "[a dog:a fox:1] AND a red hat :0.5", "seed": 5, "samples": 1},
        # A prompt over 75 tokens: a longer encoder state, so a UNet call of its own.
        {**base, "prompt": ", ".join(["a tall green tree"] * 20), "seed": 99, "samples": 1},
        {**base, "prompt": "a purple robot", "negativePrompt": "blurry", "seed": 7, "samples": 1},
    ]


def _alone(runtime: Any, manifest: Manifest, params: dict[str, Any]) -> GenerationResult:
    return runtime.generate(manifest, params, lambda s, t: None, lambda: False)


def _batch(runtime: Any, manifest: Manifest, tasks: list[dict[str, Any]], **kw: Any) -> list[Any]:
    on_step = kw.get("on_step", lambda s, t: None)
    return runtime.generate_batch(manifest, tasks, on_step, kw.get("should_stop", lambda i: False))


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_each_task_in_a_batch_has_the_bytes_it_has_alone(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any], scheduler: str
) -> None:
    tasks = _tasks(small_params, scheduler=scheduler)
    together = _batch(runtime, cartoonmix, tasks)
    assert len(together) == len(tasks)
    for params, outcome in zip(tasks, together, strict=True):
        assert isinstance(outcome, GenerationResult), outcome
        alone = _alone(runtime, cartoonmix, params)
        assert [f.name for f in outcome.files] == [f.name for f in alone.files]
        for a, b in zip(alone.files, outcome.files, strict=True):
            assert a.data == b.data, f"{params['prompt']!r} {a.name} differs in a batch"
        assert outcome.info["seeds"] == alone.info["seeds"]


def test_a_stopped_task_leaves_and_the_others_keep_their_bytes(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]
) -> None:
    # DPM-Solver++ keeps per-row history between steps: dropping rows must cut it too.
    tasks = _tasks(small_params, scheduler="DPMSolverMultistepScheduler", steps=4)
    steps: list[int] = []

    def should_stop(index: int) -> bool:
        return index == 1 and len(steps) >= 2

    outcomes = _batch(
        runtime,
        cartoonmix,
        tasks,
        on_step=lambda s, t: steps.append(s),
        should_stop=should_stop,
    )
    assert steps == [1, 2, 3, 4]
    assert isinstance(outcomes[1], GenerationInterrupted)
    for i in (0, 2, 3):
        assert isinstance(outcomes[i], GenerationResult)
        alone = _alone(runtime, cartoonmix, tasks[i])
        assert [f.data for f in outcomes[i].files] == [f.data for f in alone.files]


def test_a_bad_input_fails_only_its_own_task(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]
) -> None:
    tasks = _tasks(small_params)[:2]
    bad = {**tasks[0], "prompt": "[unclosed", "clipSkip": 99}
    outcomes = _batch(runtime, cartoonmix, [bad, *tasks])
    assert isinstance(outcomes[0], ModelError)
    assert "clipSkip" in str(outcomes[0])
    assert all(isinstance(o, GenerationResult) for o in outcomes[1:])
    alone = _alone(runtime, cartoonmix, tasks[1])
    assert outcomes[2].files[0].data == alone.files[0].data


def test_a_full_batch_of_eight_has_the_bytes_of_each_task_alone(
    runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]
) -> None:
    # The default batch size: 8 one-sample tasks, 16 UNet rows with guidance.
    base = {**small_params, "steps": 2, "width": 64, "height": 64, "samples": 1}
    tasks = [{**base, "prompt": f"a cartoon animal number {i}", "seed": 40 + i} for i in range(8)]
    together = _batch(runtime, cartoonmix, tasks)
    for params, outcome in zip(tasks, together, strict=True):
        assert isinstance(outcome, GenerationResult), outcome
        alone = _alone(runtime, cartoonmix, params)
        assert outcome.files[0].data == alone.files[0].data, f"{params['prompt']!r} differs"
