"""Latent-to-RGB previews per family: sizes, channel checks, FLUX's unpacking, and the
step-callback handshake the samplers use."""

from __future__ import annotations

import base64
import io

import pytest
import torch
from PIL import Image

from toonforge.engine import preview as pv


@pytest.mark.parametrize(
    ("fmt", "shape", "size"),
    [
        (pv.SD15, (1, 4, 64, 96), (96, 64)),
        (pv.SD15, (2, 4, 8, 16), (16, 8)),
        (pv.SDXL, (1, 4, 128, 128), (128, 128)),
        (pv.SDXL, (1, 4, 256, 128), (64, 128)),  # never over 128 px a side, aspect kept
        (pv.ANIMATEDIFF, (1, 4, 16, 32, 48), (48, 32)),  # (batch, ch, frames, h, w)
    ],
)
def test_latents_give_an_image_of_the_latent_size(
    fmt: pv.LatentPreview, shape: tuple[int, ...], size: tuple[int, int]
) -> None:
    image = pv.latents_to_rgb(torch.randn(shape), fmt)
    assert image.mode == "RGB" and image.size == size


def test_flux_latents_are_unpacked_as_the_pipeline_does() -> None:
    from diffusers import FluxPipeline

    height, width = 512, 768
    latents = torch.randn(1, 16, height // 8, width // 8)
    packed = FluxPipeline._pack_latents(latents, 1, 16, height // 8, width // 8)
    fmt = pv.flux_preview(height, width)
    assert fmt.unpack is not None
    assert torch.equal(fmt.unpack(packed), latents)
    assert pv.latents_to_rgb(packed, fmt).size == (96, 64)
    # 1024 x 1024: 128 x 128 latents, the largest preview.
    big = FluxPipeline._pack_latents(torch.randn(1, 16, 128, 128), 1, 16, 128, 128)
    assert pv.latents_to_rgb(big, pv.flux_preview(1024, 1024)).size == (128, 128)


def test_colours_follow_the_factors() -> None:
    # One latent channel at +1, the others 0: the pixel is (factors[0] + 1) / 2.
    latents = torch.zeros(1, 4, 2, 2)
    latents[0, 3] = 1.0  # SD1.5's last channel weighs most on blue, negatively
    r, g, b = pv.latents_to_rgb(latents, pv.SD15).getpixel((0, 0))
    expected = [round((f + 1) / 2 * 255) for f in pv.SD15_FACTORS[3]]
    assert [r, g, b] == expected and b < r


def test_the_wrong_channel_count_is_refused() -> None:
    with pytest.raises(ValueError, match="16 channels"):
        pv.latents_to_rgb(torch.randn(1, 16, 8, 8), pv.SD15)


class Sink:
    def __init__(self, wanted: set[int]) -> None:
        self.wanted = wanted
        self.got: dict[int, str] = {}

    def __call__(self, step: int, total: int) -> None:
        pass

    def wants_preview(self, step: int, total: int) -> bool:
        return step in self.wanted

    def add_preview(self, step: int, url: str) -> None:
        self.got[step] = url


def test_offer_makes_a_preview_only_when_asked() -> None:
    sink = Sink({2})
    asked: list[int] = []

    def latents() -> torch.Tensor:
        asked.append(1)
        return torch.randn(1, 4, 8, 12)

    for step in (1, 2, 3):
        pv.offer_preview(sink, step, 3, latents, pv.SD15)
    assert list(sink.got) == [2] and asked == [1]  # the latents were read once
    head, _, data = sink.got[2].partition(",")
    assert head == "data:image/webp;base64"
    assert Image.open(io.BytesIO(base64.b64decode(data))).size == (12, 8)
    # A plain function gets nothing, and nothing is computed for it.
    pv.offer_preview(lambda s, t: None, 2, 3, latents, pv.SD15)
    assert asked == [1]


@pytest.mark.parametrize(
    ("key", "body", "size"),
    [
        ("futurist/CartoonMix v1.0", {"width": 96, "height": 64}, (12, 8)),
        ("retroAIx/Retro-Cartoons", {"width": 64, "height": 96}, (8, 12)),
        ("WizardWhitebeard/Toon-Renders", {"width": 128, "height": 64}, (16, 8)),
        ("wiro/animate-diff", {"width": 64, "height": 64, "frameNumber": 2}, (8, 8)),
    ],
)
def test_each_family_hands_previews_to_a_callback_that_wants_them(
    runtime: object, key: str, body: dict[str, object], size: tuple[int, int]
) -> None:
    """Through the real samplers (tiny stand-ins): the step callback path of every family
    offers previews of the request's aspect."""
    from toonforge.catalog import load_catalog
    from toonforge.catalog.validation import validate_inputs

    manifest = load_catalog().by_key(key)
    assert manifest is not None
    request = {"steps": 3, "seed": 5, "prompt": "a lighthouse", **body}
    if any(i.name == "samples" for i in manifest.inputs):
        request["samples"] = 1
    params = validate_inputs(manifest, request)
    sink = Sink({1, 2, 3})
    runtime.generate(manifest, params, sink, lambda: False)  # type: ignore[attr-defined]
    assert sink.got, key
    for url in sink.got.values():
        data = base64.b64decode(url.partition(",")[2])
        assert Image.open(io.BytesIO(data)).size == size
