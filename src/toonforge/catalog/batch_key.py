"""Which queued tasks may share one denoising run: the batch key, computed once at Run.

Two tasks of the same tool can be sampled together when everything that shapes the run is the
same (size, steps, scheduler, guidance, clip skip, refiner settings, the tool's LoRAs, which
come with the tool) and only what each sample row carries may differ: the prompts and the
seeds (and the number of samples, which is just more rows). The key is a digest of the tool
and of every validated input except those; tasks with equal keys are claimed together (see
`toonforge.tasks.batch_claim`). Tools whose engine cannot batch, and requests with file
inputs, get no key and always run alone. Pure Python: the API computes it, never torch.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from toonforge.catalog.manifest import Manifest

# Engine families whose sampling loop batches tasks (toonforge.engine.batching).
BATCHING_FAMILIES = frozenset({"sd15", "sdxl", "flux"})
# Inputs that may differ between the tasks of one batch: each task's rows carry their own.
PER_TASK_INPUTS = frozenset({"prompt", "negativePrompt", "seed", "samples"})


def batch_key(manifest: Manifest, params: dict[str, Any]) -> str | None:
    """The key shared by the requests that can run in one batch, or None (always alone)."""
    if manifest.backend.family not in BATCHING_FAMILIES:
        return None
    if any(spec.is_file and params.get(spec.name) for spec in manifest.inputs):
        return None
    shared = {k: v for k, v in params.items() if k not in PER_TASK_INPUTS}
    text = json.dumps([manifest.key, shared], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]
