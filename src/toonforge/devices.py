"""Which device each worker process runs on, and which tools each device takes.

`serve` decides this before any worker starts and gives each worker its device through
TOONFORGE_DEVICE. Pure logic apart from `visible_gpu_count`, which asks a short-lived Python
process (so the API process itself never imports torch or opens a CUDA context).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import subprocess
import sys
from dataclasses import dataclass

log = logging.getLogger("toonforge")


def normalize_device(entry: str) -> str:
    """`0` -> `cuda:0`; `cuda`, `cuda:1`, `cpu`, `mps` as they are."""
    entry = entry.strip().lower()
    if entry.isdigit():
        return f"cuda:{entry}"
    kind, _, index = entry.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(
            f"not a device: {entry!r} (expected a GPU index like 0, cuda:N, cpu or mps)"
        )
    return entry


def parse_devices(spec: str) -> list[str]:
    """TOONFORGE_DEVICES: `0,1,3` (GPU indexes), `cuda:0,cuda:2`, `cpu,cpu`; empty: none set."""
    return [normalize_device(part) for part in spec.split(",") if part.strip()]


def worker_devices(
    workers: int | str, devices: list[str], gpu_count: int, device: str
) -> list[str]:
    """The device of each worker `serve` starts.

    - `devices` set (TOONFORGE_DEVICES): one worker per entry with `workers=auto`, otherwise
      `workers` of them spread over the entries in turn.
    - `workers=auto` without `devices`: one worker per visible GPU (one on `device` if none).
    - a number of workers with `device=auto` and several GPUs: spread over the GPUs in turn,
      so that four workers on a four-GPU box do not all land on GPU 0.
    - otherwise every worker gets `device` (TOONFORGE_DEVICE).
    """
    if devices:
        count = len(devices) if workers == "auto" else int(workers)
        return [devices[i % len(devices)] for i in range(count)]
    if workers == "auto":
        if gpu_count > 0 and device in ("auto", "cuda"):
            return [f"cuda:{i}" for i in range(gpu_count)]
        return [device]
    count = int(workers)
    if device in ("auto", "cuda") and gpu_count > 1:
        return [f"cuda:{i % gpu_count}" for i in range(count)]
    return [device] * count


def visible_gpu_count() -> int:
    """CUDA devices this machine shows (after CUDA_VISIBLE_DEVICES); 0 without CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    # No NVIDIA or ROCm device nodes: no GPU, and no need to start Python with torch to know.
    if not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd")):
        return 0
    code = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
        )
        return int(done.stdout.strip() or 0)
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        log.warning("could not count GPUs (%s); assuming none", exc)
        return 0


@dataclass(frozen=True)
class Placement:
    """TOONFORGE_TOOL_DEVICES: which devices may run which tools, e.g.
    `black-forest-labs/*=cuda:1; futurist/CartoonMix v1.0=cuda:0,cuda:2`.

    Each rule is `PATTERN=DEVICES`; PATTERN matches a tool's `owner/slug` (shell-style
    wildcards, case-insensitive). A tool that no rule names runs on every device; a tool
    that a rule names runs only on the devices of its first matching rule.
    """

    rules: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @classmethod
    def parse(cls, spec: str) -> Placement:
        rules: list[tuple[str, tuple[str, ...]]] = []
        for raw in spec.split(";"):
            if not raw.strip():
                continue
            pattern, sep, devices = raw.partition("=")
            if not sep or not pattern.strip() or not devices.strip():
                raise ValueError(f"tool placement rule {raw.strip()!r}: expected PATTERN=DEVICES")
            rules.append((pattern.strip().lower(), tuple(parse_devices(devices))))
        return cls(tuple(rules))

    def allows(self, tool_key: str, device: str) -> bool:
        device = normalize_device(device) if device not in ("auto", "") else device
        for pattern, devices in self.rules:
            if fnmatch.fnmatchcase(tool_key.lower(), pattern):
                return device in devices
        return True
