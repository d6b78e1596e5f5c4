"""`toonforge models plan [TOOL] [--gpu-memory GB] [--json]`: per tool, the parts it loads
(parameters, storage dtype, bytes), the estimated peak of the page's default request, the
memory strategy chosen and whether it fits (see toonforge.engine.plan)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from toonforge.catalog import load_catalog
from toonforge.cli.common import settings_from_args
from toonforge.cli.models_cmd import _find as find_tool
from toonforge.engine.plan.estimate import GB
from toonforge.engine.plan.on_device import (
    available_quantizations,
    detect_device,
    host_memory_bytes,
    overrides,
)
from toonforge.engine.plan.planner import Device, Plan, plan_tool

STRATEGY_TEXT = {
    "none": "fully resident",
    "group": "group offloading (block level)",
    "model": "model CPU offload",
    "sequential": "sequential CPU offload",
}
STORAGE_TEXT = {"fp8": "fp8 layerwise casting", "nf4": "bitsandbytes NF4"}


def strategy_text(plan: Plan) -> str:
    text = STRATEGY_TEXT[plan.strategy]
    if plan.use_stream:
        text += " with a CUDA stream"
    if plan.quantization != "none":
        q = plan.quantization
        text += f", {STORAGE_TEXT.get(q, q.replace('gguf-', 'GGUF ').upper())}"
    else:
        text += f", {plan.compute_dtype}"
    return text


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def print_plan(plan: Plan) -> None:
    print(f"\n{plan.tool} ({plan.family}, computes in {plan.compute_dtype}): {plan.request}")
    print(f"  {'part':<16}{'parameters':>12}  {'storage':<10}{'size':>10}")
    for part in plan.parts:
        size = f"{part.bytes / GB:.2f} GB"
        print(f"  {part.name:<16}{_count(part.parameters):>12}  {part.dtype:<10}{size:>10}")
    verdict = "fits" if plan.fits else "DOES NOT FIT"
    print(
        f"  plan: {strategy_text(plan)}; peak {plan.peak_gb:.2f} GB of {plan.memory_gb:.1f} GB"
        f" ({verdict}, largest while the {plan.peak_module} runs)"
    )
    if plan.host_gb:
        print(f"  host memory for the offloaded weights: {plan.host_gb:.1f} GB")
    if plan.message:
        print(f"  {plan.message}")


def plan(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    catalog = load_catalog(settings.extra_tools_dirs)
    manifests = [find_tool(catalog, args.tool)] if args.tool else list(catalog)
    for flag in ("gpu_memory", "host_memory"):
        value = getattr(args, flag)
        if value is not None and value <= 0:
            name = flag.replace("_", "-")
            raise SystemExit(f"toonforge: --{name} must be a positive number of GB")
    host: int | None = None
    if args.gpu_memory is not None:
        device = Device("cuda", int(args.gpu_memory * GB), "--gpu-memory")
    else:
        device = detect_device(settings)
        host = host_memory_bytes()  # planning for this machine: its host memory counts
    if args.host_memory is not None:
        host = int(args.host_memory * GB)
    available = available_quantizations(device.kind)
    plans = []
    for m in manifests:
        plans.append(
            plan_tool(m, device, **overrides(m, settings), available=available, host_memory=host)
        )
    if args.json:
        print(json.dumps([p.to_json() for p in plans], indent=2))
        return 0
    print(f"planned for: {device.kind}, {device.memory_gb:.1f} GB ({device.source})")
    print(f"storage formats available here: {', '.join(available)}")
    checked = f"{host / GB:.1f} GB" if host is not None else "not checked (--host-memory GB)"
    print(f"host memory for offloaded weights: {checked}")
    if device.kind == "cpu":
        print("no CUDA device: plans are for the CPU (float32, nothing to offload to)")
    for p in plans:
        print_plan(p)
    return 0


def register(models_sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = models_sub.add_parser(
        "plan", help="memory plan per tool: parts, peak estimate, offload and quantization"
    )
    common(p)
    p.add_argument("tool", nargs="?", help="OWNER/SLUG (default: every tool)")
    p.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GB",
        help="plan for a CUDA device of this memory (GB of 2^30 bytes; default: this "
        "machine's device, TOONFORGE_GPU_MEMORY_GB)",
    )
    p.add_argument(
        "--host-memory",
        type=float,
        metavar="GB",
        help="host memory the offloaded weights may use (default: this machine's available "
        "memory when planning for its own device; not checked with --gpu-memory)",
    )
    p.add_argument("--json", action="store_true", help="print the plans as JSON")
    p.set_defaults(func=plan)
