"""toonforge's own inputs of the image tools, beyond their pages: the output file's format.

`outputFormat` (png, webp or jpeg; PNG by default) and `outputQuality` (1-100, for WebP and
JPEG). They are not on the tool pages, so Tool/Detail's page-shaped input list does not
show them (docs/api.md and the OpenAPI Run bodies do), and they are not filled in when
absent: a request as the pages send it runs and records exactly as before.
"""

from __future__ import annotations

from toonforge.catalog.manifest import InputSpec, Manifest, SelectOption

# Families whose outputs are still images (AnimateDiff makes an MP4).
IMAGE_FAMILIES = frozenset({"sd15", "sdxl", "flux"})
FORMATS = ("png", "webp", "jpeg")
DEFAULT_QUALITY = 90

OUTPUT_INPUTS = (
    InputSpec(
        name="outputFormat",
        label="output-format",
        help="png (default, generation parameters in text chunks), webp or jpeg (parameters "
        "in the EXIF UserComment)",
        type="select",
        default="png",
        options=[SelectOption(value=f, label=f.upper()) for f in FORMATS],
    ),
    InputSpec(
        name="outputQuality",
        label="output-quality",
        help=f"WebP and JPEG quality, 1-100 (default {DEFAULT_QUALITY}); PNG ignores it",
        type="number",
        default=DEFAULT_QUALITY,
        integer=True,
        min=1,
        max=100,
    ),
)


def output_inputs(manifest: Manifest) -> tuple[InputSpec, ...]:
    """The output-format inputs this tool takes (none for video tools)."""
    return OUTPUT_INPUTS if manifest.backend.family in IMAGE_FAMILIES else ()
