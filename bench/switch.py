"""Switching between the two FLUX tools: adapter swap against a cold base load, and memory.

A larger stand-in FLUX.1-dev (`toonforge.engine.tiny.flux.BENCH`: 4 double + 8 single blocks,
width 512, ~70M transformer parameters; two rank-16 LoRAs, one Kohya, one PEFT) is laid out
as an operator's models folder (black-forest-labs/FLUX.1-dev/, Toon-Renders.safetensors,
Comics-Factory-v1.safetensors) and run through the engine runtime in real-weights mode, so the
real resolution, pool and adapter code is what is measured.

Printed (no assertions):
- cold load of the base (FluxPipeline.from_pretrained, median over rounds, each after
  unloading everything) against going from Toon-Renders to Comics-Factory: the first switch
  and later switches. A base loads with the LoRAs of every tool that runs on it, so both are
  set_adapters only. Target ratio <= 0.05.
- peak RSS of a process that used one FLUX tool against one that used both (each in its own
  subprocess, one generation per tool). Target ratio <= 1.10.
- parameter bytes of the base against those of each adapter.

    HF_HUB_OFFLINE=1 python bench/switch.py [--rounds 3] [--size 256] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TOON = "WizardWhitebeard/Toon-Renders"
COMICS = "Adel_AI/Comics-Factory-v1"


def models_folder(work: Path) -> Path:
    """The bench stand-in, built once, seen as an operator's models folder (symlinks)."""
    from toonforge.engine.tiny.flux import BASE_REPO, BENCH, ensure_tiny_flux

    paths = ensure_tiny_flux(work / "build", BENCH)
    models = work / "models"
    repo = models / BASE_REPO
    if not repo.exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        repo.symlink_to(paths.base_dir, target_is_directory=True)
        for name, path in paths.loras.items():
            (models / name).symlink_to(path)
    return models


def runtime_for(models: Path, data: Path) -> Any:
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.settings import load_settings

    settings = load_settings(tiny=False, models_dir=models, data_dir=data, device="cpu")
    return EngineRuntime(settings)


def manifests() -> dict[str, Any]:
    from toonforge.catalog import load_catalog

    catalog = load_catalog()
    return {key: catalog.by_key(key) for key in (TOON, COMICS)}


def params(manifest: Any, args: argparse.Namespace) -> dict[str, Any]:
    from toonforge.catalog.validation import validate_inputs

    body = {"steps": args.steps, "width": args.size, "height": args.size}
    return dict(validate_inputs(manifest, body))


def rss_mb(field: str = "VmHWM") -> float:
    """Peak (VmHWM) or current (VmRSS) resident memory of this process, in MB.

    Not getrusage's ru_maxrss: Linux carries it across fork + exec, so a child would report
    its parent's peak (here: the process that built the stand-in).
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def drop_from_page_cache(folder: Path) -> None:
    """Make the next load of `folder`'s weights a cold one (read from disk): ask the kernel to
    drop these files' cached pages (posix_fadvise DONTNEED; no privileges needed, other files
    untouched)."""
    for path in folder.resolve().rglob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def child_switch(args: argparse.Namespace) -> dict[str, Any]:
    from toonforge.engine import flux

    m = manifests()
    rt = runtime_for(Path(args.models), Path(args.data))
    p = {k: params(v, args) for k, v in m.items()}
    base_dir = Path(args.models) / "black-forest-labs" / "FLUX.1-dev"
    cold, warm, first, later = [], [], [], []
    for _ in range(args.rounds):
        # Warm reload (files in the page cache), for reference.
        rt.unload_all()
        warm.append(rt.prepare(m[TOON], p[TOON])["parts"][0]["load_seconds"])
        rt.unload_all()
        drop_from_page_cache(base_dir)
        started = time.perf_counter()
        info = rt.prepare(m[TOON], p[TOON])
        flux.activate(rt.model_for(m[TOON], p[TOON]), m[TOON].backend.loras)
        cold_total = time.perf_counter() - started
        base_event = info["parts"][0]
        assert base_event["reused"] is False
        cold.append(base_event["load_seconds"])
        # First switch: Comics-Factory's LoRA was loaded with the base (every tool on a base
        # gets its adapter when the base loads), so this too is an adapter switch.
        started = time.perf_counter()
        info = rt.prepare(m[COMICS], p[COMICS])
        flux.activate(rt.model_for(m[COMICS], p[COMICS]), m[COMICS].backend.loras)
        first.append(time.perf_counter() - started)
        assert info["parts"][0]["reused"] is True and not info["lora"]["loaded_now"]
        # Later switches: both adapters resident, set_adapters only.
        for key in (TOON, COMICS, TOON, COMICS):
            started = time.perf_counter()
            info = rt.prepare(m[key], p[key])
            flux.activate(rt.model_for(m[key], p[key]), m[key].backend.loras)
            later.append(time.perf_counter() - started)
            assert info["reused"] is True
    model = rt.model_for(m[TOON], p[TOON])
    transformer = model.pipe.transformer
    adapter_bytes: dict[str, int] = {}
    for name, param in transformer.named_parameters():
        for adapter in model.adapters:
            if name.endswith(f".{adapter}.weight") and "lora_" in name:
                size = param.numel() * param.element_size()
                adapter_bytes[adapter] = adapter_bytes.get(adapter, 0) + size
    base_bytes = sum(
        p.numel() * p.element_size()
        for module in (transformer, model.pipe.vae, model.pipe.text_encoder)
        for name, p in module.named_parameters()
        if "lora_" not in name
    )
    base_bytes += sum(p.numel() * p.element_size() for p in model.pipe.text_encoder_2.parameters())
    return {
        "cold_load": cold,
        "warm_load": warm,
        "cold_total_first_tool": cold_total,
        "first_switch": first,
        "later_switch": later,
        "base_bytes": base_bytes,
        "adapter_bytes": adapter_bytes,
    }


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    m = manifests()
    tools = [TOON] if args.child == "memory-one" else [TOON, COMICS]
    rt = runtime_for(Path(args.models), Path(args.data))
    after_import = rss_mb("VmRSS")
    for key in tools:
        p = params(m[key], args)
        rt.prepare(m[key], p)
        rt.generate(m[key], p, lambda s, t: None, lambda: False)
    bases = [x for x in rt.loaded() if x["part"].startswith("flux-base:")]
    return {
        "tools": tools,
        "rss_after_import_mb": after_import,
        "peak_rss_mb": rss_mb(),
        "bases_in_pool": len(bases),
    }


def spawn(child: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        child,
        "--models",
        args.models,
        "--data",
        args.data,
        "--rounds",
        str(args.rounds),
        "--size",
        str(args.size),
        "--steps",
        str(args.steps),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{child} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--work", default="", help="reuse a build folder (default: temporary)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.child:
        import logging

        logging.disable(logging.WARNING)
        result = child_switch(args) if args.child == "switch" else child_memory(args)
        print(json.dumps(result))
        return

    work = Path(args.work or tempfile.mkdtemp(prefix="toonforge-switch-"))
    started = time.perf_counter()
    args.models = str(models_folder(work))
    args.data = str(work / "data")
    print(f"stand-in built in {time.perf_counter() - started:.1f}s under {work}", flush=True)

    sw = spawn("switch", args)
    one = spawn("memory-one", args)
    both = spawn("memory-both", args)

    cold = statistics.median(sw["cold_load"])
    first = statistics.median(sw["first_switch"])
    later = statistics.median(sw["later_switch"])
    mb = 1024 * 1024
    print(f"base parameters: {sw['base_bytes'] / mb:.1f} MB (float32)")
    for name, size in sorted(sw["adapter_bytes"].items()):
        print(f"adapter {name}: {size / mb:.2f} MB ({size / sw['base_bytes']:.2%} of the base)")
    print(
        f"cold load of the base, weights not in the page cache (median of {args.rounds}): "
        f"{cold:.3f}s (warm reload: {statistics.median(sw['warm_load']):.3f}s)"
    )
    print(
        f"first switch Toon-Renders -> Comics-Factory (adapter loaded with the base): {first:.3f}s"
    )
    print(f"later switches (both adapters resident, set_adapters): {later * 1000:.1f} ms")
    print(f"ratio first switch / cold load: {first / cold:.3f} (target <= 0.05)")
    print(f"ratio later switch / cold load: {later / cold:.4f} (target <= 0.05)")
    print(
        f"peak RSS, one FLUX tool: {one['peak_rss_mb']:.0f} MB "
        f"(after imports {one['rss_after_import_mb']:.0f} MB, bases {one['bases_in_pool']})"
    )
    print(
        f"peak RSS, both FLUX tools: {both['peak_rss_mb']:.0f} MB "
        f"(after imports {both['rss_after_import_mb']:.0f} MB, bases {both['bases_in_pool']})"
    )
    print(f"ratio both/one: {both['peak_rss_mb'] / one['peak_rss_mb']:.3f} (target <= 1.10)")
    print(
        f"job per tool: 1 x {args.size}x{args.size}, {args.steps} steps; "
        "real-weights mode on the bench stand-in"
    )


if __name__ == "__main__":
    main()
