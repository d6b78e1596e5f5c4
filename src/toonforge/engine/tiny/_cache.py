"""Build-once folders for tiny stand-ins, safe when several processes start together.

A worker and the test session may both ask for the same stand-in at the same moment. Each
builds into its own temporary sibling folder and renames it into place; `rename` of a folder is
atomic on one filesystem, so nobody ever sees a half-written model, and the loser of the race
simply throws its copy away.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

MARKER = ".toonforge-complete"


def build_once(final: Path, build: Callable[[Path], None]) -> Path:
    """Return `final`, calling `build(tmp_dir)` first unless a complete copy already exists."""
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        build(tmp)
        (tmp / MARKER).write_text("ok\n")
        try:
            tmp.rename(final)
        except OSError:
            # Another process finished first (the target is a non-empty folder now), or a
            # stale incomplete folder is in the way: keep a complete one, replace a stale one.
            if (final / MARKER).is_file():
                return final
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write a single file so that readers see either nothing or all of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)
