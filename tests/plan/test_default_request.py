"""The planner's idea of each tool's default request follows the manifests and the engines."""

from __future__ import annotations

from toonforge.catalog import load_catalog
from toonforge.engine import animatediff, flux
from toonforge.engine.plan import request


def _tool(key: str):
    return next(m for m in load_catalog([]) if m.key == key)


def test_engine_constants_are_the_planners() -> None:
    assert request.ANIMATEDIFF_DECODE_CHUNK == animatediff.DECODE_CHUNK
    assert request.ANIMATEDIFF_GUIDANCE == animatediff.GUIDANCE_SCALE
    assert request.FLUX_TEXT_TOKENS == flux.MAX_SEQUENCE_LENGTH


def test_default_requests_from_the_manifests() -> None:
    r = request.default_request(_tool("wiro/animate-diff"))
    assert (r.width, r.height, r.frames, r.denoiser_batch, r.decode_batch) == (512, 512, 18, 36, 8)
    r = request.default_request(_tool("futurist/CartoonMix v1.0"))
    assert (r.width, r.samples, r.denoiser_batch, r.decode_batch) == (512, 4, 8, 1)
    r = request.default_request(_tool("retroAIx/Retro-Cartoons"))
    assert (r.width, r.samples, r.denoiser_batch, r.refiner) == (1024, 4, 8, True)
    r = request.default_request(_tool("WizardWhitebeard/Toon-Renders"))
    assert (r.width, r.height, r.samples, r.denoiser_batch) == (1024, 1024, 1, 1)
