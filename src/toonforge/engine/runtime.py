"""The engine as the worker sees it: one object per worker process.

`prepare` resolves and loads (or reuses) a tool's pipeline; `generate` runs it. The family
modules do the model work; this module picks the device, keeps the pool, and dispatches on
`manifest.backend.family`. Only the worker imports it (it pulls in torch).
"""

from __future__ import annotations

import gc
import importlib
import logging
import threading
import time
from typing import Any

import torch

from toonforge.catalog.manifest import Manifest
from toonforge.engine.contract import GenerationResult, ModelError, StepCallback, StopCheck
from toonforge.engine.pool import PipelinePool
from toonforge.engine.weights import resolve_weights
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

# family -> module with `load(weights, device, dtype)` and
# `generate(model, manifest, params, on_step, should_stop)`; imported on first use.
FAMILY_MODULES = {"sd15": "toonforge.engine.sd15"}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"device: unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} was requested but CUDA is not available here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ModelError(f"device {name!r} was requested but MPS is not available here")
    return device


def select_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # Half precision halves memory on GPUs; on CPU it is slow or unsupported.
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in _DTYPES:
        raise ModelError(f"dtype: unknown dtype {name!r}; expected auto or one of {list(_DTYPES)}")
    return _DTYPES[name]


class EngineRuntime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = select_device(settings.device)
        self.dtype = select_dtype(settings.dtype, self.device)
        budget = int(settings.model_memory_budget_gb * 1024**3)
        self.pool = PipelinePool(budget, on_evict=lambda key, _: logger.info("unloading %s", key))
        # Pipelines hold per-call state (scheduler, interrupt flag): one generation at a time.
        self._lock = threading.RLock()

    def prepare(self, manifest: Manifest) -> dict[str, Any]:
        """Load the tool's pipeline, or reuse it from the pool. Returns what was loaded."""
        with self._lock:
            model, reused = self._model(manifest)
            info = dict(model.describe())
            info.update(reused=reused, load_seconds=round(model.load_seconds, 3))
            return info

    def generate(
        self,
        manifest: Manifest,
        params: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> GenerationResult:
        with self._lock:
            model, _ = self._model(manifest)
            family = self._family(manifest)
            result = family.generate(model, manifest, params, on_step, should_stop)
            if model.weights.tiny:
                result.info["warning"] = "OFFLINE MODE: tiny stand-in weights, not the real model"
            return result

    def model_for(self, manifest: Manifest) -> Any:
        """The loaded family model (e.g. `Sd15Model`) for a tool, loading it if needed: for
        tools that inspect a pipeline, such as prompt token counting."""
        with self._lock:
            return self._model(manifest)[0]

    def unload_all(self) -> None:
        with self._lock:
            self.pool.clear()
            self._release_memory()

    def _family(self, manifest: Manifest) -> Any:
        family = manifest.backend.family
        if family not in FAMILY_MODULES:
            raise ModelError(f"engine for family {family} is not built yet")
        return importlib.import_module(FAMILY_MODULES[family])

    def _model(self, manifest: Manifest) -> tuple[Any, bool]:
        family = self._family(manifest)
        weights = resolve_weights(self.settings, manifest)
        key = weights.identity
        cached = self.pool.get(key)
        if cached is not None:
            return cached, True
        if weights.tiny:
            logger.warning(
                "OFFLINE MODE: tiny stand-in weights for %s (random weights from %s); "
                "outputs are not the real model's",
                manifest.key,
                weights.checkpoint or weights.base_dir,
            )
        # File sizes stand in for the footprint until the model is loaded and measured.
        estimate = sum(p.stat().st_size for p in weights.files if p.is_file())
        if self.pool.make_room(estimate):
            self._release_memory()
        started = time.monotonic()
        model = family.load(weights, self.device, self.dtype)
        logger.info(
            "loaded %s (%s) on %s/%s in %.2fs, %.1f MB of parameters",
            manifest.key,
            manifest.backend.family,
            self.device,
            str(self.dtype).removeprefix("torch."),
            time.monotonic() - started,
            model.size_bytes / 1e6,
        )
        if self.pool.put(key, model, model.size_bytes):
            self._release_memory()
        return model, False

    def _release_memory(self) -> None:
        # Evicted pipelines hold reference cycles (modules <-> hooks); collect them now and
        # give their CUDA blocks back so the next load can use them.
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
