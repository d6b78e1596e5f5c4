"""A tool manifest with file inputs, for the tests of uploads and the OpenAPI document (no
bundled tool has a file input)."""

from __future__ import annotations

# A tool with a file input, as the hosted docs describe one (type `fileinput`).
PHOTO_TOON = {
    "id": "901",
    "owner": "acme",
    "slug": "Photo-Toon",
    "title": "acme/Photo-Toon",
    "description": "Turns a photo into a cartoon.",
    "cover": "https://example.com/cover.png",
    "categories": ["model", "image-to-image"],
    "tags": ["cartoon"],
    "cps": "0.001",
    "inputs": [
        {
            "name": "inputImage",
            "label": "input-image",
            "help": "input-image-help",
            "type": "fileinput",
            "required": True,
        },
        {
            "name": "styleImage",
            "label": "style-image",
            "help": "style-image-help",
            "type": "fileinput",
        },
        {
            "name": "prompt",
            "label": "prompt",
            "help": "prompt-help",
            "type": "textarea",
            "default": "toon",
        },
    ],
    "backend": {"family": "sd15"},
}
