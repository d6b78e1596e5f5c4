"""The contract every model family keeps, and the registry that finds them.

A family is a module (`sd15`, `sdxl`, `flux`, `animatediff`) answering the same questions —
the worker's (`prepare`, `generate`), the tools that inspect a loaded model (`model_for`),
and the memory planner's (which parts a tool loads and what its default request is: the
tables in `engine/plan/parts.py`, keyed by the same family names). Like cog's predictor
(`setup` once, `predict` many), loading and running are separate steps: `prepare` may load,
`generate` reuses what is loaded.

Modules satisfy the `Family` protocol structurally; `family(name)` imports one lazily (only
the worker imports torch) and checks it at that moment, so a family missing a function is a
clear error instead of an AttributeError mid-task. `register` adds a family from another
package (`register("mine", "my_package.my_family")`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, cast, runtime_checkable

from toonforge.catalog.manifest import Manifest
from toonforge.engine.context import EngineContext
from toonforge.engine.contract import GenerationResult, ModelError, StepCallback, StopCheck


@runtime_checkable
class Family(Protocol):
    def prepare(
        self, ctx: EngineContext, manifest: Manifest, params: dict[str, Any]
    ) -> dict[str, Any]:
        """Load (or reuse from the pool) what the request needs; what was loaded."""
        ...

    def generate(
        self,
        ctx: EngineContext,
        manifest: Manifest,
        params: dict[str, Any],
        on_step: StepCallback,
        should_stop: StopCheck,
    ) -> GenerationResult:
        """Run the request: files and what was really used."""
        ...

    def model_for(self, ctx: EngineContext, manifest: Manifest, params: dict[str, Any]) -> Any:
        """The loaded family model (pipeline and what it came from)."""
        ...


@runtime_checkable
class BatchFamily(Protocol):
    """A family that samples several tasks in one denoising run (engine/batching.py)."""

    def generate_batch(
        self,
        ctx: EngineContext,
        manifest: Manifest,
        params_list: list[dict[str, Any]],
        on_step: Callable[[int, int], None],
        should_stop: Callable[[int], bool],
    ) -> list[GenerationResult | Exception]:
        """One outcome per task, in order: its result, or the exception that ended it alone."""
        ...


# Families that batch tasks, and the modules that do it.
_BATCH_MODULES: dict[str, str] = {
    "sd15": "toonforge.engine.sd15_batch",
    "sdxl": "toonforge.engine.sdxl_batch",
    "flux": "toonforge.engine.flux_batch",
}

_MODULES: dict[str, str] = {
    "sd15": "toonforge.engine.sd15",
    "sdxl": "toonforge.engine.sdxl",
    "flux": "toonforge.engine.flux",
    "animatediff": "toonforge.engine.animatediff",
}


def register(name: str, module: str, batch_module: str | None = None) -> None:
    """Make `backend.family: name` run through `module` (imported when first used), and
    batches of its tasks through `batch_module` if given."""
    _MODULES[name] = module
    if batch_module:
        _BATCH_MODULES[name] = batch_module


def batches(name: str) -> bool:
    return name in _BATCH_MODULES


def batch_family(name: str) -> BatchFamily:
    if name not in _BATCH_MODULES:
        raise ModelError(f"engine for family {name} does not batch tasks")
    module = importlib.import_module(_BATCH_MODULES[name])
    if not isinstance(module, BatchFamily):
        raise ModelError(f"family {name} ({_BATCH_MODULES[name]}) lacks generate_batch")
    return cast(BatchFamily, module)


def names() -> list[str]:
    return sorted(_MODULES)


def family(name: str) -> Family:
    """The family module for `backend.family`, checked against the contract."""
    if name not in _MODULES:
        raise ModelError(f"engine for family {name} is not built yet")
    try:
        module = importlib.import_module(_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name != _MODULES[name]:
            raise
        raise ModelError(f"engine for family {name} is not built yet") from exc
    if not isinstance(module, Family):
        missing = [f for f in ("prepare", "generate", "model_for") if not hasattr(module, f)]
        raise ModelError(f"family {name} ({_MODULES[name]}) lacks {', '.join(missing)}")
    return cast(Family, module)
