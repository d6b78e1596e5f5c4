"""A folder of files on this host, written atomically so a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from toonforge.storage.base import DEFAULT_CONTENT_TYPE, DirectLink, check_key

CHUNK = 1024 * 1024


def write_atomically(target: Path, fill: Callable[[BinaryIO], object]) -> int:
    """Write through a temporary file beside `target`, renamed into place; the size."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            size = fh.tell()
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size


class LocalStorage:
    """Objects as files under `root`; the API serves them (no direct links)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _resolve(self, key: str) -> Path:
        target = (self.root / check_key(key)).resolve()
        if self.root.resolve() not in target.parents:
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return target

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        return write_atomically(self._resolve(key), lambda fh: fh.write(data))

    def put_file(self, key: str, source: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        return write_atomically(
            self._resolve(key), lambda fh: shutil.copyfileobj(source, fh, CHUNK)
        )

    def download(self, key: str, target: Path) -> bool:
        source = self.local_path(key)
        if source is None:
            return False
        with source.open("rb") as fh:
            write_atomically(target, lambda out: shutil.copyfileobj(fh, out, CHUNK))
        return True

    def exists(self, key: str) -> bool:
        return self._resolve(key).is_file()

    def delete_prefix(self, prefix: str) -> None:
        target = self._resolve(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.is_file():
            target.unlink(missing_ok=True)

    def local_path(self, key: str) -> Path | None:
        target = self._resolve(key)
        return target if target.is_file() else None

    def direct_link(self, key: str) -> DirectLink | None:
        return None
