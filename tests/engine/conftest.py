"""Engine fixtures: one tiny SD1.5 build and one loaded runtime for the whole session."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toonforge.catalog import load_catalog
from toonforge.catalog.manifest import Manifest
from toonforge.settings import Settings, load_settings

CARTOONMIX = "futurist/CartoonMix v1.0"


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Shared with the HTTP end-to-end tests when the top-level conftest set it up.
    shared = os.environ.get("TOONFORGE_TEST_TINY_DIR")
    return Path(shared) if shared else tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_settings(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = tmp_path_factory.mktemp("engine-data")
    settings = load_settings(tiny=True, data_dir=data, tiny_dir=tiny_root, device="cpu")
    if getattr(settings, "tiny_dir", None) is None:
        # Settings without a tiny_dir field: build under the data folder instead.
        settings = load_settings(tiny=True, data_dir=data, device="cpu")
    return settings


@pytest.fixture(scope="session")
def cartoonmix() -> Manifest:
    manifest = load_catalog().by_key(CARTOONMIX)
    assert manifest is not None
    return manifest


@pytest.fixture(scope="session")
def runtime(tiny_settings: Settings) -> Any:
    from toonforge.engine.runtime import EngineRuntime

    return EngineRuntime(tiny_settings)


@pytest.fixture
def small_params(cartoonmix: Manifest) -> dict[str, Any]:
    """The page's defaults, shrunk so a run takes a fraction of a second."""
    params: dict[str, Any] = {spec.name: spec.default for spec in cartoonmix.inputs}
    params.update(
        prompt="a cartoon cat holding a lamp, purple hair",
        samples=1,
        steps=4,
        scale=4.0,
        seed=123456,
        clipSkip=4,
        width=64,
        height=64,
    )
    return params


@pytest.fixture
def run(runtime: Any, cartoonmix: Manifest, small_params: dict[str, Any]) -> Callable[..., Any]:
    """Generate with the small defaults overridden by keyword arguments."""

    def go(**overrides: Any) -> Any:
        params = {**small_params, **overrides}
        return runtime.generate(cartoonmix, params, lambda step, total: None, lambda: False)

    return go
