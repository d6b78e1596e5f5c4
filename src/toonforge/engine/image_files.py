"""An image output in the format the request asked for (`outputFormat`, `outputQuality`;
see catalog/output_format.py).

- png (default): the generation parameters as PNG text chunks (png.py), as before.
- webp, jpeg: the AUTOMATIC1111-style `parameters` text in the EXIF UserComment (as A1111
  writes it for these formats: "UNICODE" then UTF-16), the other per-key chunks are dropped;
  JPEG has no alpha, so the image is stored as RGB.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from toonforge.engine.contract import GeneratedFile, ModelError
from toonforge.engine.png import png_bytes

DEFAULT_QUALITY = 90  # as catalog/output_format.py
# format -> (file extension, content type, Pillow format)
FORMATS = {
    "png": ("png", "image/png", "PNG"),
    "webp": ("webp", "image/webp", "WEBP"),
    "jpeg": ("jpg", "image/jpeg", "JPEG"),
}
EXIF_IFD = 0x8769
USER_COMMENT = 0x9286


def user_comment(text: str) -> bytes:
    return b"UNICODE\x00" + text.encode("utf-16-be")


def read_user_comment(raw: bytes) -> str:
    """The text of an EXIF UserComment written by `user_comment` (for tests and tools)."""
    if raw.startswith(b"UNICODE\x00"):
        body = raw[8:]
        # Readers differ on UTF-16's byte order; ours is big-endian.
        return body.decode("utf-16-be")
    return raw.decode("utf-8", "replace")


def output_format(params: Mapping[str, Any]) -> tuple[str, int]:
    fmt = str(params.get("outputFormat") or "png").lower()
    if fmt not in FORMATS:
        raise ModelError(f"outputFormat: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    quality = params.get("outputQuality", DEFAULT_QUALITY)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ModelError(f"outputQuality: must be an integer from 1 to 100, got {quality!r}")
    return fmt, quality


def image_file(
    index: int, image: Image.Image, text: Mapping[str, Any], output: tuple[str, int]
) -> GeneratedFile:
    """Output `index` (0.png, 0.webp or 0.jpg) with its parameters embedded; `output` is
    `output_format(params)`, read with the request (a bad value fails before sampling)."""
    fmt, quality = output
    ext, content_type, pil_format = FORMATS[fmt]
    if fmt == "png":
        return GeneratedFile(f"{index}.{ext}", png_bytes(image, text), content_type)
    exif = Image.Exif()
    parameters = text.get("parameters")
    if parameters:
        exif.get_ifd(EXIF_IFD)[USER_COMMENT] = user_comment(str(parameters))
    buf = io.BytesIO()
    picture = image.convert("RGB") if fmt == "jpeg" else image
    picture.save(buf, format=pil_format, quality=quality, exif=exif.tobytes())
    return GeneratedFile(f"{index}.{ext}", buf.getvalue(), content_type)
