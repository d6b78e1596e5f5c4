"""What every storage of toonforge's files offers (outputs, File/Upload uploads, private
models), whether a folder on this host or an S3-compatible bucket."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def check_key(key: str) -> str:
    """A key is relative parts separated by "/", none empty, "." or ".."."""
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in key.split("/")):
        raise ValueError(f"bad storage key: {key!r}")
    return key


@dataclass(frozen=True)
class DirectLink:
    """A URL where a client fetches an object without the API; `expires` is its end in unix
    seconds, 0 when it does not expire (a public base URL)."""

    url: str
    expires: int


class Storage(Protocol):
    """Objects under keys such as `<task uuid>/<name>`; a reader never sees half an object."""

    def put(self, key: str, data: bytes, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        """Store `data` under `key` (replacing it); the size."""
        ...

    def put_file(self, key: str, source: BinaryIO, content_type: str = DEFAULT_CONTENT_TYPE) -> int:
        """Store a file object's content, read in chunks (uploads may be large); the size."""
        ...

    def download(self, key: str, target: Path) -> bool:
        """Copy the object to `target` (written atomically); False if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete the object `prefix` and every object under `prefix/`."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The object as a file on this host, if this storage is a local folder and it
        exists; None otherwise."""
        ...

    def direct_link(self, key: str) -> DirectLink | None:
        """Where clients fetch the object directly; None when the API serves it."""
        ...
