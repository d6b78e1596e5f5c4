"""SDXL cross-task batching (base, LoRA and refiner): each task of a batch gets the same PNG
bytes as when run alone, and a task stopped during the refiner's part leaves alone."""

from __future__ import annotations

from typing import Any

import pytest

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest
from toonforge.catalog.validation import validate_inputs
from toonforge.engine.contract import GenerationInterrupted, GenerationResult
from toonforge.engine.runtime import EngineRuntime
from toonforge.settings import Settings

RETRO = "retroAIx/Retro-Cartoons"


@pytest.fixture(scope="module")
def retro() -> Manifest:
    manifest = load_catalog().by_key(RETRO)
    assert manifest is not None
    return manifest


@pytest.fixture(scope="module")
def rt(tiny_settings: Settings) -> EngineRuntime:
    return EngineRuntime(tiny_settings)


def _tasks(retro: Manifest, **shared: Any) -> list[dict[str, Any]]:
    base = validate_inputs(retro, {})
    base.update(steps=5, stepsRefiner=10, width=64, height=64, **shared)
    return [
        {**base, "prompt": "btstyle, a cartoon bat", "seed": 3, "samples": 2},
        {**base, "prompt": "[a cat:a dog:2] AND a hat :0.7", "seed": 8, "samples": 1},
        {**base, "prompt": "a robot", "negativePrompt": "", "seed": 21, "samples": 1},
    ]


def _alone(rt: EngineRuntime, retro: Manifest, params: dict[str, Any]) -> GenerationResult:
    return rt.generate(retro, params, lambda s, t: None, lambda: False)


@pytest.mark.parametrize("refiner", ["", "--only_base_model"])
def test_each_sdxl_task_in_a_batch_has_the_bytes_it_has_alone(
    rt: EngineRuntime, retro: Manifest, refiner: str
) -> None:
    tasks = _tasks(retro, refiner=refiner)
    steps: list[tuple[int, int]] = []
    outcomes = rt.generate_batch(retro, tasks, lambda s, t: steps.append((s, t)), lambda i: False)
    alone_results = [_alone(rt, retro, p) for p in tasks]
    assert steps == [(i, len(steps)) for i in range(1, len(steps) + 1)]
    for params, outcome, alone in zip(tasks, outcomes, alone_results, strict=True):
        assert isinstance(outcome, GenerationResult), outcome
        assert outcome.info["refiner_steps_run"] == alone.info["refiner_steps_run"]
        assert [f.data for f in outcome.files] == [f.data for f in alone.files], params["prompt"]
    if refiner == "":
        assert alone_results[0].info["refiner_steps_run"] > 0


def test_a_task_stopped_in_the_refiner_leaves_alone(rt: EngineRuntime, retro: Manifest) -> None:
    tasks = _tasks(retro, refiner="")
    alone = [_alone(rt, retro, p) for p in tasks]
    base_run, refiner_run = alone[0].info["base_steps_run"], alone[0].info["refiner_steps_run"]
    assert refiner_run >= 2
    seen: list[int] = []
    outcomes = rt.generate_batch(
        retro,
        tasks,
        lambda s, t: seen.append(s),
        # Stopped after the refiner's first step.
        lambda i: i == 0 and seen[-1] == base_run + 1,
    )
    assert seen == list(range(1, base_run + refiner_run + 1))
    assert isinstance(outcomes[0], GenerationInterrupted)
    for i in (1, 2):
        assert isinstance(outcomes[i], GenerationResult)
        assert [f.data for f in outcomes[i].files] == [f.data for f in alone[i].files]
