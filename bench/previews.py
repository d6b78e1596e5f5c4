"""What WebSocket previews cost the worker.

Printed (no assertions):
1. One preview (latent-to-RGB map + WebP encode of the data: URL) at the latent sizes of
   real requests: SD1.5 512x512, SDXL 1024x1024, FLUX 1024x1024 (packed latents),
   AnimateDiff 512x512 x 16 frames. Median over rounds, in ms.
2. Tiny stand-in runs through the engine runtime (CPU): ms per step without previews, and
   with a preview asked at every step (the worker asks every `preview_every_steps`, 3 by
   default, so the real overhead per step is a third of the difference or less).
3. The worker's per-step database cost of asking whether previews are wanted: one primary-
   key read of task_previews inside the progress transaction (SQLite, in a temp folder).

    HF_HUB_OFFLINE=1 python bench/previews.py [--rounds 20] [--steps 8] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from toonforge.engine import preview as pv

REAL_SIZES = {
    "sd15 512x512": (pv.SD15, (1, 4, 64, 64)),
    "sdxl 1024x1024": (pv.SDXL, (1, 4, 128, 128)),
    "animatediff 512x512x16": (pv.ANIMATEDIFF, (1, 4, 16, 64, 64)),
}


def median_ms(fn: Any, rounds: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def preview_costs(rounds: int) -> None:
    print("1. one preview (latents -> RGB -> WebP data URL), median ms")
    cases = dict(REAL_SIZES)
    flux = pv.flux_preview(1024, 1024)
    cases["flux 1024x1024"] = (flux, (1, 4096, 64))
    for name, (fmt, shape) in cases.items():
        latents = torch.randn(shape)

        def one(latents: torch.Tensor = latents, fmt: pv.LatentPreview = fmt) -> None:
            pv.data_url(pv.latents_to_rgb(latents, fmt))

        size = len(pv.data_url(pv.latents_to_rgb(latents, fmt)))
        print(f"   {name:<24} {median_ms(one, rounds):7.2f} ms   ({size} bytes as a data URL)")


class Timer:
    """A step callback that records when each step ended; asks for a preview every step
    when `previews` is on."""

    def __init__(self, previews: bool) -> None:
        self.previews = previews
        self.stamps: list[float] = []
        self.count = 0
        self.asked_at = 0.0
        self.spent: list[float] = []  # from "yes, a preview" to the preview handed over

    def __call__(self, step: int, total: int) -> None:
        self.stamps.append(time.perf_counter())

    def wants_preview(self, step: int, total: int) -> bool:
        self.asked_at = time.perf_counter()
        return self.previews

    def add_preview(self, step: int, url: str) -> None:
        self.spent.append(time.perf_counter() - self.asked_at)
        self.count += 1

    def ms_per_step(self) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return 1000 * statistics.median(gaps)


def tiny_runs(steps: int, size: int) -> None:
    from toonforge.catalog import load_catalog
    from toonforge.catalog.validation import validate_inputs
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.settings import load_settings

    print(f"2. tiny stand-ins, CPU, {size}x{size}, {steps} steps: median ms per step")
    tiny_dir = os.environ.get("TOONFORGE_TEST_TINY_DIR") or os.environ.get("TOONFORGE_TINY_DIR")
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            tiny=True,
            data_dir=Path(data),
            tiny_dir=Path(tiny_dir) if tiny_dir else Path(data) / "tiny",
            device="cpu",
        )
        runtime = EngineRuntime(settings)
        catalog = load_catalog()
        tools = {
            "sd15": ("futurist/CartoonMix v1.0", {}),
            "sdxl": ("retroAIx/Retro-Cartoons", {}),
            "flux": ("WizardWhitebeard/Toon-Renders", {}),
            "animatediff": ("wiro/animate-diff", {"frameNumber": 8}),
        }
        for family, (key, extra) in tools.items():
            manifest = catalog.by_key(key)
            if manifest is None or not manifest.engine_ready:
                print(f"   {family:<12} (tool {key} not runnable here)")
                continue
            body = {"steps": steps, "width": size, "height": size, "seed": 7, **extra}
            if any(i.name == "samples" for i in manifest.inputs):
                body["samples"] = 1
            params = validate_inputs(manifest, body)
            runtime.prepare(manifest, params)
            runtime.generate(manifest, params, lambda s, t: None, lambda: False)  # warm up
            off, on = Timer(False), Timer(True)
            runtime.generate(manifest, params, off, lambda: False)
            runtime.generate(manifest, params, on, lambda: False)
            a, b = off.ms_per_step(), on.ms_per_step()
            inside = 1000 * statistics.median(on.spent) if on.spent else 0.0
            print(
                f"   {family:<12} without {a:8.2f} ms/step   with a preview every step "
                f"{b:8.2f} ms/step   ({on.count} previews, {inside:.2f} ms each, measured "
                "inside the step)"
            )


def database_cost(rounds: int) -> None:
    from toonforge.services import build_services
    from toonforge.settings import load_settings
    from toonforge.tasks.models import Project, Task, TaskPreview
    from toonforge.worker.previews import PreviewSlot

    print("3. the per-step 'are previews wanted' read (SQLite), median ms")
    with tempfile.TemporaryDirectory() as data:
        services = build_services(load_settings(data_dir=Path(data)))
        try:
            with services.sessions() as session:
                project = Project(
                    name="b", api_key="k", api_secret="s", auth_mode="key",
                    webhook_secret="w", created_at=0.0,
                )  # fmt: skip
                session.add(project)
                session.flush()
                task = Task(
                    uuid="u", socket_token="t", project_id=project.id, tool_key="x",
                    model_id="1", status="task_start", parameters={}, cps="0",
                    createtime=0.0,
                )  # fmt: skip
                session.add(task)
                session.flush()
                session.add(TaskPreview(task_id=task.id, step=0, image="", requested_at=0.0))
                session.commit()
                task_id = task.id
            slot = PreviewSlot(3)

            def step(read: bool) -> None:
                with services.sessions() as session:
                    session.get(Task, task_id, populate_existing=True)
                    if read:
                        slot.sync(session, task_id)
                    session.commit()

            base = median_ms(lambda: step(False), rounds)
            with_read = median_ms(lambda: step(True), rounds)
            print(
                f"   progress transaction {base:.3f} ms, with the read {with_read:.3f} ms "
                f"(+{with_read - base:.3f} ms)"
            )
        finally:
            services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    preview_costs(args.rounds)
    database_cost(args.rounds * 10)
    tiny_runs(args.steps, args.size)


if __name__ == "__main__":
    main()
