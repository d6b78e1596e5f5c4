"""The engine as the worker sees it: one object per worker process.

`prepare` loads (or reuses) what a request needs; `generate` runs it. The family modules do
the model work; this module picks the device, owns the shared parts pool, dispatches on
`manifest.backend.family`, and publishes what is loaded for `toonforge models status`. Only
the worker imports it (it pulls in torch).

A family module exposes:
    prepare(ctx: EngineContext, manifest, params) -> dict     # load; info for debugoutput
    generate(ctx, manifest, params, on_step, should_stop) -> GenerationResult
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from toonforge.catalog.manifest import Manifest
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError, StepCallback, StopCheck
from toonforge.engine.pool import PipelinePool
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

FAMILY_MODULES = {
    "sd15": "toonforge.engine.sd15",
    "sdxl": "toonforge.engine.sdxl",
    "flux": "toonforge.engine.flux",
    "animatediff": "toonforge.engine.animatediff",
}
# Families that sample several tasks in one run (toonforge.engine.batching).
BATCH_MODULES = {
    "sd15": "toonforge.engine.sd15_batch",
    "sdxl": "toonforge.engine.sdxl_batch",
}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
TINY_WARNING = "OFFLINE MODE: tiny stand-in weights, not the real model"


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


def loaded_state_dir(settings: Settings) -> Path:
    """Where each worker publishes what it has loaded (one JSON file per process)."""
    return settings.data_dir / "state" / "loaded"


class EngineRuntime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = select_device(settings.device)
        self.dtype = select_dtype(settings.dtype, self.device)
        budget = int(settings.model_memory_budget_gb * 1024**3)
        self.pool = PipelinePool(budget, on_evict=lambda key, _: logger.info("unloading %s", key))
        self.ctx = EngineContext(settings, self.device, self.dtype, self.pool, self._release)
        # Parts hold per-call state (scheduler, active adapters): one request at a time.
        self._lock = threading.RLock()
        self._published = ""

    def prepare(self, manifest: Manifest, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load what the request needs, or reuse it from the pool. Returns what was loaded."""
        with self._lock:
            family = self._family(manifest)
            self.ctx.begin(manifest.key)
            try:
                info = dict(family.prepare(self.ctx, manifest, self._params(manifest, params)))
            finally:
                self._publish()
            info.setdefault("tiny", self.settings.tiny)
            info["reused"] = all(e["reused"] for e in self.ctx.events)
            info["parts"] = list(self.ctx.events)
            return info

    def generate(
        self,
        manifest: Manifest,
        params: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> GenerationResult:
        with self._lock:
            family = self._family(manifest)
            self.ctx.begin(manifest.key)
            try:
                result = family.generate(self.ctx, manifest, params, on_step, should_stop)
            finally:
                self._publish()
            if self.settings.tiny:
                result.info["warning"] = TINY_WARNING
            return result

    def generate_batch(
        self,
        manifest: Manifest,
        params_list: list[dict[str, Any]],
        on_step: StepCallback,
        should_stop: Callable[[int], bool],
    ) -> list[GenerationResult | Exception]:
        """Several tasks of one batch key in one run: one outcome per task, in order (its
        result, or the exception that ended it alone). See toonforge.engine.batching."""
        with self._lock:
            family = manifest.backend.family
            if family not in BATCH_MODULES:
                raise ModelError(f"engine for family {family} does not batch tasks")
            module = importlib.import_module(BATCH_MODULES[family])
            self.ctx.begin(manifest.key)
            try:
                outcomes = module.generate_batch(
                    self.ctx, manifest, params_list, on_step, should_stop
                )
            finally:
                self._publish()
            for outcome in outcomes:
                if self.settings.tiny and isinstance(outcome, GenerationResult):
                    outcome.info["warning"] = TINY_WARNING
            return list(outcomes)

    def model_for(self, manifest: Manifest, params: dict[str, Any] | None = None) -> Any:
        """The loaded family model for a tool (e.g. `Sd15Model`), loading it if needed: for
        code that inspects a pipeline, such as prompt token counting."""
        with self._lock:
            family = self._family(manifest)
            self.ctx.begin(manifest.key)
            return family.model_for(self.ctx, manifest, self._params(manifest, params))

    def unload_all(self) -> None:
        with self._lock:
            self.pool.clear()
            self._release()
            self._publish()

    def loaded(self) -> list[dict[str, Any]]:
        return self.pool.snapshot()

    @staticmethod
    def _params(manifest: Manifest, params: dict[str, Any] | None) -> dict[str, Any]:
        if params is not None:
            return params
        from toonforge.catalog.validation import validate_inputs

        return validate_inputs(manifest, {})

    def _family(self, manifest: Manifest) -> Any:
        family = manifest.backend.family
        if family not in FAMILY_MODULES:
            raise ModelError(f"engine for family {family} is not built yet")
        try:
            return importlib.import_module(FAMILY_MODULES[family])
        except ModuleNotFoundError as exc:
            if exc.name != FAMILY_MODULES[family]:
                raise
            raise ModelError(f"engine for family {family} is not built yet") from exc

    def _release(self) -> None:
        # Evicted parts hold reference cycles (modules <-> hooks); collect them now and give
        # their CUDA blocks back so the next load can use them.
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _publish(self) -> None:
        """Write what is loaded to `<data>/state/loaded/<pid>.json` (atomically), when it
        changed (twice per task otherwise, on the fixed cost of every task)."""
        folder = loaded_state_dir(self.settings)
        try:
            doc = {"pid": os.getpid(), "device": str(self.device), "parts": self.loaded()}
            text = json.dumps(doc)
            if text == self._published:
                return
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, folder / f"{os.getpid()}.json")
            self._published = text
        except OSError as exc:  # status is informative; never fail a task for it
            logger.warning("could not publish loaded models: %s", exc)
