"""FLUX cross-task batching: each task of a batch gets the same PNG bytes as when run alone
(with and without true CFG); a stopped task leaves without disturbing the others; a bad
input fails only its own task."""

from __future__ import annotations

from typing import Any

import pytest

from toonforge.catalog import load_catalog
from toonforge.catalog.batch_key import batch_key
from toonforge.catalog.manifest import Manifest
from toonforge.engine.contract import GenerationInterrupted, GenerationResult, ModelError

TOON = "WizardWhitebeard/Toon-Renders"  # distilled guidance only
BASE = {"steps": 3, "scale": 3.5, "width": 96, "height": 64}


@pytest.fixture(scope="module")
def toon() -> Manifest:
    m = load_catalog().by_key(TOON)
    assert m is not None
    return m


def _tasks(**shared: Any) -> list[dict[str, Any]]:
    base = {**BASE, **shared}
    return [
        {**base, "prompt": "w1z_r3nd3r, a potato with a face", "seed": 11, "samples": 2},
        # A JSON prompt: another text for each encoder.
        {**base, "prompt": '{"T5": "a long story of a fox", "CLIP-L": "fox"}', "seed": 5},
        {**base, "prompt": "a purple robot", "negativePrompt": "blurry", "seed": 7},
    ]


def _alone(runtime: Any, manifest: Manifest, params: dict[str, Any]) -> GenerationResult:
    return runtime.generate(manifest, {"samples": 1, **params}, lambda s, t: None, lambda: False)


def _batch(runtime: Any, manifest: Manifest, tasks: list[dict[str, Any]], **kw: Any) -> list[Any]:
    tasks = [{"samples": 1, **t} for t in tasks]
    on_step = kw.get("on_step", lambda s, t: None)
    return runtime.generate_batch(manifest, tasks, on_step, kw.get("should_stop", lambda i: False))


def _same_bytes(runtime: Any, manifest: Manifest, params: dict[str, Any], outcome: Any) -> None:
    assert isinstance(outcome, GenerationResult), outcome
    alone = _alone(runtime, manifest, params)
    assert [f.name for f in outcome.files] == [f.name for f in alone.files]
    for a, b in zip(alone.files, outcome.files, strict=True):
        assert a.data == b.data, f"{params['prompt']!r} {a.name} differs in a batch"
    assert outcome.info["seeds"] == alone.info["seeds"]


def test_flux_tasks_share_a_batch_key_when_only_prompts_and_seeds_differ(toon: Manifest) -> None:
    keys = {batch_key(toon, {"samples": 1, **t}) for t in _tasks()}
    assert len(keys) == 1 and None not in keys
    assert batch_key(toon, {**BASE, "prompt": "x", "seed": 1, "steps": 4}) not in keys


@pytest.mark.parametrize("true_cfg", [False, True])
def test_each_flux_task_in_a_batch_has_the_bytes_it_has_alone(
    runtime: Any, toon: Manifest, true_cfg: bool
) -> None:
    """With true CFG on, the task with a negative prompt gets a negative pass of its own
    rows and the others none, as each would alone."""
    manifest = toon
    if true_cfg:
        backend = toon.backend.model_copy(update={"true_cfg": True, "true_cfg_scale": 3.0})
        manifest = toon.model_copy(update={"backend": backend})
    tasks = _tasks()
    together = _batch(runtime, manifest, tasks)
    assert len(together) == len(tasks)
    for params, outcome in zip(tasks, together, strict=True):
        _same_bytes(runtime, manifest, params, outcome)
    assert bool(together[2].info["true_cfg"]) is true_cfg
    assert together[0].info["true_cfg"] is False


def test_a_stopped_flux_task_leaves_and_the_others_keep_their_bytes(
    runtime: Any, toon: Manifest
) -> None:
    tasks = _tasks(steps=4)
    steps: list[int] = []
    outcomes = _batch(
        runtime,
        toon,
        tasks,
        on_step=lambda s, t: steps.append(s),
        should_stop=lambda index: index == 0 and len(steps) >= 2,
    )
    assert steps == [1, 2, 3, 4]
    assert isinstance(outcomes[0], GenerationInterrupted)
    for i in (1, 2):
        _same_bytes(runtime, toon, tasks[i], outcomes[i])


def test_a_bad_flux_input_fails_only_its_own_task(runtime: Any, toon: Manifest) -> None:
    tasks = _tasks()
    tasks[1] = {**tasks[1], "prompt": '{"T5": 5}'}  # a JSON prompt's value must be text
    outcomes = _batch(runtime, toon, tasks)
    assert isinstance(outcomes[1], ModelError), outcomes[1]
    for i in (0, 2):
        _same_bytes(runtime, toon, tasks[i], outcomes[i])
