"""Helpers shared by the engine tests."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def pixels(data: bytes) -> np.ndarray:
    """PNG bytes -> int16 RGB array (signed, so differences do not wrap)."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)
