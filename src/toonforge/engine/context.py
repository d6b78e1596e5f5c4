"""What a family module gets from the runtime: device, dtype and the shared parts pool.

Every loaded piece (an SD1.5 checkpoint's pipeline, the FLUX base, the SDXL refiner, a motion
adapter) is a *part* in one pool shared by all tools of the worker, keyed by the files it was
loaded from. Two tools on the same base therefore share one copy of it; adapters (LoRAs) are
added to a part and switched per request, never by loading the base again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from toonforge.engine.placement import current_placement
from toonforge.engine.pool import PipelinePool, measure_bytes
from toonforge.engine.tuning import tune_pipeline
from toonforge.settings import Settings

logger = logging.getLogger("toonforge.engine")

T = TypeVar("T")


@dataclass
class EngineContext:
    settings: Settings
    device: torch.device
    dtype: torch.dtype
    pool: PipelinePool
    # Frees what evicted parts held (gc + CUDA cache); set by the runtime.
    release: Callable[[], None] = lambda: None
    # Which parts the current request used, and whether each was already loaded.
    events: list[dict[str, Any]] = field(default_factory=list)
    # The tool the current request is for: recorded beside each part for `models status`.
    tool: str = ""

    @property
    def tiny(self) -> bool:
        return self.settings.tiny

    def part(self, key: str, load: Callable[[], T], estimate_bytes: int = 0) -> T:
        """The part stored under `key`, loading it with `load()` on a miss.

        `key` must identify the files the part comes from (see `weights.stamp`), so that a
        replaced file is loaded again. `estimate_bytes` lets the pool evict before loading, so
        that the old and the new part are not both in memory.
        """
        # One copy per dtype and placement: two tools on the same files may run at
        # different precisions or memory plans.
        key = f"{key}@{str(self.dtype).removeprefix('torch.')}{current_placement().key}"
        cached = self.pool.get(key)
        if cached is not None:
            self.pool.note_user(key, self.tool)
            self.events.append({"part": key, "reused": True})
            return cached
        if self.pool.make_room(estimate_bytes):
            self.release()
        started = time.monotonic()
        value = load()
        tuning = (
            tune_pipeline(value.pipe, self.settings, self.device) if hasattr(value, "pipe") else {}
        )
        seconds = time.monotonic() - started
        size = measure_bytes(value)
        logger.info("loaded part %s in %.2fs (%.1f MB)", key, seconds, size / 1e6)
        if self.pool.put(key, value, size):
            self.release()
        self.pool.note_user(key, self.tool)
        event = {"part": key, "reused": False, "load_seconds": round(seconds, 3)}
        self.events.append({**event, "tuning": tuning} if tuning else event)
        return value

    def begin(self, tool: str, dtype: torch.dtype | None = None) -> None:
        self.tool = tool
        self.events = []
        if dtype is not None:
            self.dtype = dtype
