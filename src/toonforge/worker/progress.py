"""The `task_output` progress message, in the hosted service's shape."""

from __future__ import annotations

import time
from typing import Any


class ProgressMeter:
    def __init__(self, task_name: str = "Generate") -> None:
        self.task_name = task_name
        self.started = time.monotonic()

    def message(self, step: int, total: int) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        speed = step / elapsed
        remaining = (total - step) / speed if speed > 0 else 0.0
        return {
            "type": "progressGenerate",
            "task": self.task_name,
            "percentage": str(round(100 * step / total)) if total else "0",
            "stepCurrent": str(step),
            "stepTotal": str(total),
            "speed": f"{speed:.2f}" if speed >= 1 else f"{1 / speed:.2f}",
            "speedType": "it/s" if speed >= 1 else "s/it",
            "elapsedTime": f"{int(elapsed)}s",
            "remainingTime": f"{round(remaining)}s",
        }
