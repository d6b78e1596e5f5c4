"""A folder of output files, written atomically so a reader never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol


class Storage(Protocol):
    def put(self, key: str, data: bytes) -> int:
        return self._write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, source: BinaryIO) -> int:
        """Copy a file object in, in chunks (uploads may be large)."""
        return self._write(key, lambda fh: shutil.copyfileobj(source, fh, 1024 * 1024))

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> int:
        """Write through a temporary file beside the target, renamed into place; the size."""
        target = self._resolve(key)
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

    def path(self, key: str) -> Path | None: ...
    def delete_prefix(self, prefix: str) -> None: ...


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _resolve(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if self.root.resolve() not in target.parents:
            raise ValueError(f"storage key escapes the storage folder: {key!r}")
        return target

    def put(self, key: str, data: bytes) -> int:
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return len(data)

    def put_file(self, key: str, source: BinaryIO) -> int:
        """Copy a file object in, in chunks (uploads may be large)."""
        target = self._resolve(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                shutil.copyfileobj(source, fh, 1024 * 1024)
                size = fh.tell()
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return size

    def path(self, key: str) -> Path | None:
        target = self._resolve(key)
        return target if target.is_file() else None

    def delete_prefix(self, prefix: str) -> None:
        target = self._resolve(prefix)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.is_file():
            target.unlink(missing_ok=True)
