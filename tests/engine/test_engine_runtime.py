"""Weights resolution, the runtime's dispatch and pool, and the torch-free import boundary."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from toonforge.catalog.manifest import Manifest
from toonforge.engine.contract import ModelError, WeightsMissing
from toonforge.engine.pool import PipelinePool
from toonforge.engine.weights import resolve_weights
from toonforge.settings import Settings, load_settings


def _real_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # An empty Hugging Face cache, so nothing real is found by accident.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return load_settings(tiny=False, data_dir=tmp_path / "data", models_dir=tmp_path / "models")


def test_missing_checkpoint_names_the_file_and_how_to_get_it(
    cartoonmix: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _real_settings(tmp_path, monkeypatch)
    with pytest.raises(WeightsMissing) as err:
        resolve_weights(settings, cartoonmix)
    message = str(err.value)
    assert "CartoonMix.fp16.safetensors" in message
    assert str(tmp_path / "models" / "CartoonMix.fp16.safetensors") in message
    assert "toonforge models pull 'futurist/CartoonMix v1.0'" in message
    assert "TOONFORGE_MODELS_DIR" in message


def test_missing_config_repo_and_embedding_are_named(
    cartoonmix: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _real_settings(tmp_path, monkeypatch)
    models = tmp_path / "models"
    models.mkdir()
    (models / "CartoonMix.fp16.safetensors").write_bytes(b"placeholder")
    with pytest.raises(WeightsMissing, match="stable-diffusion-v1-5/stable-diffusion-v1-5"):
        resolve_weights(settings, cartoonmix)
    repo = models / "stable-diffusion-v1-5" / "stable-diffusion-v1-5"
    repo.mkdir(parents=True)
    (repo / "model_index.json").write_text("{}")
    with pytest.raises(WeightsMissing, match=r"bad-hands-5\.pt.*nolanaatama/embeddings"):
        resolve_weights(settings, cartoonmix)
    for emb in cartoonmix.backend.embeddings:
        (models / emb.file).parent.mkdir(parents=True, exist_ok=True)
        (models / emb.file).write_bytes(b"placeholder")
    resolved = resolve_weights(settings, cartoonmix)
    assert resolved.checkpoint == models / "CartoonMix.fp16.safetensors"
    assert resolved.base_dir == repo and not resolved.tiny
    assert [t for t, _ in resolved.embeddings] == [e.token for e in cartoonmix.backend.embeddings]


def test_a_source_less_file_says_so(
    cartoonmix: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _real_settings(tmp_path, monkeypatch)
    backend = cartoonmix.backend.model_copy(
        update={
            "checkpoint": cartoonmix.backend.checkpoint.model_copy(  # type: ignore[union-attr]
                update={"url": None, "repo": None, "note": "ask the author"}
            )
        }
    )
    manifest = cartoonmix.model_copy(update={"backend": backend})
    with pytest.raises(WeightsMissing, match=r"No public download is known.*ask the author"):
        resolve_weights(settings, manifest)


def test_unknown_families_are_refused(runtime: Any, cartoonmix: Manifest) -> None:
    # model_copy does not validate: a family the engine does not know reaches the runtime.
    backend = cartoonmix.backend.model_copy(update={"family": "video3d"})
    manifest = cartoonmix.model_copy(update={"backend": backend})
    with pytest.raises(ModelError, match="engine for family video3d is not built yet"):
        runtime.prepare(manifest)


def test_prepare_reuses_the_pipeline_and_says_tiny(
    runtime: Any, cartoonmix: Manifest, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.unload_all()
    with caplog.at_level(logging.WARNING, logger="toonforge.engine"):
        first = runtime.prepare(cartoonmix)
    assert "OFFLINE MODE: tiny stand-in weights" in caplog.text
    assert first["tiny"] is True and first["reused"] is False
    assert first["loaded_from"].endswith(".safetensors")
    second = runtime.prepare(cartoonmix)
    assert second["reused"] is True
    assert len(runtime.pool) == 1


def test_pool_evicts_least_recently_used() -> None:
    evicted: list[str] = []
    pool = PipelinePool(100, on_evict=lambda key, _: evicted.append(key))
    pool.put("a", "A", 40)
    pool.put("b", "B", 40)
    assert pool.get("a") == "A"  # now b is the least recently used
    pool.put("c", "C", 40)
    assert evicted == ["b"] and list(pool) == ["a", "c"]
    pool.put("huge", "H", 500)  # larger than the budget: kept alone
    assert list(pool) == ["huge"] and pool.total_bytes == 500


def test_engine_contract_imports_without_torch() -> None:
    code = (
        "import sys, toonforge.engine, toonforge.engine.contract, toonforge.engine.tiny; "
        "import toonforge.engine.tiny.tokenizer, toonforge.engine.schedulers; "
        "import toonforge.engine.weights; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_nan_latents_are_a_model_error_not_a_black_image() -> None:
    import torch

    from toonforge.engine.common import check_finite

    check_finite(torch.zeros(1, 4, 8, 8), "after denoising")
    bad = torch.zeros(1, 4, 8, 8)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelError, match="NaN or infinite values at denoising step 3"):
        check_finite(bad, "at denoising step 3")
