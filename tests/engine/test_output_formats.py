"""outputFormat / outputQuality on the image families: PNG by default, WebP and JPEG with the
parameters in the EXIF UserComment (SD1.5 on the tiny stand-in; the other image families
write their files through the same engine.image_files)."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from toonforge.engine.contract import ModelError
from toonforge.engine.image_files import EXIF_IFD, USER_COMMENT, read_user_comment

Run = Callable[..., Any]


def test_png_stays_the_default(run: Run) -> None:
    [f] = run().files
    assert (f.name, f.content_type) == ("0.png", "image/png")
    image = Image.open(io.BytesIO(f.data))
    assert image.format == "PNG" and "parameters" in image.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fmt", "name", "content_type", "pil"),
    [("webp", "0.webp", "image/webp", "WEBP"), ("jpeg", "0.jpg", "image/jpeg", "JPEG")],
)
def test_webp_and_jpeg_are_written_with_the_parameters(
    run: Run, fmt: str, name: str, content_type: str, pil: str
) -> None:
    [f] = run(outputFormat=fmt, outputQuality=80, prompt="a cat, ☂ umbrella").files
    assert (f.name, f.content_type) == (name, content_type)
    image = Image.open(io.BytesIO(f.data))
    image.load()
    assert image.format == pil and image.size == (64, 64)
    comment = read_user_comment(image.getexif().get_ifd(EXIF_IFD)[USER_COMMENT])
    assert comment.startswith("a cat, ☂ umbrella\n") and "Seed: 123456" in comment


def test_quality_changes_the_file(run: Run) -> None:
    low = run(outputFormat="jpeg", outputQuality=5).files[0].data
    high = run(outputFormat="jpeg", outputQuality=100).files[0].data
    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("field", "value"), [("outputFormat", "gif"), ("outputQuality", 0), ("outputQuality", "9")]
)
def test_a_bad_output_input_names_itself(run: Run, field: str, value: Any) -> None:
    with pytest.raises(ModelError, match=field):
        run(**{field: value})
