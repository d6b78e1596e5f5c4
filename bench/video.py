"""Seconds per frame of wiro/animate-diff on the tiny stand-ins, at the page's defaults.

The page's defaults: base "60" (the default base 485), ZoomIn, 18 frames, 16 steps, 512x512.
The engine runs in this process (no server), on the tiny weights toonforge builds; the
figure is the generation (denoising, VAE decode, H.264 encode) divided by the frame count,
after a warm-up load. It measures the pipeline's overhead-free speed on this machine's CPU,
not what the real model would do.

    HF_HUB_OFFLINE=1 python bench/video.py [--frames 18] [--steps 16] [--size 512] [--rounds 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=18)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tiny-dir", type=Path, default=None, help="reuse built stand-ins")
    args = parser.parse_args()

    import torch

    from toonforge.catalog import load_catalog
    from toonforge.catalog.validation import validate_inputs
    from toonforge.engine.runtime import EngineRuntime
    from toonforge.settings import load_settings

    manifest = load_catalog().by_key("wiro/animate-diff")
    assert manifest is not None
    work = Path(tempfile.mkdtemp(prefix="toonforge-bench-video-"))
    settings = load_settings(
        tiny=True, data_dir=work, tiny_dir=args.tiny_dir or work / "tiny", device="cpu"
    )
    runtime = EngineRuntime(settings)
    params = validate_inputs(
        manifest,
        {
            "frameNumber": args.frames,
            "steps": args.steps,
            "width": args.size,
            "height": args.size,
        },
    )
    started = time.monotonic()
    runtime.prepare(manifest, params)
    print(f"load (build + first load): {time.monotonic() - started:.1f} s")
    per_frame = []
    for _ in range(args.rounds):
        t = time.monotonic()
        result = runtime.generate(manifest, params, lambda s, n: None, lambda: False)
        seconds = time.monotonic() - t
        per_frame.append(seconds / args.frames)
        size = len(result.files[0].data)
        print(f"clip: {seconds:.1f} s for {args.frames} frames ({size} bytes of mp4)")
    print(
        f"tiny AnimateDiff, {args.frames} frames, {args.steps} steps, {args.size}x{args.size}, "
        f"{torch.get_num_threads()} CPU threads: {statistics.median(per_frame):.2f} s per frame"
    )


if __name__ == "__main__":
    main()
