"""The steps every image family shares, in one place.

Each family's `generate` reads as the same sequence of named steps — parse the request, get
the loaded model, seed, encode the prompts, denoise, decode — and ends with the same tail:
one output file per sample (PNG, WebP or JPEG with its generation parameters) and the run's
info for `debugoutput`. The family-specific steps live in each module; the shared ones here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from toonforge.engine.contract import GeneratedFile, GenerationResult
from toonforge.engine.image_files import image_file


def sample_seeds(seed: int, samples: int) -> tuple[list[int], list[torch.Generator]]:
    """Sample i is made from seed + i with a CPU generator of its own: it can be reproduced
    alone with samples=1 (or inside a batch of other tasks), and CPU noise is the same on
    every device."""
    seeds = [seed + i for i in range(samples)]
    return seeds, [torch.Generator("cpu").manual_seed(s) for s in seeds]


def decode_each(decode: Callable[[torch.Tensor], Any], latents: torch.Tensor) -> list[Any]:
    """Decode sample by sample: the VAE at full resolution is the memory peak, and a batched
    decode would change the bytes of each image with the batch size."""
    return [decode(latents[i : i + 1]) for i in range(latents.shape[0])]


def image_files(
    images: Sequence[Any],
    seeds: Sequence[int],
    text_for: Callable[[int], dict[str, Any]],
    output: tuple[str, int],
) -> list[GeneratedFile]:
    """One file per sample (0.png, 1.png, ...), each with the metadata `text_for(seed)`."""
    return [
        image_file(i, image, text_for(seed), output)
        for i, (image, seed) in enumerate(zip(images, seeds, strict=True))
    ]


def result(files: list[GeneratedFile], info: dict[str, Any], started: float) -> GenerationResult:
    """The run's outcome, with how long it took (from `started`, a time.monotonic())."""
    return GenerationResult(
        files=files, info={**info, "elapsed_seconds": round(time.monotonic() - started, 3)}
    )
