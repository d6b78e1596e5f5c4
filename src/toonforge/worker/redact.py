"""Server paths out of what clients see (debugoutput, debugerror): an error that names a
missing weight file should say which file, not where this server keeps its folders."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from toonforge.settings import Settings

# Absolute paths under the usual roots that no named folder above covered.
_OTHER_PATH = re.compile(
    r"(?<![\w.<>])/(?:tmp|home|root|usr|opt|var|srv|mnt|data|work|private|Users)(?:/[^\s'\",:;)\]}]+)+"
)


def _named_folders(settings: Settings) -> list[tuple[str, str]]:
    folders = [
        (settings.tiny_models_dir, "<tiny-models>"),
        (settings.resolved_models_dir, "<models>"),
        (settings.data_dir / "private_models", "<private-models>"),
        (settings.data_dir, "<data>"),
        (Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")), "<hf-cache>"),
        (Path(sys.prefix), "<python>"),
        (Path.home(), "~"),
    ]
    named = []
    for folder, label in folders:
        for form in {str(folder), str(folder.resolve())}:
            if len(form) > 1:
                named.append((form.rstrip("/"), label))
    return sorted(named, key=lambda pair: -len(pair[0]))


def redact_paths(text: str, settings: Settings) -> str:
    for folder, label in _named_folders(settings):
        text = text.replace(folder, label)
    return _OTHER_PATH.sub(lambda m: "<path>/" + m.group(0).rsplit("/", 1)[-1], text)
