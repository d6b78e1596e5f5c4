"""What the service adds on top of diffusers.

The same tiny CartoonMix job (the page's defaults: 4 samples, 20 steps, 512x512) is run
directly through diffusers and through toonforge's API (Run, then wait on the WebSocket for
task_postprocess_end), alternating, and the medians are printed with their ratio.
Target: ratio <= 1.10.

    HF_HUB_OFFLINE=1 python bench/overhead.py [--rounds 5] [--steps 20] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from websockets.sync.client import connect

from support import Client, Server, create_keys

PROMPT = (
    "(masterpiece, top quality, best quality, official art, beautiful and aesthetic:1.2), 1girl,"
    " beautiful, high detailed, purple hair with a hint of pink, pink eyes, dark lighting"
)
NEGATIVE = "bad-hands-5 EasyNegativeV2 ng_deepnegative_v1_75t"


def direct_pipeline(tiny_dir: Path):  # type: ignore[no-untyped-def]
    import torch
    from diffusers import StableDiffusionPipeline

    from toonforge.engine.tiny.sd15 import ensure_tiny_sd15

    paths = ensure_tiny_sd15(tiny_dir)
    pipe = StableDiffusionPipeline.from_single_file(
        str(paths.checkpoint),
        config=str(paths.config_dir),
        local_files_only=True,
        safety_checker=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe, torch


def run_direct(pipe, torch, args: argparse.Namespace) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    generators = [torch.Generator().manual_seed(123456 + i) for i in range(args.samples)]
    images = pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=args.steps,
        guidance_scale=4.0,
        width=args.size,
        height=args.size,
        num_images_per_prompt=args.samples,
        generator=generators,
    ).images
    for i, image in enumerate(images):
        image.save(Path(args.out) / f"direct-{i}.png")
    return time.perf_counter() - start


def run_api(client: Client, server: Server, args: argparse.Namespace) -> float:
    body = {
        "prompt": PROMPT,
        "negativePrompt": NEGATIVE,
        "samples": args.samples,
        "steps": args.steps,
        "scale": "4",
        "seed": "123456",
        "width": args.size,
        "height": args.size,
    }
    ws_url = server.url.replace("http", "ws", 1) + "/v1/socket"
    with connect(ws_url) as ws:
        start = time.perf_counter()
        token = client.run("futurist/CartoonMix%20v1.0", body)["socketaccesstoken"]
        ws.send(json.dumps({"type": "task_info", "tasktoken": token}))
        while True:
            frame = json.loads(ws.recv(timeout=600))
            if frame["type"] in ("task_postprocess_end", "task_cancel"):
                break
        elapsed = time.perf_counter() - start
    assert frame["type"] == "task_postprocess_end" and frame["message"], frame
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="toonforge-bench-"))
    args.out = str(work)
    tiny = work / "tiny"
    import os

    os.environ["TOONFORGE_TEST_TINY_DIR"] = str(tiny)
    os.environ["HF_HUB_OFFLINE"] = "1"
    pipe, torch = direct_pipeline(tiny)
    server = Server(work / "server")
    keys = create_keys(server.env)
    server.start()
    client = Client(server.url, keys)
    try:
        # Warm both paths (model load, first-call allocations) before measuring.
        run_direct(pipe, torch, args)
        run_api(client, server, args)
        direct, api = [], []
        for i in range(args.rounds):
            direct.append(run_direct(pipe, torch, args))
            api.append(run_api(client, server, args))
            print(f"round {i + 1}: direct {direct[-1]:.3f}s  api {api[-1]:.3f}s", flush=True)
    finally:
        server.stop()
    d, a = statistics.median(direct), statistics.median(api)
    print(f"job: {args.samples} x {args.size}x{args.size}, {args.steps} steps, tiny CartoonMix")
    print(f"median direct diffusers: {d:.3f}s")
    print(f"median through the API:  {a:.3f}s")
    print(f"ratio api/direct: {a / d:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
