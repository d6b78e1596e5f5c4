"""The engine as the worker sees it: one object per worker process.

`prepare` loads (or reuses) what a request needs; `generate` runs it. The family modules do
the model work; this module picks the device, owns the shared parts pool, dispatches on
`manifest.backend.family` through the family registry (engine/family.py: the contract every
family keeps), and publishes what is loaded for `toonforge models status`. Only the worker
imports it (it pulls in torch).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from toonforge.catalog.manifest import Manifest
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError, StepCallback, StopCheck
from toonforge.engine.family import Family
from toonforge.engine.family import batch_family as batch_family_for
from toonforge.engine.family import family as family_for
from toonforge.engine.placement import Placement, placing
from toonforge.engine.plan.estimate import GB
from toonforge.engine.plan.on_device import overrides, plan_on_device
from toonforge.engine.plan.planner import Plan
from toonforge.engine.pool import PipelinePool
from toonforge.engine.precision import DTYPES, Precision, choose_precision
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

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
    """The worker-wide default (SD families); each tool's own is `EngineRuntime.precision`."""
    if name != "auto" and name not in DTYPES:
        raise ModelError(f"dtype: unknown dtype {name!r}; expected auto or one of {list(DTYPES)}")
    return choose_precision("sd15", device, name).dtype


def loaded_state_dir(settings: Settings) -> Path:
    """Where each worker publishes what it has loaded (one JSON file per process)."""
    return settings.data_dir / "state" / "loaded"


class EngineRuntime:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = select_device(settings.device)
        if self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            # Pinned to one GPU: allocations without an explicit index land there too.
            torch.cuda.set_device(self.device)
        self.dtype = select_dtype(settings.dtype, self.device)
        budget = int(settings.model_memory_budget_gb * 1024**3)
        if self.device.type == "cuda":
            budget = self._device_budget(budget)
        self.pool = PipelinePool(budget, on_evict=lambda key, _: logger.info("unloading %s", key))
        self.ctx = EngineContext(settings, self.device, self.dtype, self.pool, self._release)
        # Parts hold per-call state (scheduler, active adapters): one request at a time.
        self._lock = threading.RLock()
        self._published = ""
        self._plans: dict[str, tuple[Plan | None, Placement]] = {}
        self._batch_images: dict[tuple[Any, ...], int] = {}  # batch_images, by request shape

    def prepare(self, manifest: Manifest, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Load what the request needs, or reuse it from the pool. Returns what was loaded."""
        with self._lock:
            family = self._family(manifest)
            precision = self._begin(manifest)
            plan, placement = self.placement(manifest)
            try:
                with placing(placement):
                    info = dict(family.prepare(self.ctx, manifest, self._params(manifest, params)))
            finally:
                self._publish()
            info["plan"] = _plan_info(plan, placement)
            info.setdefault("tiny", self.settings.tiny)
            if self.settings.compile != "off" and not all(e["reused"] for e in self.ctx.events):
                info["warmup_seconds"] = self._warm_up(family, manifest)
            info["precision"] = precision.name
            info["device"] = self.device_name
            if precision.note:
                info["precision_note"] = precision.note
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
            self._begin(manifest)
            try:
                with placing(self.placement(manifest)[1]):
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
            module = batch_family_for(manifest.backend.family)
            self._begin(manifest)
            try:
                with placing(self.placement(manifest)[1]):
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
            self._begin(manifest)
            with placing(self.placement(manifest)[1]):
                return family.model_for(self.ctx, manifest, self._params(manifest, params))

    def _warm_up(self, family: Family, manifest: Manifest) -> float:
        """One short run at the page's defaults after a load with torch.compile on, so the
        compilation is not paid by the first user's task."""
        events = list(self.ctx.events)
        params = {**self._params(manifest, None), "steps": 2}
        started = time.monotonic()
        try:
            family.generate(self.ctx, manifest, params, lambda _s, _t: None, lambda: False)
        except ModelError as exc:
            logger.warning("warm-up of %s failed: %s", manifest.key, exc)
        finally:
            self.ctx.events = events
        return round(time.monotonic() - started, 3)

    @property
    def device_name(self) -> str:
        return str(self.device)

    def precision(self, manifest: Manifest) -> Precision:
        """The dtype this tool runs in on this worker's device."""
        try:
            return choose_precision(
                manifest.backend.family, self.device, self.settings.dtype, manifest.backend.dtype
            )
        except ValueError as exc:
            raise ModelError(str(exc)) from exc

    def _device_budget(self, setting: int) -> int:
        """On a GPU the memory plans drive the pool: it keeps parts up to the device's memory
        less the largest activation peak of a tool's default request, never more than
        TOONFORGE_MODEL_MEMORY_BUDGET_GB."""
        from toonforge.catalog import load_catalog
        from toonforge.engine.plan.on_device import detect_device

        try:
            device = detect_device(self.settings, self.device)
            peaks = [
                plan.peak_gb - plan.weights_gb
                for m in load_catalog(self.settings.extra_tools_dirs)
                if m.engine_ready
                for plan in [plan_on_device(m, self.settings, self.device)]
                if plan.fits
            ]
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            logger.warning("no device budget from the memory plans (%s)", exc)
            return setting
        budget = device_pool_budget(setting, device.memory_bytes, peaks)
        logger.info("parts kept on %s up to %.1f GB (memory plans)", self.device, budget / GB)
        return budget

    def batch_images(self, manifest: Manifest, params: dict[str, Any], cap: int) -> int:
        """The most images (at most `cap`) a batched run of tasks like `params` may take here:
        on a GPU, the largest that the tool's memory plan fits on the device at the task's
        size; elsewhere (a CPU, tiny weights, no plan) `cap`, as the plans are not applied
        there (see `placement`)."""
        if self.device.type != "cuda" or self.settings.tiny or cap <= 1:
            return cap
        plan, _ = self.placement(manifest)
        if plan is None:
            return cap
        if not plan.fits:
            return 1
        from toonforge.engine.plan.on_device import detect_device
        from toonforge.engine.plan.planner import images_that_fit
        from toonforge.engine.plan.request import request_for

        negative = bool(str(params.get("negativePrompt") or "").strip())
        key = (manifest.key, params.get("width"), params.get("height"), params.get("scale"))
        key += (negative, cap)
        if key not in self._batch_images:
            device = detect_device(self.settings, self.device)
            req = request_for(manifest, params)
            self._batch_images[key] = images_that_fit(manifest, device, plan, req, cap)
        return self._batch_images[key]

    def placement(self, manifest: Manifest) -> tuple[Plan | None, Placement]:
        """The memory plan for this tool on this worker's device (computed once per tool),
        and what of it is applied (see engine/placement.py)."""
        if manifest.key in self._plans:
            return self._plans[manifest.key]
        plan: Plan | None
        try:
            plan = plan_on_device(manifest, self.settings, self.device)
        except (KeyError, ValueError, OSError) as exc:  # a family or part the planner lacks
            logger.warning("no memory plan for %s: %s", manifest.key, exc)
            plan = None
        if plan is not None and self.device.type == "cuda" and not self.settings.tiny:
            if not plan.fits:
                raise ModelError(plan.message or f"{manifest.key} does not fit on {self.device}")
            placement = Placement(plan.strategy, plan.quantization, plan.use_stream)
        else:
            forced = overrides(manifest, self.settings)
            placement = Placement(
                forced["offload"] if forced["offload"] != "auto" else "none",
                forced["quantization"] if forced["quantization"] != "auto" else "none",
            )
        self._plans[manifest.key] = (plan, placement)
        return plan, placement

    def _begin(self, manifest: Manifest) -> Precision:
        precision = self.precision(manifest)
        self.ctx.begin(manifest.key, precision.dtype)
        return precision

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

    def _family(self, manifest: Manifest) -> Family:
        return family_for(manifest.backend.family)

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


def device_pool_budget(setting_bytes: int, device_bytes: int, activation_gb: list[float]) -> int:
    """Bytes of loaded parts a GPU worker keeps: the device's memory less the largest
    activation peak (GB) any tool's default request needs, at most the setting."""
    headroom = int(max(activation_gb, default=0.0) * GB)
    return max(0, min(setting_bytes, device_bytes - headroom))


def _plan_info(plan: Plan | None, placement: Placement) -> dict[str, Any]:
    """The plan as recorded in a task's debugoutput: what the planner chose for the real
    weights on this device, and what was applied."""
    applied = {"strategy": placement.strategy, "quantization": placement.quantization}
    if plan is None:
        return {"applied": applied}
    return {
        "device": plan.device,
        "memory_gb": plan.memory_gb,
        "strategy": plan.strategy,
        "quantization": plan.quantization,
        "fits": plan.fits,
        "peak_gb": plan.peak_gb,
        "applied": applied,
    }
