"""Whether this server can run a tool now: its engine is built and its weights are on this
host (offline mode: the stand-ins are always there). `engineready` in Tool/List and
Tool/Detail says so, and `enginenote` names what is missing.

Workers read weights from the same models folder and Hugging Face cache as this host; a
worker on another machine with its own weights is not seen from here (see the README).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from toonforge.catalog.manifest import Manifest
from toonforge.catalog.weights_plan import needed_weights
from toonforge.settings import Settings

# Looking weights up touches the filesystem (and the hub cache's index): kept this long.
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class Readiness:
    ready: bool
    note: str


class ToolAvailability:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._cache: dict[str, tuple[float, Readiness]] = {}

    def of(self, manifest: Manifest) -> Readiness:
        if not manifest.engine_ready:
            return Readiness(False, manifest.engine_note)
        if self.settings.tiny:
            return Readiness(True, manifest.engine_note)
        now = time.monotonic()
        hit = self._cache.get(manifest.key)
        if hit is not None and hit[0] > now:
            return hit[1]
        readiness = self._look(manifest)
        self._cache[manifest.key] = (now + CACHE_SECONDS, readiness)
        return readiness

    def _look(self, manifest: Manifest) -> Readiness:
        # engine.weights is torch-free; imported here so the catalog layer stays light.
        from toonforge.engine.weights import locate

        missing = []
        for need in needed_weights(manifest):
            if locate(self.settings, need) is None:
                missing.append(need.repo or (need.file.file if need.file else "?"))
        if not missing:
            return Readiness(True, manifest.engine_note)
        return Readiness(
            False,
            "weights missing on this server: "
            + ", ".join(missing)
            + " (`toonforge models status` says where each goes, `toonforge models pull` "
            "fetches those with a public source); Run queues tasks, which fail until then",
        )
