"""A prepared GPU check: every tool at its page's defaults, one after another, in-process.

For each tool it prints seconds per image (or per video frame), denoising steps per second,
the peak device memory (`torch.cuda.max_memory_allocated` on CUDA; the process's peak
resident memory on the CPU, which includes everything loaded before) and the memory plan the
worker used. Run it on the GPU machine you are sizing:

    HF_HUB_OFFLINE=1 python bench/gpu.py                 # real weights, the worker's device
    python bench/gpu.py --tool 'futurist/CartoonMix v1.0' --json
    python bench/gpu.py --tiny                           # tiny stand-ins on the CPU

`--steps`, `--size`, `--samples` and `--frames` shrink the page's defaults (the test suite
runs `--tiny` with them so that this script keeps working).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _peak_bytes(torch: Any, device: Any) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _params(manifest: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toonforge.catalog.validation import validate_inputs

    params = validate_inputs(manifest, {})
    overrides = {
        "steps": args.steps,
        "samples": args.samples,
        "frameNumber": args.frames,
        "width": args.size,
        "height": args.size,
    }
    for name, value in overrides.items():
        if value is not None and name in params:
            params[name] = value
    return params


def _images(manifest: Any, params: dict[str, Any], result: Any) -> tuple[int, str]:
    """How many images (or frames) the run made, and which."""
    if manifest.backend.family == "animatediff":
        return int(params.get("frameNumber") or 1), "frame"
    return max(1, len(result.files)), "image"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from toonforge.catalog import load_catalog
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.settings import load_settings

    overrides: dict[str, Any] = {}
    if args.tiny:
        data = Path(args.data_dir or tempfile.mkdtemp(prefix="toonforge-gpu-bench-"))
        tiny_dir = os.environ.get("TOONFORGE_TEST_TINY_DIR") or os.environ.get("TOONFORGE_TINY_DIR")
        overrides = {"tiny": True, "data_dir": data, "device": "cpu"}
        if tiny_dir:
            overrides["tiny_dir"] = Path(tiny_dir)
    settings = load_settings(**overrides)
    runtime = EngineRuntime(settings)
    tools = [m for m in load_catalog(settings.extra_tools_dirs) if m.engine_ready]
    if args.tool:
        tools = [m for m in tools if m.key == args.tool or m.cleanslug == args.tool]
        if not tools:
            raise SystemExit(f"--tool: no runnable tool {args.tool!r}")
    rows: list[dict[str, Any]] = []
    for manifest in tools:
        params = _params(manifest, args)
        steps: list[float] = []
        info = runtime.prepare(manifest, params)  # loading is not part of the figures
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(runtime.device)

        def on_step(_step: int, _total: int, steps: list[float] = steps) -> None:
            steps.append(time.perf_counter())

        started = time.perf_counter()
        result = runtime.generate(manifest, params, on_step, lambda: False)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        count, unit = _images(manifest, params, result)
        step_rate = (len(steps) - 1) / (steps[-1] - steps[0]) if len(steps) > 1 else 0.0
        plan = info.get("plan", {})
        rows.append(
            {
                "tool": manifest.key,
                "device": str(runtime.device),
                "dtype": info.get("precision", ""),
                "request": {k: params[k] for k in ("width", "height", "steps") if k in params},
                unit + "s": count,
                f"seconds_per_{unit}": round(seconds / count, 4),
                "steps_per_second": round(step_rate, 3),
                "peak_memory_gb": round(_peak_bytes(torch, runtime.device) / 2**30, 3),
                "plan": plan,
            }
        )
        runtime.unload_all()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny stand-ins on the CPU")
    parser.add_argument("--tool", help="one tool (owner/slug or clean slug)")
    parser.add_argument("--steps", type=int, help="denoising steps instead of the page's")
    parser.add_argument("--size", type=int, help="width and height instead of the page's")
    parser.add_argument("--samples", type=int, help="images per request instead of the page's")
    parser.add_argument("--frames", type=int, help="video frames instead of the page's")
    parser.add_argument("--data-dir", help="data folder for --tiny (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    args = parser.parse_args(argv)
    rows = run(args)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        unit = "frame" if "frames" in row else "image"
        per = row[f"seconds_per_{unit}"]
        plan = row["plan"]
        applied = plan.get("applied", {})
        print(
            f"{row['tool']:<40} {row['device']:<7} {row['dtype']:<9} "
            f"{per:>8.3f} s/{unit}  {row['steps_per_second']:>7.2f} steps/s  "
            f"peak {row['peak_memory_gb']:.2f} GB  plan {applied.get('strategy', '?')}"
            f"/{applied.get('quantization', '?')} (planner for real weights: "
            f"{plan.get('strategy', '?')}, peak {plan.get('peak_gb', '?')} GB)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
